"""Which transaction a request runs in, at which timestamp, and running it there.

Read-only work (single-use reads, read-only transactions) reads at a timestamp chosen from the
request's timestamp bound; read-write work runs through the transaction's locks (see
``model.transactions``). Read-write transactions on multiplexed sessions follow Cloud
Spanner's protocol: every response carries a precommit token with a growing sequence number,
and the commit must present the one with the highest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from google.cloud.spanner_v1.types import transaction as transaction_types

from ..errors import failed_precondition, invalid
from ..model import Backend, DatabaseState, SessionState, Transaction
from ..sql import engine
from .results import Context

_Token = transaction_types.MultiplexedSessionPrecommitToken.pb()
_MAX_WAIT_FOR_FUTURE_NS = 10 * 1_000_000_000

Work = Callable[[engine.Connection, engine.Catalog, str], engine.Result]


def _nanos(ts: Any) -> int:
    return int(ts.seconds) * 1_000_000_000 + int(ts.nanos)


def _duration_ns(duration: Any) -> int:
    return int(duration.seconds) * 1_000_000_000 + int(duration.nanos)


class Statements:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    # -- transactions -----------------------------------------------------------------------

    def read_timestamp(self, db: DatabaseState, read_only: Any) -> int:
        """The timestamp a read-only transaction or single-use read with these options reads
        at. Strong reads (and the bounds that allow them) read at a timestamp that every
        earlier commit has reached."""
        bound = read_only.WhichOneof("timestamp_bound")
        now = db.settled_timestamp(self.backend.timestamps)
        if bound == "read_timestamp":
            at = _nanos(read_only.read_timestamp)
            if at > now:
                if at - now > _MAX_WAIT_FOR_FUTURE_NS:
                    raise invalid("read_timestamp is too far in the future.")
                time.sleep((at - now) / 1e9)
                now = db.settled_timestamp(self.backend.timestamps)
        elif bound == "exact_staleness":
            at = now - _duration_ns(read_only.exact_staleness)
        else:  # strong, min_read_timestamp, max_staleness: now satisfies each of them
            at = now
        if at < now - db.retention_ns:
            raise failed_precondition(
                f"Read timestamp {at} is older than the database's version retention period "
                f"({db.retention_ns // 1_000_000_000} s); versions that old are gone."
            )
        return at

    def begin(self, session: SessionState, options: Any, mutation_key: Any = None) -> Transaction:
        mode = options.WhichOneof("mode")
        if mode is None:
            raise invalid("TransactionOptions must set read_write, read_only or partitioned_dml")
        if mode == "read_only":
            at = self.read_timestamp(session.database, options.read_only)
            return self.backend.begin(session, read_write=False, read_timestamp=at)
        previous = b""
        if mode == "read_write":
            previous = options.read_write.multiplexed_session_previous_transaction_id
        txn = self.backend.begin(
            session,
            read_write=True,
            partitioned=mode == "partitioned_dml",
            previous_id=previous,
        )
        txn.mutation_key = mutation_key
        return txn

    def select(self, session: SessionState, selector: Any) -> Context:
        """The transaction a request runs in, and whether the request began it."""
        which = selector.WhichOneof("selector")
        if which == "id":
            return Context(self.backend.transaction(session, selector.id), False)
        if which == "begin":
            return Context(self.begin(session, selector.begin), True)
        if which is None:  # a single-use strong read
            at = session.database.settled_timestamp(self.backend.timestamps)
            return Context(None, False, read_at=at)
        single = selector.single_use
        if single.WhichOneof("mode") != "read_only":
            raise invalid(
                "Single-use transactions of this request must be read-only; begin a read-write "
                "or partitioned DML transaction first."
            )
        at = self.read_timestamp(session.database, single.read_only)
        reported = at if single.read_only.return_read_timestamp else None
        return Context(None, False, reported, read_at=at)

    # -- running ----------------------------------------------------------------------------

    def run(
        self,
        session: SessionState,
        context: Context,
        work: Work,
        *,
        dml: bool,
        token: bool = True,
    ) -> engine.Result:
        """Run ``work`` where ``context`` says; a transaction the request began is rolled back
        when its first statement fails, as it never began."""
        txn = context.txn
        db = session.database
        try:
            if txn is None or not txn.read_write:
                if dml:
                    raise invalid(
                        "DML statements can only be performed in a read-write or "
                        "partitioned-dml transaction."
                    )
                at = txn.read_timestamp if txn is not None else context.read_at
                assert at is not None
                catalog = db.catalog
                result = db.read_at(at, lambda conn, mode: work(conn, catalog, mode))
            else:
                catalog = db.catalog
                result = self.backend.run_write(
                    txn, lambda conn: work(conn, catalog, engine.LOCKING)
                )
                if txn.partitioned:
                    self.backend.commit(txn, ())
        except Exception:
            if context.begun and txn is not None:
                self.backend.rollback(txn)
            raise
        if token:
            context.precommit = self.precommit_token(txn)
        return result

    # -- the multiplexed read-write protocol ------------------------------------------------

    @staticmethod
    def precommit_token(txn: Transaction | None) -> Any:
        """The next precommit token of a read-write transaction on a multiplexed session."""
        if txn is None or not txn.read_write or txn.partitioned or not txn.session.multiplexed:
            return None
        txn.precommit_seq += 1
        return _Token(
            precommit_token=_token_bytes(txn, txn.precommit_seq), seq_num=txn.precommit_seq
        )

    @staticmethod
    def check_commit(txn: Transaction, request: Any) -> None:
        """A commit of a multiplexed-session read-write transaction must present the precommit
        token with the highest sequence number handed out; one that only writes mutations must
        have named a mutation key when it began."""
        if not txn.session.multiplexed or not txn.read_write or txn.partitioned:
            return
        if txn.precommit_seq == 0:
            return
        token = request.precommit_token if request.HasField("precommit_token") else None
        if token is None:
            raise failed_precondition(
                "A read-write transaction on a multiplexed session must send the precommit "
                "token with the highest sequence number it received in its Commit request."
            )
        if token.seq_num != txn.precommit_seq or token.precommit_token != _token_bytes(
            txn, token.seq_num
        ):
            raise failed_precondition(
                f"Commit carries precommit token {token.seq_num}, but the transaction's latest "
                f"is {txn.precommit_seq}: commit with the token of the highest sequence number."
            )


def _token_bytes(txn: Transaction, seq: int) -> bytes:
    return txn.id + b"/" + str(seq).encode()
