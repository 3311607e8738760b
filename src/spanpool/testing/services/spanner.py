"""The ``google.spanner.v1.Spanner`` service of LocalSpanner, on the client's generated servicer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
from google.cloud.spanner_v1.testing import spanner_pb2_grpc
from google.cloud.spanner_v1.types import commit_response, spanner, transaction
from google.protobuf import empty_pb2
from google.rpc import code_pb2, status_pb2

from ..control import Control
from ..errors import SpannerError, invalid
from ..model import Backend, SessionState
from ..sql import engine
from . import results
from .partitions import Partitions
from .results import Context
from .rpc import listed, rpc, timestamp
from .statements import Statements

_Session = spanner.Session.pb()
_Transaction = transaction.Transaction.pb()
_CommitResponse = commit_response.CommitResponse.pb()


def _session_pb(session: SessionState) -> Any:
    pb = _Session(
        name=session.name,
        labels=session.labels,
        create_time=timestamp(session.create_time),
        approximate_last_use_time=timestamp(session.last_use_time),
        creator_role=session.creator_role,
        multiplexed=session.multiplexed,
    )
    return spanner.Session.wrap(pb)


class SpannerService(spanner_pb2_grpc.SpannerServicer):
    def __init__(self, backend: Backend, control: Control) -> None:
        self.backend = backend
        self.control = control
        self.statements = Statements(backend)
        self._partitions = Partitions()

    # -- sessions ---------------------------------------------------------------------------

    @rpc("CreateSession")
    def CreateSession(self, request: Any, context: Any) -> Any:
        template = request.session
        (session,) = self.backend.create_sessions(
            request.database,
            1,
            labels=dict(template.labels),
            creator_role=template.creator_role,
            multiplexed=template.multiplexed,
        )
        return _session_pb(session)

    @rpc("BatchCreateSessions")
    def BatchCreateSessions(self, request: Any, context: Any) -> Any:
        template = request.session_template
        count = min(request.session_count, self.backend.rules.max_sessions_per_batch)
        if request.session_count < 1:
            raise invalid("session_count must be at least 1")
        sessions = self.backend.create_sessions(
            request.database,
            count,
            labels=dict(template.labels),
            creator_role=template.creator_role,
            multiplexed=template.multiplexed,
        )
        response = spanner.BatchCreateSessionsResponse.pb()()
        for session in sessions:
            response.session.append(spanner.Session.pb(_session_pb(session)))
        return spanner.BatchCreateSessionsResponse.wrap(response)

    @rpc("GetSession")
    def GetSession(self, request: Any, context: Any) -> Any:
        return _session_pb(self.backend.session(request.name))

    @rpc("ListSessions")
    def ListSessions(self, request: Any, context: Any) -> Any:
        sessions = self.backend.list_sessions(request.database)
        page, next_page_token = listed(sessions, request, _matches_filter)
        response = spanner.ListSessionsResponse.pb()(
            sessions=[spanner.Session.pb(_session_pb(session)) for session in page],
            next_page_token=next_page_token,
        )
        return spanner.ListSessionsResponse.wrap(response)

    @rpc("DeleteSession")
    def DeleteSession(self, request: Any, context: Any) -> Any:
        self.backend.delete_session(request.name)
        return empty_pb2.Empty()

    # -- queries and reads ------------------------------------------------------------------

    def _query(self, request: Any) -> tuple[engine.Result, Context]:
        session = self.backend.session(request.session)
        kind = engine.statement_kind(request.sql)
        if kind == "ddl":
            raise invalid("DDL statements are not supported by ExecuteSql; use UpdateDatabaseDdl.")
        if request.partition_token:
            self._partitions.check(request.partition_token, request.session, request.sql)
        context = self.statements.select(session, request.transaction)
        params = request.params if request.HasField("params") else None
        param_types = dict(request.param_types)
        sql = request.sql

        def work(conn: engine.Connection, catalog: engine.Catalog, mode: str) -> engine.Result:
            return engine.execute_sql(conn, catalog, sql, params, param_types, mode)

        return self.statements.run(session, context, work, dml=kind == "dml"), context

    def _read(self, request: Any) -> tuple[engine.Result, Context]:
        session = self.backend.session(request.session)
        if request.partition_token:
            self._partitions.check(request.partition_token, request.session, request.table)
        context = self.statements.select(session, request.transaction)
        table, index, columns = request.table, request.index, list(request.columns)
        key_set, limit = request.key_set, request.limit

        def work(conn: engine.Connection, catalog: engine.Catalog, mode: str) -> engine.Result:
            return engine.read(conn, catalog, table, index, columns, key_set, limit, mode)

        return self.statements.run(session, context, work, dml=False), context

    @rpc("ExecuteSql")
    def ExecuteSql(self, request: Any, context: Any) -> Any:
        return results.result_set_of(*self._query(request))

    @rpc("ExecuteStreamingSql", streaming=True)
    def ExecuteStreamingSql(self, request: Any, context: Any) -> Iterator[Any]:
        yield from results.partial_result_sets(*self._query(request))

    @rpc("Read")
    def Read(self, request: Any, context: Any) -> Any:
        return results.result_set_of(*self._read(request))

    @rpc("StreamingRead", streaming=True)
    def StreamingRead(self, request: Any, context: Any) -> Iterator[Any]:
        yield from results.partial_result_sets(*self._read(request))

    @rpc("ExecuteBatchDml")
    def ExecuteBatchDml(self, request: Any, context: Any) -> Any:
        session = self.backend.session(request.session)
        if not request.statements:
            raise invalid("No statements in batch DML request.")
        ctx = self.statements.select(session, request.transaction)
        txn = ctx.txn
        if txn is None or not txn.read_write or txn.partitioned:
            raise invalid("ExecuteBatchDml needs a read-write transaction.")
        response = spanner.ExecuteBatchDmlResponse.pb()()
        status = status_pb2.Status(code=code_pb2.OK)
        for index, statement in enumerate(request.statements):
            params = statement.params if statement.HasField("params") else None
            param_types = dict(statement.param_types)
            sql = statement.sql

            def work(
                conn: engine.Connection,
                catalog: engine.Catalog,
                mode: str,
                sql: str = sql,
                params: Any = params,
                param_types: dict[str, Any] = param_types,
            ) -> engine.Result:
                if engine.statement_kind(sql) != "dml":
                    engine.prepare(catalog, sql, param_types, mode)  # reports syntax errors
                    raise engine.EngineError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"ExecuteBatchDml accepts only DML statements: {sql!r}",
                    )
                return engine.execute_sql(conn, catalog, sql, params, param_types, mode)

            step = results.Context(txn, ctx.begun and index == 0)
            try:
                result = self.statements.run(session, step, work, dml=True, token=False)
            except (SpannerError, engine.EngineError) as exc:
                if exc.code == grpc.StatusCode.ABORTED:
                    raise
                status = status_pb2.Status(
                    code=getattr(code_pb2, exc.code.name),
                    message=f"Statement {index}: {exc.message}",
                )
                break
            rs = response.result_sets.add()
            if index == 0:
                rs.metadata.CopyFrom(results.metadata(result, ctx))
            rs.stats.CopyFrom(results.stats(result, txn))
        token = self.statements.precommit_token(txn)
        if token is not None:
            response.precommit_token.CopyFrom(token)
            if response.result_sets:
                response.result_sets[0].precommit_token.CopyFrom(token)
        response.status.CopyFrom(status)
        return spanner.ExecuteBatchDmlResponse.wrap(response)

    # -- partitions and batch writes --------------------------------------------------------

    def _partition(self, session: SessionState, selector: Any, statement: str) -> Any:
        which = selector.WhichOneof("selector")
        if which == "single_use" or (
            which == "begin" and selector.begin.WhichOneof("mode") != "read_only"
        ):
            raise invalid(
                "Partitioned reads and queries run in read-only transactions: begin one (or "
                "name one by id); single-use and read-write transactions are not supported."
            )
        context = self.statements.select(session, selector)
        txn = context.txn
        if txn is None or txn.read_write:
            raise invalid("Partitioned reads and queries run in read-only transactions.")
        response = spanner.PartitionResponse.pb()()
        response.partitions.add(partition_token=self._partitions.make(session.name, statement))
        if context.begun:
            response.transaction.id = txn.id
            response.transaction.read_timestamp.CopyFrom(timestamp(txn.read_timestamp))
        return spanner.PartitionResponse.wrap(response)

    @rpc("PartitionQuery")
    def PartitionQuery(self, request: Any, context: Any) -> Any:
        session = self.backend.session(request.session)
        if engine.statement_kind(request.sql) != "query":
            raise invalid(
                "Partitioned queries must be queries (SELECT ...), not DML or DDL statements."
            )
        engine.prepare(session.database.catalog, request.sql, dict(request.param_types))
        return self._partition(session, request.transaction, request.sql)

    @rpc("PartitionRead")
    def PartitionRead(self, request: Any, context: Any) -> Any:
        session = self.backend.session(request.session)
        table = session.database.catalog.table(request.table)
        if request.index:
            session.database.catalog.index(table.name, request.index)
        return self._partition(session, request.transaction, request.table)

    @rpc("BatchWrite", streaming=True)
    def BatchWrite(self, request: Any, context: Any) -> Iterator[Any]:
        """Each mutation group commits on its own, in order; one response per group."""
        session = self.backend.session(request.session)
        if not request.mutation_groups:
            raise invalid("BatchWrite needs at least one mutation group.")
        for index, group in enumerate(request.mutation_groups):
            response = spanner.BatchWriteResponse.pb()(indexes=[index])
            txn = self.backend.begin(session, read_write=True)
            try:
                commit_ts = self.backend.commit(txn, list(group.mutations))
            except (SpannerError, engine.EngineError) as exc:
                self.backend.rollback(txn)
                response.status.code = getattr(code_pb2, exc.code.name)
                response.status.message = exc.message
            else:
                response.commit_timestamp.CopyFrom(timestamp(commit_ts))
            yield spanner.BatchWriteResponse.wrap(response)

    # -- transactions -----------------------------------------------------------------------

    @rpc("BeginTransaction")
    def BeginTransaction(self, request: Any, context: Any) -> Any:
        session = self.backend.session(request.session)
        mutation_key = request.mutation_key if request.HasField("mutation_key") else None
        txn = self.statements.begin(session, request.options, mutation_key)
        pb = _Transaction(id=txn.id)
        if not txn.read_write:
            pb.read_timestamp.CopyFrom(timestamp(txn.read_timestamp))
        elif mutation_key is not None:
            token = self.statements.precommit_token(txn)
            if token is not None:
                pb.precommit_token.CopyFrom(token)
        return transaction.Transaction.wrap(pb)

    @rpc("Commit")
    def Commit(self, request: Any, context: Any) -> Any:
        session = self.backend.session(request.session)
        if request.WhichOneof("transaction") == "single_use_transaction":
            if request.single_use_transaction.WhichOneof("mode") != "read_write":
                raise invalid("A single-use transaction of Commit must be read-write.")
            txn = self.backend.begin(session, read_write=True)
        else:
            txn = self.backend.transaction(session, request.transaction_id)
            self.statements.check_commit(txn, request)
        commit_ts = self.backend.commit(txn, list(request.mutations))
        response = _CommitResponse()
        response.commit_timestamp.CopyFrom(timestamp(commit_ts))
        if request.return_commit_stats:
            response.commit_stats.mutation_count = engine.mutation_count(request.mutations)
        return commit_response.CommitResponse.wrap(response)

    @rpc("Rollback")
    def Rollback(self, request: Any, context: Any) -> Any:
        session = self.backend.session(request.session)
        txn = session.transactions.get(request.transaction_id)
        if txn is not None:
            self.backend.rollback(txn)
        return empty_pb2.Empty()


def _matches_filter(session: SessionState, text: str) -> bool:
    """ListSessions filters as Cloud Spanner reads them, ANDed: ``labels.key:*`` or
    ``labels.key`` (the label is set), ``labels.key:value`` (its value contains ``value``,
    ignoring case)."""
    for clause in text.split(" AND "):
        clause = clause.strip()
        if not clause.startswith("labels."):
            raise invalid(f"Unsupported ListSessions filter: {clause!r}")
        key, _, value = clause[len("labels.") :].partition(":")
        value = value.strip('"')
        if key not in session.labels:
            return False
        if value and value != "*" and value.lower() not in session.labels[key].lower():
            return False
    return True
