"""LocalSpanner's gRPC services, on the servicer bases that ship with the official client.

- ``spanner``: ``google.spanner.v1.Spanner`` (sessions, transactions, queries, reads, commits);
- ``database_admin``: ``google.spanner.admin.database.v1.DatabaseAdmin`` (databases, schema);
- ``instance_admin``: ``google.spanner.admin.instance.v1.InstanceAdmin`` (configs, instances);
- ``statements``: which transaction a request runs in, at which timestamp, precommit tokens;
- ``results``: ``ResultSet`` and chunked ``PartialResultSet`` messages;
- ``partitions``: the tokens of ``PartitionQuery`` and ``PartitionRead``;
- ``rpc``: what every method goes through (counting, injected faults, errors as statuses).
"""
