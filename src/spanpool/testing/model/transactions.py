"""Transactions: read-write ones that lock and buffer their writes, read-only ones at a timestamp.

A read-write transaction runs each statement on its database's writer connection, inside an
open SQLite transaction that holds the transaction's earlier writes (replayed there from its
write set when another transaction used the writer in between). While a statement runs, the
rows it reads and the rows it changes are recorded; then it takes shared locks on what it
read and exclusive locks on what it changed (see ``locks``). When an older transaction holds a
conflicting lock, the statement is undone, the transaction waits for the lock and runs the
statement again. The rows the statement changed join the transaction's write set; nothing is
visible to others until the commit, which locks the keys of its mutations, applies the write
set and the mutations at one commit timestamp, and keeps the versions they replaced.
"""

from __future__ import annotations

import itertools
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc

from ..errors import SpannerError, aborted, failed_precondition, invalid
from ..sql import engine
from . import locks
from .locks import LockTimeout

if TYPE_CHECKING:
    from .backend import Rules, SessionState
    from .database import DatabaseState

ACTIVE, COMMITTED, ROLLED_BACK, ABORTED = "active", "committed", "rolled back", "aborted"

RowKey = tuple[str, tuple[object, ...]]  # (lower-case table name, key)
_STATEMENT = "spanpool_statement"
_PRUNE_EVERY = 200  # commits between removals of versions older than the retention period
MAX_MUTATIONS = 80_000  # Cloud Spanner's limit per commit


class Timestamps:
    """Strictly increasing wall-clock timestamps (nanoseconds), for reads and commits."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def next(self) -> int:
        with self._lock:
            self._last = max(self._last + 1000, time.time_ns())
            return self._last


def rfc3339(nanos: int) -> str:
    seconds, rest = divmod(nanos, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rest:09d}Z"


@dataclass(eq=False)
class Transaction:
    id: bytes
    session: SessionState
    read_write: bool
    partitioned: bool
    last_used: float
    read_timestamp: int = 0  # read-only: what it reads at; read-write: when it began
    # Wound-wait age: (begin timestamp, sequence); smaller is older. A retry of an aborted
    # transaction on a multiplexed session inherits its predecessor's.
    priority: tuple[int, int] = (0, 0)
    state: str = ACTIVE
    reason: str = ""
    # The write set: (table, key) -> (table name, the row as written, or None if deleted).
    writes: dict[RowKey, tuple[str, tuple[object, ...] | None]] = field(default_factory=dict)
    # What each written row was before the transaction (None: it did not exist).
    before: dict[RowKey, tuple[str, tuple[object, ...] | None]] = field(default_factory=dict)
    # Multiplexed sessions: the sequence number of the last precommit token handed out.
    precommit_seq: int = 0
    mutation_key: Any = None
    committing: bool = False  # writing its commit: no longer aborted by others

    @property
    def active(self) -> bool:
        return self.state == ACTIVE

    def wound(self, reason: str) -> bool:
        """Abort the transaction unless it is committing; whether it was (its locks are then
        released by the caller)."""
        if self.state == ACTIVE and not self.committing:
            self.state, self.reason = ABORTED, reason
        return self.state == ABORTED


class Transactions:
    """Begin, run statements in, commit and roll back the transactions of one server."""

    def __init__(self, *, rules: Rules, timestamps: Timestamps, prefix: str) -> None:
        self.rules = rules
        self.clock = rules.clock
        self.timestamps = timestamps
        self._prefix = prefix
        self._ids = itertools.count(1)
        self._random = random.Random()

    # -- lifecycle --------------------------------------------------------------------------

    def new(
        self,
        session: SessionState,
        *,
        read_write: bool,
        partitioned: bool,
        read_timestamp: int | None,
        previous: Transaction | None,
    ) -> Transaction:
        """A new transaction on ``session`` (``Backend.begin`` records it there); the retry of
        ``previous`` keeps its priority, so its place in wound-wait."""
        number = next(self._ids)
        begun = self.timestamps.next()
        return Transaction(
            f"{self._prefix}-{number}".encode(),
            session,
            read_write=read_write or partitioned,
            partitioned=partitioned,
            last_used=self.clock(),
            read_timestamp=begun if read_timestamp is None else read_timestamp,
            priority=previous.priority if previous is not None else (begun, number),
        )

    def check_usable(self, txn: Transaction) -> None:
        if txn.active and self._stale(txn):
            self.abort(txn, "Transaction was aborted because it was idle for too long.")
        if txn.state == ABORTED:
            raise aborted(txn.reason, self.retry_delay())
        if txn.state != ACTIVE:
            raise failed_precondition(f"Transaction has already been {txn.state}.")

    def check_stale(self, txn: Transaction) -> None:
        """Abort ``txn`` if it has been idle longer than the transaction idle timeout."""
        if txn.active and self._stale(txn):
            self.abort(txn, "Transaction was aborted because it was idle for too long.")

    def _stale(self, txn: Transaction) -> bool:
        return (
            txn.read_write
            and not txn.partitioned
            and self.clock() - txn.last_used > self.rules.transaction_idle_timeout
        )

    def retry_delay(self) -> float:
        return self.rules.abort_retry_delay * (1.0 + self._random.random())

    def abort(self, txn: Transaction, reason: str) -> None:
        """Abort ``txn`` and free its locks. Its writes, if the writer holds them, are dropped
        by the next user of the writer."""
        if txn.wound(reason) and txn.read_write:
            txn.session.database.locks.release(txn)

    def rollback(self, txn: Transaction) -> None:
        if txn.state == ACTIVE:
            txn.state = ROLLED_BACK
        if not txn.read_write:
            return
        db = txn.session.database
        db.locks.release(txn)
        with db.sql_mutex:
            if db.applied is txn:
                db.reset_writer()

    # -- statements -------------------------------------------------------------------------

    def run(
        self, txn: Transaction, work: Callable[[engine.Connection], engine.Result]
    ) -> engine.Result:
        """Run one statement of a read-write transaction; ``work`` runs it on the writer (in
        ``LOCKING`` mode) and may run more than once."""
        db = txn.session.database
        pending: list[locks.Request] = []
        while True:
            self.check_usable(txn)
            if pending:
                self._lock(txn, db, pending)
            with db.sql_mutex:
                if not txn.active:
                    raise aborted(txn.reason, self.retry_delay())
                self._use_writer(db, txn)
                conn = db.writer
                conn.execute(f"SAVEPOINT {_STATEMENT}")
                conn.rows_read, conn.changes, conn.tracking = [], [], True
                try:
                    result = work(conn)
                except BaseException:
                    conn.execute(f"ROLLBACK TO {_STATEMENT}")
                    conn.execute(f"RELEASE {_STATEMENT}")
                    raise
                finally:
                    rows_read, changes = conn.rows_read or [], conn.changes
                    conn.rows_read, conn.changes, conn.tracking = None, [], False
                writes: dict[RowKey, tuple[str, tuple[object, ...] | None]] = {}
                before: dict[RowKey, tuple[str, tuple[object, ...] | None]] = {}
                requests = _changed_rows(db.catalog, changes, writes, before)
                for table, key in [*rows_read, *result.keys]:
                    requests += locks.row(table, key, locks.SHARED)
                for table in result.scans:
                    requests += locks.table(table, locks.SHARED)
                blockers = db.locks.try_lock(txn, requests) if requests else set()
                if not blockers:
                    conn.execute(f"RELEASE {_STATEMENT}")
                    txn.writes.update(writes)
                    for row_key, old in before.items():
                        txn.before.setdefault(row_key, old)
                    txn.last_used = self.clock()
                    return result
                conn.execute(f"ROLLBACK TO {_STATEMENT}")
                conn.execute(f"RELEASE {_STATEMENT}")
                pending = requests

    def _lock(self, txn: Transaction, db: DatabaseState, requests: list[locks.Request]) -> None:
        try:
            db.locks.lock(txn, requests, self.rules.lock_timeout, self._stale)
        except LockTimeout:
            self.abort(
                txn, "Transaction was aborted because of a conflict with another transaction."
            )
        if not txn.active:
            raise aborted(txn.reason, self.retry_delay())

    def _use_writer(self, db: DatabaseState, txn: Transaction) -> None:
        """Make the writer's open SQLite transaction hold ``txn``'s writes (``sql_mutex`` held)."""
        if db.applied is txn and db.writer.in_transaction:
            return
        db.reset_writer()
        db.writer.execute("BEGIN IMMEDIATE")
        db.applied = txn
        if not txn.writes:
            return
        try:
            engine.write_rows(
                db.writer,
                db.catalog,
                [(name, key, row) for (_, key), (name, row) in txn.writes.items()],
            )
        except (engine.EngineError, sqlite3.Error) as exc:
            db.reset_writer()
            self.abort(txn, f"Transaction was aborted: its writes no longer apply ({exc}).")
            raise aborted(txn.reason, self.retry_delay()) from None

    # -- commit -----------------------------------------------------------------------------

    def commit(self, txn: Transaction, mutations: Sequence[Any]) -> int:
        """Apply the write set and ``mutations``; returns the commit timestamp (nanoseconds)."""
        self.check_usable(txn)
        if not txn.read_write:
            raise failed_precondition("Cannot commit a read-only transaction.")
        db = txn.session.database
        if engine.mutation_count(mutations) > MAX_MUTATIONS:
            raise invalid(
                f"The transaction contains too many mutations: a commit may write at most "
                f"{MAX_MUTATIONS} values (each column of each row, and each delete, counts)."
            )
        try:
            keys, tables = engine.mutation_locks(db.catalog, mutations)
        except engine.EngineError as exc:
            raise SpannerError(exc.code, exc.message) from None
        requests: list[locks.Request] = []
        for table, key in keys:
            requests += locks.row(table, key, locks.EXCLUSIVE)
        for table in tables:
            requests += locks.table(table, locks.EXCLUSIVE)
        if requests:
            self._lock(txn, db, requests)
        with db.sql_mutex:
            if not txn.active:
                self.check_usable(txn)
            txn.committing = True
            db.commit_started()
            try:
                commit_ts = self.timestamps.next()
                if mutations or txn.writes:
                    self._write(db, txn, mutations, commit_ts)
            finally:
                txn.committing = False
                db.commit_finished()
            txn.state = COMMITTED
        db.locks.release(txn)
        return commit_ts

    def _write(
        self, db: DatabaseState, txn: Transaction, mutations: Sequence[Any], commit_ts: int
    ) -> None:
        self._use_writer(db, txn)
        conn = db.writer
        conn.changes, conn.tracking = [], True
        try:
            if mutations:
                engine.apply_mutations(conn, db.catalog, mutations, rfc3339(commit_ts))
        except engine.EngineError as exc:
            db.reset_writer()
            txn.state = ROLLED_BACK
            db.locks.release(txn)
            raise SpannerError(exc.code, exc.message) from None
        finally:
            changes, conn.changes, conn.tracking = conn.changes, [], False
        before = dict(txn.before)
        _changed_rows(db.catalog, changes, {}, before)
        engine.write_history(
            conn, db.catalog, [(name, key, old) for (_, key), (name, old) in before.items()],
            commit_ts,
        )  # fmt: skip
        db.commits_since_prune += 1
        if db.commits_since_prune >= _PRUNE_EVERY:
            db.commits_since_prune = 0
            engine.prune_history(conn, db.catalog, commit_ts - db.retention_ns)
        db.last_commit_ts = commit_ts  # before the data is visible: see DatabaseState
        try:
            conn.commit()
        except sqlite3.IntegrityError as exc:  # a foreign key checked at commit
            db.reset_writer()
            txn.state = ROLLED_BACK
            db.locks.release(txn)
            raise SpannerError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"Foreign key constraint violated at commit: {exc}. The rows this transaction "
                "refers to were changed by another transaction.",
            ) from None
        db.applied = None


def _changed_rows(
    catalog: engine.Catalog,
    changes: list[tuple[str, str, tuple[object, ...]]],
    writes: dict[RowKey, tuple[str, tuple[object, ...] | None]],
    before: dict[RowKey, tuple[str, tuple[object, ...] | None]],
) -> list[locks.Request]:
    """Fold what the triggers reported into a write set and the rows' earlier versions;
    returns the exclusive locks the changes need."""
    requests: list[locks.Request] = []
    for table_name, op, values in changes:
        table = catalog.find_table(table_name)
        if table is None:
            continue
        width = len(table.columns)
        positions = engine.key_positions(table)
        if op == "I":
            new: tuple[object, ...] | None = values[:width]
            old: tuple[object, ...] | None = None
        elif op == "U":
            new, old = values[:width], values[width : 2 * width]
        else:
            new, old = None, values[:width]
        row = new if new is not None else old
        assert row is not None
        key = tuple(row[i] for i in positions)
        row_key = (table.name.lower(), key)
        writes[row_key] = (table.name, new)
        before.setdefault(row_key, (table.name, old))
        requests += locks.row(table.name, key, locks.EXCLUSIVE)
    return requests
