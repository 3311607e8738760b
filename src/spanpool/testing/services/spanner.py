"""The ``google.spanner.v1.Spanner`` service of LocalSpanner, on the client's generated servicer."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

from google.cloud.spanner_v1.testing import spanner_pb2_grpc
from google.cloud.spanner_v1.types import commit_response, result_set, spanner, transaction
from google.protobuf import empty_pb2
from google.rpc import code_pb2, status_pb2

from ..control import Control
from ..errors import SpannerError, invalid
from ..model import Backend, SessionState, Transaction
from ..sql import engine
from .rpc import rpc, timestamp

_Session = spanner.Session.pb()
_PartialResultSet = result_set.PartialResultSet.pb()
_ResultSet = result_set.ResultSet.pb()
_ResultSetMetadata = result_set.ResultSetMetadata.pb()
_ResultSetStats = result_set.ResultSetStats.pb()
_Transaction = transaction.Transaction.pb()
_CommitResponse = commit_response.CommitResponse.pb()
_ROWS_PER_MESSAGE = 2048


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
        count = min(request.session_count, self.backend.max_sessions_per_batch)
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
        if request.filter:
            sessions = [s for s in sessions if _matches_filter(s, request.filter)]
        start = int(request.page_token or 0)
        size = request.page_size or 1000
        page = sessions[start : start + size]
        response = spanner.ListSessionsResponse.pb()()
        for session in page:
            response.sessions.append(spanner.Session.pb(_session_pb(session)))
        if start + size < len(sessions):
            response.next_page_token = str(start + size)
        return spanner.ListSessionsResponse.wrap(response)

    @rpc("DeleteSession")
    def DeleteSession(self, request: Any, context: Any) -> Any:
        self.backend.delete_session(request.name)
        return empty_pb2.Empty()

    # -- transactions -----------------------------------------------------------------------

    def _begin(self, session: SessionState, options: Any) -> Transaction:
        mode = options.WhichOneof("mode")
        if mode is None:
            raise invalid("TransactionOptions must set read_write, read_only or partitioned_dml")
        return self.backend.begin(
            session,
            read_write=mode == "read_write",
            partitioned=mode == "partitioned_dml",
        )

    def _select(self, session: SessionState, selector: Any) -> tuple[Transaction | None, bool]:
        """The transaction a request runs in, and whether the request began it."""
        which = selector.WhichOneof("selector")
        if which is None:
            return None, False
        if which == "id":
            return self.backend.transaction(session, selector.id), False
        if which == "begin":
            return self._begin(session, selector.begin), True
        if selector.single_use.WhichOneof("mode") != "read_only":
            raise invalid(
                "Single-use transactions of this request must be read-only; begin a read-write "
                "or partitioned DML transaction first."
            )
        return None, False

    def _run(
        self,
        session: SessionState,
        selector: Any,
        work: Callable[[Any, Any], engine.Result],
        *,
        is_dml: bool,
    ) -> tuple[engine.Result, Transaction | None, bool]:
        txn, begun = self._select(session, selector)
        db = session.database
        try:
            if txn is None or not txn.read_write:
                if is_dml:
                    raise invalid(
                        "DML statements can only be performed in a read-write or "
                        "partitioned-dml transaction."
                    )
                with db.reader() as conn:
                    result = work(conn, db.catalog)
            else:
                result = self.backend.run_write(txn, lambda conn: work(conn, db.catalog))
                if txn.partitioned:
                    self.backend.commit(txn, ())
        except Exception:
            if begun and txn is not None:
                # The statement that was to begin the transaction failed, so it never began.
                self.backend.rollback(txn)
            raise
        return result, txn, begun

    @staticmethod
    def _metadata(result: engine.Result, txn: Transaction | None, begun: bool) -> Any:
        metadata = _ResultSetMetadata()
        metadata.row_type.fields.extend(result.fields)
        if begun and txn is not None:
            metadata.transaction.id = txn.id
            if not txn.read_write:
                metadata.transaction.read_timestamp.CopyFrom(timestamp(txn.read_timestamp))
        return metadata

    @staticmethod
    def _stats(result: engine.Result, txn: Transaction | None) -> Any:
        stats = _ResultSetStats()
        if result.row_count is not None:
            if txn is not None and txn.partitioned:
                stats.row_count_lower_bound = result.row_count
            else:
                stats.row_count_exact = result.row_count
        return stats

    def _query(self, request: Any) -> tuple[engine.Result, Transaction | None, bool]:
        session = self.backend.session(request.session)
        kind = engine.statement_kind(request.sql)
        if kind == "ddl":
            raise invalid("DDL statements are not supported by ExecuteSql; use UpdateDatabaseDdl.")
        params = request.params if request.HasField("params") else None
        param_types = dict(request.param_types)
        return self._run(
            session,
            request.transaction,
            lambda conn, catalog: engine.execute_sql(
                conn, catalog, request.sql, params, param_types
            ),
            is_dml=kind == "dml",
        )

    def _read(self, request: Any) -> tuple[engine.Result, Transaction | None, bool]:
        session = self.backend.session(request.session)
        return self._run(
            session,
            request.transaction,
            lambda conn, catalog: engine.read(
                conn,
                catalog,
                request.table,
                request.index,
                list(request.columns),
                request.key_set,
                request.limit,
            ),
            is_dml=False,
        )

    def _result_set(self, outcome: tuple[engine.Result, Transaction | None, bool]) -> Any:
        result, txn, begun = outcome
        response = _ResultSet(metadata=self._metadata(result, txn, begun))
        for row in result.rows:
            response.rows.add().values.extend(row)
        if result.row_count is not None:
            response.stats.CopyFrom(self._stats(result, txn))
        return result_set.ResultSet.wrap(response)

    def _partial_result_sets(
        self, outcome: tuple[engine.Result, Transaction | None, bool]
    ) -> Iterator[Any]:
        result, txn, begun = outcome
        rows = result.rows
        first = 0
        while True:
            chunk = rows[first : first + _ROWS_PER_MESSAGE]
            message = _PartialResultSet()
            if first == 0:
                message.metadata.CopyFrom(self._metadata(result, txn, begun))
            for row in chunk:
                message.values.extend(row)
            first += _ROWS_PER_MESSAGE
            if first >= len(rows):
                if result.row_count is not None:
                    message.stats.CopyFrom(self._stats(result, txn))
                message.last = True
                yield result_set.PartialResultSet.wrap(message)
                return
            yield result_set.PartialResultSet.wrap(message)

    @rpc("ExecuteSql")
    def ExecuteSql(self, request: Any, context: Any) -> Any:
        return self._result_set(self._query(request))

    @rpc("ExecuteStreamingSql", streaming=True)
    def ExecuteStreamingSql(self, request: Any, context: Any) -> Iterator[Any]:
        yield from self._partial_result_sets(self._query(request))

    @rpc("Read")
    def Read(self, request: Any, context: Any) -> Any:
        return self._result_set(self._read(request))

    @rpc("StreamingRead", streaming=True)
    def StreamingRead(self, request: Any, context: Any) -> Iterator[Any]:
        yield from self._partial_result_sets(self._read(request))

    @rpc("ExecuteBatchDml")
    def ExecuteBatchDml(self, request: Any, context: Any) -> Any:
        session = self.backend.session(request.session)
        if not request.statements:
            raise invalid("ExecuteBatchDml needs at least one statement.")
        for statement in request.statements:
            if engine.statement_kind(statement.sql) != "dml":
                raise invalid(f"ExecuteBatchDml accepts only DML statements: {statement.sql!r}")
        txn, begun = self._select(session, request.transaction)
        if txn is None or not txn.read_write or txn.partitioned:
            raise invalid("ExecuteBatchDml needs a read-write transaction.")
        response = spanner.ExecuteBatchDmlResponse.pb()()
        status = status_pb2.Status(code=code_pb2.OK)
        catalog = session.database.catalog
        for index, statement in enumerate(request.statements):
            params = statement.params if statement.HasField("params") else None
            work = functools.partial(
                _run_statement, catalog, statement.sql, params, dict(statement.param_types)
            )
            try:
                result = self.backend.run_write(txn, work)
            except (SpannerError, engine.EngineError) as exc:
                if index == 0:
                    if begun:
                        self.backend.rollback(txn)
                    raise
                status = status_pb2.Status(
                    code=getattr(code_pb2, exc.code.name),
                    message=f"Statement {index}: {exc.message}",
                )
                break
            rs = response.result_sets.add()
            if index == 0:
                rs.metadata.CopyFrom(self._metadata(result, txn, begun))
            rs.stats.CopyFrom(self._stats(result, txn))
        response.status.CopyFrom(status)
        return spanner.ExecuteBatchDmlResponse.wrap(response)

    @rpc("BeginTransaction")
    def BeginTransaction(self, request: Any, context: Any) -> Any:
        session = self.backend.session(request.session)
        txn = self._begin(session, request.options)
        pb = _Transaction(id=txn.id)
        if not txn.read_write:
            pb.read_timestamp.CopyFrom(timestamp(txn.read_timestamp))
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
        commit_ts = self.backend.commit(txn, list(request.mutations))
        response = _CommitResponse()
        response.commit_timestamp.CopyFrom(timestamp(commit_ts))
        if request.return_commit_stats:
            response.commit_stats.mutation_count = len(request.mutations)
        return commit_response.CommitResponse.wrap(response)

    @rpc("Rollback")
    def Rollback(self, request: Any, context: Any) -> Any:
        session = self.backend.session(request.session)
        txn = session.transactions.get(request.transaction_id)
        if txn is not None:
            self.backend.rollback(txn)
        return empty_pb2.Empty()


def _run_statement(
    catalog: Any, sql: str, params: Any, param_types: dict[str, Any], conn: Any
) -> engine.Result:
    return engine.execute_sql(conn, catalog, sql, params, param_types)


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
