"""LocalSpanner's model of Cloud Spanner: instances, databases and sessions.

Sessions follow Cloud Spanner's rules: they expire after ``session_idle_timeout`` seconds
unused (on the injectable clock), at most ``max_sessions_per_batch`` are created per call and
``max_sessions_per_database`` exist per database; a regular session carries one read-write
transaction at a time, a multiplexed one any number. Transactions are in ``transactions``,
databases (files, connections, locks, versions) in ``database``.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from ..._labels import label_problem
from ..errors import SpannerError, failed_precondition, invalid, session_not_found
from ..sql import engine
from .database import DatabaseState
from .transactions import ACTIVE, Timestamps, Transaction, Transactions

_DATABASE_NAME = re.compile(r"projects/[^/]+/instances/[^/]+/databases/([A-Za-z][A-Za-z0-9_\-]*)")

_INSTANCE_NAME = re.compile(r"(projects/[^/]+)/instances/([a-z][a-z0-9\-]{0,62}[a-z0-9])")


def validate_labels(labels: Mapping[str, str]) -> None:
    """Check session labels the way Cloud Spanner does; raise INVALID_ARGUMENT otherwise."""
    problem = label_problem(labels)
    if problem is not None:
        raise invalid(problem)


@dataclass(frozen=True)
class Rules:
    """What the sessions and transactions of one LocalSpanner abide by, and how its databases
    come to be: the arguments of ``LocalSpanner`` of the same names."""

    clock: Callable[[], float]
    session_idle_timeout: float
    transaction_idle_timeout: float
    max_sessions_per_database: int
    max_sessions_per_batch: int
    lock_timeout: float
    abort_retry_delay: float
    strict: bool
    ddl: tuple[str, ...]


@dataclass(eq=False)
class InstanceState:
    """An instance: what ``CreateInstance`` was given. Its databases are those named under it."""

    name: str
    config: str
    display_name: str
    node_count: int
    processing_units: int
    labels: dict[str, str]
    edition: int
    create_time: int
    update_time: int


@dataclass(eq=False)
class SessionState:
    name: str
    database: DatabaseState
    labels: dict[str, str]
    creator_role: str
    multiplexed: bool
    create_time: int
    last_used: float
    last_use_time: int
    transactions: dict[bytes, Transaction] = field(default_factory=dict)


class Backend:
    """Databases, sessions and transactions of one LocalSpanner, and the rules they follow."""

    def __init__(self, *, data_dir: Path, rules: Rules) -> None:
        self.data_dir = data_dir
        self.rules = rules
        self.clock = rules.clock
        self.timestamps = Timestamps()
        self._lock = threading.RLock()
        self._databases: dict[str, DatabaseState] = {}
        self._instances: dict[str, InstanceState] = {}
        self._sessions: dict[str, SessionState] = {}
        self._ids = itertools.count(1)
        self._prefix = os.urandom(4).hex()
        self.txns = Transactions(rules=rules, timestamps=self.timestamps, prefix=self._prefix)
        self._random = random.Random()
        self.sessions_created = 0
        # Most sessions alive at once, per database and in all, since start or reset_peaks().
        self._peak_sessions: dict[str, int] = {}
        self._peak_total = 0
        # Sessions' create and last-use times follow ``clock`` from the wall time at start, so a
        # test that moves the clock moves the times ListSessions reports as well.
        self._wall_origin_ns = time.time_ns() - int(rules.clock() * 1e9)

    def _wall_ns(self, now: float) -> int:
        """The wall time, in nanoseconds since the epoch, when ``clock`` reads ``now``."""
        return self._wall_origin_ns + int(now * 1e9)

    # -- instances ------------------------------------------------------------------------

    def create_instance(self, instance: InstanceState) -> InstanceState:
        if _INSTANCE_NAME.fullmatch(instance.name) is None:
            raise invalid(
                f"Invalid instance name: {instance.name!r} (expected "
                "projects/<project>/instances/<id>, the id of 2 to 64 lowercase letters, digits "
                "and hyphens)"
            )
        with self._lock:
            if instance.name in self._instances:
                raise SpannerError(
                    grpc.StatusCode.ALREADY_EXISTS, f"Instance already exists: {instance.name}"
                )
            self._instances[instance.name] = instance
            return instance

    def instance(self, name: str) -> InstanceState:
        """The instance called ``name``. An instance that holds databases, or any instance on a
        server that is not strict, exists without having been created."""
        with self._lock:
            instance = self._instances.get(name)
            if instance is not None:
                return instance
            prefix = name + "/databases/"
            if self.rules.strict and not any(db.startswith(prefix) for db in self._databases):
                raise SpannerError(grpc.StatusCode.NOT_FOUND, f"Instance not found: {name}")
        return self.implicit_instance(name)

    def implicit_instance(self, name: str) -> InstanceState:
        project = name.split("/instances/")[0]
        now = time.time_ns()
        return InstanceState(
            name,
            f"{project}/instanceConfigs/emulator-config",
            name.rsplit("/", 1)[-1],
            1,
            1000,
            {},
            0,
            now,
            now,
        )

    def instances(self, project: str) -> list[InstanceState]:
        """Created instances of ``project`` and those that hold databases, by name."""
        prefix = project + "/instances/"
        with self._lock:
            found = {name: i for name, i in self._instances.items() if name.startswith(prefix)}
            for db in self._databases:
                if db.startswith(prefix):
                    name = db.split("/databases/")[0]
                    if name not in found:
                        found[name] = self.implicit_instance(name)
        return [found[name] for name in sorted(found)]

    def delete_instance(self, name: str) -> None:
        """Delete an instance and every database in it."""
        prefix = name + "/databases/"
        with self._lock:
            known = name in self._instances or any(d.startswith(prefix) for d in self._databases)
            if not known:
                raise SpannerError(grpc.StatusCode.NOT_FOUND, f"Instance not found: {name}")
            self._instances.pop(name, None)
            doomed = [d for d in self._databases if d.startswith(prefix)]
        for db in doomed:
            self.drop_database(db)

    # -- databases ------------------------------------------------------------------------

    def database(self, name: str, *, create: bool | None = None) -> DatabaseState:
        """The database called ``name``; created empty (with the start-up DDL) on first use
        unless the server is strict."""
        with self._lock:
            db = self._databases.get(name)
            if db is not None:
                return db
            if create is None:
                create = not self.rules.strict
            if not create:
                raise SpannerError(grpc.StatusCode.NOT_FOUND, f"Database not found: {name}")
            return self._create_database(name, self.rules.ddl)

    def create_database(
        self, name: str, statements: Sequence[str], proto_descriptors: bytes = b""
    ) -> DatabaseState:
        with self._lock:
            if name in self._databases:
                raise SpannerError(
                    grpc.StatusCode.ALREADY_EXISTS, f"Database already exists: {name}"
                )
            return self._create_database(name, statements, proto_descriptors)

    def _create_database(
        self, name: str, statements: Sequence[str], proto_descriptors: bytes = b""
    ) -> DatabaseState:
        match = _DATABASE_NAME.fullmatch(name)
        if match is None:
            raise invalid(
                f"Invalid database name: {name!r} (expected "
                "projects/<project>/instances/<instance>/databases/<id>)"
            )
        path = self.data_dir / (re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".sqlite")
        db = DatabaseState(name, path)
        if statements:
            try:
                db.catalog = engine.apply_ddl(db.writer, db.catalog, statements, proto_descriptors)
            except engine.EngineError as exc:
                db.close()
                path.unlink(missing_ok=True)
                raise SpannerError(exc.code, exc.message) from exc
        self._databases[name] = db
        return db

    def databases(self) -> list[DatabaseState]:
        with self._lock:
            return list(self._databases.values())

    def drop_database(self, name: str) -> None:
        with self._lock:
            db = self._databases.pop(name, None)
            if db is None:
                raise SpannerError(grpc.StatusCode.NOT_FOUND, f"Database not found: {name}")
            for session in list(db.sessions.values()):
                self._forget_session(session)
        db.close()
        db.path.unlink(missing_ok=True)

    def update_ddl(
        self, db: DatabaseState, statements: Sequence[str], proto_descriptors: bytes = b""
    ) -> None:
        """Apply schema changes. Read-write transactions of the database that have written or
        locked anything are aborted: their writes were made for the schema before."""
        with self._lock:
            busy = [
                txn
                for session in db.sessions.values()
                for txn in session.transactions.values()
                if txn.active and txn.read_write and (txn.writes or db.locks.holds(txn))
            ]
        for txn in busy:
            self.abort(txn, "Transaction was aborted because the schema changed.")
        try:
            db.catalog = db.execute_ddl(
                lambda conn: engine.apply_ddl(conn, db.catalog, statements, proto_descriptors)
            )
        except engine.EngineError as exc:
            raise SpannerError(exc.code, exc.message) from exc

    # -- sessions ---------------------------------------------------------------------------

    def create_sessions(
        self,
        database: str,
        count: int,
        *,
        labels: Mapping[str, str],
        creator_role: str,
        multiplexed: bool,
    ) -> list[SessionState]:
        if count < 1:
            raise invalid("session_count must be at least 1")
        if multiplexed and labels:
            raise invalid("Multiplexed sessions cannot have labels.")
        validate_labels(labels)
        db = self.database(database)
        now = self.clock()
        wall = self._wall_ns(now)
        limit = self.rules.max_sessions_per_database
        with self._lock:
            room = limit - len(db.sessions)
            if room < count:
                self._sweep(db)
                room = limit - len(db.sessions)
            if room <= 0:
                raise SpannerError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"Too many sessions in database {database}: the limit is "
                    f"{limit}. Delete sessions that are no longer used.",
                )
            created = []
            for _ in range(min(count, room)):
                name = f"{database}/sessions/{self._prefix}{next(self._ids):08x}"
                session = SessionState(
                    name, db, dict(labels), creator_role, multiplexed, wall, now, wall
                )
                self._sessions[name] = session
                db.sessions[name] = session
                created.append(session)
            self.sessions_created += len(created)
            if len(db.sessions) > self._peak_sessions.get(db.name, 0):
                self._peak_sessions[db.name] = len(db.sessions)
            self._peak_total = max(self._peak_total, len(self._sessions))
            return created

    def session(self, name: str) -> SessionState:
        """The live session called ``name``, marked as used now; NOT_FOUND if it is gone."""
        now = self.clock()
        with self._lock:
            session = self._sessions.get(name)
            if session is None:
                raise session_not_found(name)
            if (
                not session.multiplexed
                and now - session.last_used > self.rules.session_idle_timeout
            ):
                self._forget_session(session)
                raise session_not_found(name)
            session.last_used = now
            session.last_use_time = self._wall_ns(now)
            return session

    def delete_session(self, name: str) -> None:
        session = self.session(name)
        if session.multiplexed:
            raise invalid(f"Multiplexed sessions cannot be deleted: {name}")
        with self._lock:
            self._forget_session(session)

    def list_sessions(self, database: str) -> list[SessionState]:
        db = self.database(database)
        with self._lock:
            self._sweep(db)
            return list(db.sessions.values())

    def session_count(self, database: str | None = None) -> int:
        with self._lock:
            dbs = list(self._databases.values())
            if database is not None:
                dbs = [db for db in dbs if db.name == database]
            total = 0
            for db in dbs:
                self._sweep(db)
                total += len(db.sessions)
            return total

    def peak_session_count(self, database: str | None = None) -> int:
        """Most sessions alive at once (in one database, or in all) since start or
        ``reset_peaks()``."""
        with self._lock:
            if database is None:
                return self._peak_total
            return self._peak_sessions.get(database, 0)

    def reset_peaks(self) -> None:
        """Start the peaks again from the sessions alive now."""
        with self._lock:
            self._peak_sessions = {db.name: len(db.sessions) for db in self._databases.values()}
            self._peak_total = len(self._sessions)

    def expire_sessions(self, fraction: float = 1.0, database: str | None = None) -> int:
        """Drop a share of the regular sessions, as if the server had dropped them."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("fraction must be within [0, 1]")
        with self._lock:
            candidates = [
                s
                for s in self._sessions.values()
                if not s.multiplexed and (database is None or s.database.name == database)
            ]
            victims = self._random.sample(candidates, round(len(candidates) * fraction))
            for session in victims:
                self._forget_session(session)
            return len(victims)

    def multiplexed_sessions(self, database: str | None = None) -> list[str]:
        """Names of the live multiplexed sessions (of one database, or of all)."""
        with self._lock:
            return [
                s.name
                for s in self._sessions.values()
                if s.multiplexed and (database is None or s.database.name == database)
            ]

    def lose_multiplexed_sessions(self, database: str | None = None) -> list[str]:
        """Lose the multiplexed sessions (of one database, or all), as a server that lost
        them would: every later request naming one answers ``NOT_FOUND``. Returns their
        names."""
        with self._lock:
            victims = [
                s
                for s in self._sessions.values()
                if s.multiplexed and (database is None or s.database.name == database)
            ]
            for session in victims:
                self._forget_session(session)
            return [s.name for s in victims]

    def reset(self) -> None:
        """Forget every session and transaction; keep databases and data."""
        with self._lock:
            for session in list(self._sessions.values()):
                self._forget_session(session)

    def close(self) -> None:
        self.reset()
        with self._lock:
            dbs, self._databases = list(self._databases.values()), {}
        for db in dbs:
            db.close()

    def _sweep(self, db: DatabaseState) -> None:
        limit = self.clock() - self.rules.session_idle_timeout
        for session in list(db.sessions.values()):
            if not session.multiplexed and session.last_used < limit:
                self._forget_session(session)

    def _forget_session(self, session: SessionState) -> None:
        self._sessions.pop(session.name, None)
        session.database.sessions.pop(session.name, None)
        for txn in list(session.transactions.values()):
            if txn.state == ACTIVE:
                self.abort(txn, "Transaction was aborted because its session was deleted.")
        session.transactions.clear()

    # -- transactions -----------------------------------------------------------------------

    def begin(
        self,
        session: SessionState,
        *,
        read_write: bool,
        partitioned: bool = False,
        read_timestamp: int | None = None,
        previous_id: bytes = b"",
    ) -> Transaction:
        with self._lock:
            previous = session.transactions.get(previous_id) if previous_id else None
        txn = self.txns.new(
            session,
            read_write=read_write,
            partitioned=partitioned,
            read_timestamp=read_timestamp,
            previous=previous,
        )
        with self._lock:
            if not session.multiplexed:
                # A regular session carries one transaction at a time: starting a new one
                # ends the previous one, as on Cloud Spanner.
                for old in list(session.transactions.values()):
                    if old.state == ACTIVE and old.read_write:
                        self.abort(old, "Transaction was invalidated by a later transaction.")
                session.transactions.clear()
            elif len(session.transactions) >= 1000:
                # Forget ended and read-only transactions, and abort abandoned ones.
                for old_id, old in list(session.transactions.items())[:200]:
                    if old.state == ACTIVE and old.read_write:
                        self.txns.check_stale(old)
                    if old.state != ACTIVE or not old.read_write:
                        del session.transactions[old_id]
            session.transactions[txn.id] = txn
        return txn

    def transaction(self, session: SessionState, txn_id: bytes) -> Transaction:
        with self._lock:
            txn = session.transactions.get(txn_id)
        if txn is None:
            raise failed_precondition(
                f"Transaction {txn_id!r} not found in session {session.name}: it was never "
                "begun there, or a later transaction replaced it."
            )
        self.txns.check_usable(txn)
        txn.last_used = self.clock()
        return txn

    def check_usable(self, txn: Transaction) -> None:
        self.txns.check_usable(txn)

    def abort(self, txn: Transaction, reason: str) -> None:
        self.txns.abort(txn, reason)

    def retry_delay(self) -> float:
        return self.txns.retry_delay()

    def run_write(
        self, txn: Transaction, work: Callable[[engine.Connection], engine.Result]
    ) -> engine.Result:
        """Run one statement of a read-write transaction (see ``Transactions.run``)."""
        return self.txns.run(txn, work)

    def commit(self, txn: Transaction, mutations: Sequence[Any]) -> int:
        """Apply the transaction's writes and ``mutations``; returns the commit timestamp."""
        return self.txns.commit(txn, mutations)

    def rollback(self, txn: Transaction) -> None:
        self.txns.rollback(txn)
