"""LocalSpanner's gRPC services, on the servicer bases that ship with the official client.

- ``spanner``: ``google.spanner.v1.Spanner`` (sessions, transactions, queries, reads, commits);
- ``database_admin``: ``google.spanner.admin.database.v1.DatabaseAdmin`` (databases, schema);
- ``rpc``: what every method goes through (counting, injected faults, errors as statuses).
"""
