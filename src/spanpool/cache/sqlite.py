"""A store in one SQLite file: one pool shared by the processes of one host.

Every step that changes state is one ``BEGIN IMMEDIATE`` transaction, so steps of all processes
using the file are serialised by SQLite's write lock; reads see the last committed step. The
file is in WAL mode (readers never block the writer) with ``synchronous = NORMAL``: a power loss
may forget the last steps, which is harmless because the processes that made them are gone too.

Tables, all keyed by the pool's key:

- ``pools``: the window (``window_start``, ``high_water``), the ``releases`` counter polled by
  ``wait_for_release``, and ``seq``, a counter that orders sessions by the step that made them
  idle or checked out (so that ties in times are broken as ``MemoryStore`` breaks them);
- ``sessions``: one row per session; ``token``, ``host``, ``pid`` and ``since`` are NULL while
  it is idle;
- ``permits``: one row per creation permit, in the order they were granted (``id``).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from ..errors import StoreError
from .store import Acquired, Claim, Holder, SessionRecord, StoreStats, new_token

SCHEMA_VERSION = 1
APPLICATION_ID = 0x5350504C  # "SPPL" in the file header: this file is a spanpool store

_SCHEMA = (
    """CREATE TABLE pools (
        key TEXT PRIMARY KEY,
        window_start REAL,
        high_water INTEGER NOT NULL DEFAULT 0,
        releases INTEGER NOT NULL DEFAULT 0,
        seq INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID""",
    """CREATE TABLE sessions (
        key TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at REAL NOT NULL,
        last_used REAL NOT NULL,
        seq INTEGER NOT NULL,
        token TEXT,
        host TEXT,
        pid INTEGER,
        since REAL,
        PRIMARY KEY (key, name)
    ) WITHOUT ROWID""",
    "CREATE INDEX sessions_idle ON sessions (key, last_used, seq) WHERE token IS NULL",
    "CREATE INDEX sessions_held ON sessions (key, since, name) WHERE token IS NOT NULL",
    """CREATE TABLE permits (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL,
        token TEXT NOT NULL,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        since REAL NOT NULL,
        UNIQUE (key, token)
    )""",
)

_ENSURE_POOL = "INSERT OR IGNORE INTO pools (key) VALUES (?)"
_TOTAL = (
    "SELECT (SELECT count(*) FROM sessions WHERE key = ?1)"
    " + (SELECT count(*) FROM permits WHERE key = ?1)"
)
_IN_USE = "(SELECT count(*) FROM sessions WHERE key = ?1 AND token IS NOT NULL)"
_RAISE_HIGH_WATER = f"UPDATE pools SET high_water = max(high_water, {_IN_USE}) WHERE key = ?1"
_NEXT_SEQ = "(SELECT seq + 1 FROM pools WHERE key = ?1)"
_CHECK_OUT = (
    "UPDATE sessions SET token = ?, host = ?, pid = ?, since = ?, seq = ?"
    " WHERE key = ? AND name = ?"
)
_INSERT_PERMIT = "INSERT INTO permits (key, token, host, pid, since) VALUES (?, ?, ?, ?, ?)"
_INSERT_SESSION = (
    "INSERT OR REPLACE INTO sessions (key, name, created_at, last_used, seq, token, host, pid,"
    f" since) VALUES (?1, ?2, ?3, ?4, {_NEXT_SEQ}, ?5, ?6, ?7, ?8)"
)
# A place was freed: waiters polling ``releases`` in ``wait_for_release`` wake up.
_WAKE = "UPDATE pools SET releases = releases + 1 WHERE key = ?"
_MAX_PARAMS = 500  # tokens per ``IN (...)``, well under SQLite's limit on parameters

# Connections inherited from a parent process: never used nor closed in the child (closing them
# could disturb the parent's locks), only kept referenced so that garbage collection leaves
# them alone.
_INHERITED: list[sqlite3.Connection] = []


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _MAX_PARAMS):
        yield items[start : start + _MAX_PARAMS]


class _Local(threading.local):
    conn: sqlite3.Connection | None = None
    pid: int = 0


class SQLiteStore:
    """Keeps pool state in a SQLite file shared by the processes of one host.

    Safe to share between threads (each thread uses its own connection) and across ``fork``
    (a child opens its own connections). ``timeout`` is how long a step waits for the file's
    write lock before failing with ``StoreError``.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 10.0) -> None:
        self._path = os.fspath(path)
        self._timeout = timeout
        self._local = _Local()
        self._closed = False
        # Incremented only while holding SQLite's write lock, which serialises every writer of
        # the file (threads included), so it needs no lock of its own.
        self._transactions = 0
        self._connection()  # fail now on an unusable path, and create the schema

    @property
    def path(self) -> str:
        return self._path

    @property
    def transactions(self) -> int:
        """Write transactions begun by this store object (in this process)."""
        return self._transactions

    # -- connections and transactions --------------------------------------------------------

    def _error(self, what: str, exc: BaseException) -> StoreError:
        return StoreError(f"SQLite store {self._path!r}: {what}: {exc}")

    def _connection(self) -> sqlite3.Connection:
        local = self._local
        if self._closed:
            self._drop_connection()
            raise StoreError(f"SQLite store {self._path!r} is closed")
        conn = local.conn
        if conn is not None and local.pid == os.getpid():
            return conn
        if conn is not None:
            _INHERITED.append(conn)
            local.conn = None
        conn = self._open()
        local.conn, local.pid = conn, os.getpid()
        return conn

    def _drop_connection(self) -> None:
        local = self._local
        conn, local.conn = local.conn, None
        if conn is None:
            return
        if local.pid != os.getpid():
            _INHERITED.append(conn)
            return
        with suppress(sqlite3.Error):
            conn.close()

    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self._path, timeout=self._timeout, isolation_level=None, check_same_thread=True
            )
        except sqlite3.Error as exc:
            raise self._error("cannot open the database", exc) from exc
        try:
            self._prepare(conn)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise self._error("cannot use the database", exc) from exc
            raise
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {max(0, int(self._timeout * 1000))}")
        ours = self._check_header(conn)  # before any change: never touch another file
        self._set_wal(conn)
        conn.execute("PRAGMA synchronous = NORMAL")
        if ours:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            if not self._check_header(conn):
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _check_header(self, conn: sqlite3.Connection) -> bool:
        """True when the file holds this schema; False when it is empty; else StoreError."""
        # One statement, so one snapshot: another process may be creating the schema.
        application_id, version, objects = conn.execute(
            "SELECT (SELECT application_id FROM pragma_application_id),"
            " (SELECT user_version FROM pragma_user_version),"
            " (SELECT count(*) FROM sqlite_master)"
        ).fetchone()
        if application_id == APPLICATION_ID:
            if version == SCHEMA_VERSION:
                return True
            raise StoreError(
                f"SQLite store {self._path!r} has schema version {version}, but this spanpool "
                f"uses version {SCHEMA_VERSION}: use another file, or the matching spanpool"
            )
        if application_id != 0 or version != 0 or objects:
            raise StoreError(
                f"SQLite store {self._path!r} is a database of another application "
                f"(application_id {application_id}, user_version {version}, {objects} schema "
                "objects), not a spanpool store"
            )
        return False

    def _set_wal(self, conn: sqlite3.Connection) -> None:
        # Switching a new file to WAL needs a moment of exclusive access, which a process
        # opening the file at the same time may hold: retry until the timeout.
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.005)
        if mode.lower() != "wal":
            raise StoreError(
                f"SQLite store {self._path!r}: cannot use WAL journal mode (got {mode!r}); "
                "the store needs a file on a local file system"
            )

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed when the block ends, rolled back
        when it raises."""
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._rollback(conn)
            raise self._error("cannot begin a transaction", exc) from exc
        self._transactions += 1
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            self._rollback(conn)
            if isinstance(exc, sqlite3.Error):
                raise self._error("transaction failed, nothing was changed", exc) from exc
            raise

    def _rollback(self, conn: sqlite3.Connection) -> None:
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            # The connection is in an unknown state: use a new one next time.
            self._drop_connection()

    def _read(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """One statement in its own read transaction (a consistent snapshot)."""
        conn = self._connection()
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._error("read failed", exc) from exc

    # -- the Store protocol ------------------------------------------------------------------

    def acquire(
        self,
        key: str,
        *,
        holder: Holder,
        now: float,
        max_sessions: int,
        reclaim_before: float,
        expired_before: float,
        retire_before: float,
    ) -> Acquired:
        token = new_token()
        with self._write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO pools (key, window_start) VALUES (?, ?)", (key, now)
            )
            conn.execute(
                "UPDATE pools SET window_start = coalesce(window_start, ?), seq = seq + 1"
                " WHERE key = ?",
                (now, key),
            )
            releases, seq = conn.execute(
                "SELECT releases, seq FROM pools WHERE key = ?", (key,)
            ).fetchone()
            dropped = tuple(
                SessionRecord(*row)
                for row in conn.execute(
                    "SELECT name, created_at, last_used FROM sessions WHERE key = ?"
                    " AND token IS NULL AND (last_used < ? OR created_at < ?) ORDER BY seq",
                    (key, expired_before, retire_before),
                )
            )
            if dropped:
                conn.executemany(
                    "DELETE FROM sessions WHERE key = ? AND name = ?",
                    [(key, record.name) for record in dropped],
                )
            conn.execute("DELETE FROM permits WHERE key = ? AND since < ?", (key, reclaim_before))
            row = conn.execute(
                "SELECT name, created_at, last_used FROM sessions WHERE key = ? AND token IS NULL"
                " ORDER BY last_used DESC, seq LIMIT 1",
                (key,),
            ).fetchone()
            reclaimed = False
            if row is None:
                if conn.execute(_TOTAL, (key,)).fetchone()[0] < max_sessions:
                    conn.execute(_INSERT_PERMIT, (key, token, holder.host, holder.pid, now))
                    return Acquired(token=token, dropped=dropped, releases=releases)
                row = conn.execute(
                    "SELECT name, created_at, last_used FROM sessions WHERE key = ?"
                    " AND token IS NOT NULL AND since < ? ORDER BY since, name LIMIT 1",
                    (key, reclaim_before),
                ).fetchone()
                if row is None:
                    return Acquired(dropped=dropped, releases=releases)
                reclaimed = True
            record = SessionRecord(*row)
            conn.execute(_CHECK_OUT, (token, holder.host, holder.pid, now, seq, key, record.name))
            conn.execute(_RAISE_HIGH_WATER, (key,))
        return Acquired(record, token, dropped, reclaimed, releases)

    def created(
        self, key: str, token: str, record: SessionRecord, *, now: float, check_out: bool
    ) -> bool:
        with self._write() as conn:
            permit = conn.execute(
                "SELECT host, pid FROM permits WHERE key = ? AND token = ?", (key, token)
            ).fetchone()
            if permit is None:
                return False
            conn.execute("DELETE FROM permits WHERE key = ? AND token = ?", (key, token))
            values: tuple[Any, ...] = (key, record.name, record.created_at, record.last_used)
            if check_out:
                conn.execute(_INSERT_SESSION, (*values, token, permit[0], permit[1], now))
                conn.execute("UPDATE pools SET seq = seq + 1 WHERE key = ?", (key,))
                conn.execute(_RAISE_HIGH_WATER, (key,))
            else:
                conn.execute(_INSERT_SESSION, (*values, None, None, None, None))
                conn.execute(
                    "UPDATE pools SET seq = seq + 1, releases = releases + 1 WHERE key = ?",
                    (key,),
                )
        return True

    def create_failed(self, key: str, token: str) -> None:
        with self._write() as conn:
            if conn.execute(
                "DELETE FROM permits WHERE key = ? AND token = ?", (key, token)
            ).rowcount:
                conn.execute(_WAKE, (key,))

    def reserve(
        self, key: str, *, holder: Holder, now: float, target: int, max_sessions: int
    ) -> list[str]:
        with self._write() as conn:
            total = int(conn.execute(_TOTAL, (key,)).fetchone()[0])
            tokens = [new_token() for _ in range(max(0, min(target, max_sessions) - total))]
            if tokens:
                conn.execute(_ENSURE_POOL, (key,))
                conn.executemany(
                    _INSERT_PERMIT, [(key, t, holder.host, holder.pid, now) for t in tokens]
                )
        return tokens

    def release(self, key: str, name: str, token: str, *, now: float) -> bool:
        with self._write() as conn:
            changed = conn.execute(
                "UPDATE sessions SET token = NULL, host = NULL, pid = NULL, since = NULL,"
                f" last_used = ?2, seq = {_NEXT_SEQ} WHERE key = ?1 AND name = ?3 AND token = ?4",
                (key, now, name, token),
            ).rowcount
            if changed:
                conn.execute(
                    "UPDATE pools SET seq = seq + 1, releases = releases + 1 WHERE key = ?",
                    (key,),
                )
        return changed > 0

    def keep_alive(self, key: str, name: str, token: str, *, now: float) -> bool:
        with self._write() as conn:
            changed = conn.execute(
                "UPDATE sessions SET since = ? WHERE key = ? AND name = ? AND token = ?",
                (now, key, name, token),
            ).rowcount
        return changed > 0

    def discard(self, key: str, name: str, token: str) -> bool:
        with self._write() as conn:
            changed = conn.execute(
                "DELETE FROM sessions WHERE key = ? AND name = ? AND token = ?", (key, name, token)
            ).rowcount
            if changed:
                conn.execute(_WAKE, (key,))
        return changed > 0

    def take_idle(
        self,
        key: str,
        *,
        limit: int,
        keep: int,
        now: float,
        last_used_before: float | None = None,
        created_before: float | None = None,
        holder: Holder | None = None,
    ) -> list[tuple[SessionRecord, str | None]]:
        sql = "SELECT name, created_at, last_used FROM sessions WHERE key = ? AND token IS NULL"
        params: list[Any] = [key]
        if last_used_before is not None:
            sql += " AND last_used < ?"
            params.append(last_used_before)
        if created_before is not None:
            sql += " AND created_at < ?"
            params.append(created_before)
        sql += " ORDER BY last_used, seq LIMIT ?"
        with self._write() as conn:
            limit = min(limit, int(conn.execute(_TOTAL, (key,)).fetchone()[0]) - keep)
            if limit <= 0:
                return []
            records = [SessionRecord(*row) for row in conn.execute(sql, (*params, limit))]
            if holder is None:
                conn.executemany(
                    "DELETE FROM sessions WHERE key = ? AND name = ?",
                    [(key, record.name) for record in records],
                )
                return [(record, None) for record in records]
            first = int(conn.execute(f"SELECT {_NEXT_SEQ}", (key,)).fetchone()[0])
            conn.execute("UPDATE pools SET seq = seq + ? WHERE key = ?", (len(records), key))
            taken = [(record, new_token()) for record in records]
            conn.executemany(
                _CHECK_OUT,
                [
                    (token, holder.host, holder.pid, now, first + i, key, record.name)
                    for i, (record, token) in enumerate(taken)
                ],
            )
        return [(record, token) for record, token in taken]

    def roll_window(self, key: str, *, now: float, length: float) -> int | None:
        with self._write() as conn:
            row = conn.execute(
                "SELECT window_start, high_water FROM pools WHERE key = ?", (key,)
            ).fetchone()
            started = row is not None and row[0] is not None
            if started and now - row[0] < length:
                return None
            conn.execute(_ENSURE_POOL, (key,))
            conn.execute(
                f"UPDATE pools SET window_start = ?2, high_water = {_IN_USE} WHERE key = ?1",
                (key, now),
            )
        return int(row[1]) if started else None

    def claims(self, key: str) -> list[Claim]:
        rows = self._read(
            "SELECT token, host, pid, since, name FROM ("
            " SELECT 0 AS part, seq AS ord, token, host, pid, since, name FROM sessions"
            "  WHERE key = ?1 AND token IS NOT NULL"
            " UNION ALL"
            " SELECT 1, id, token, host, pid, since, NULL FROM permits WHERE key = ?1"
            ") ORDER BY part, ord",
            (key,),
        )
        return [
            Claim(token, Holder(host, pid), since, name) for token, host, pid, since, name in rows
        ]

    def reclaim(self, key: str, tokens: list[str], *, now: float) -> int:
        wanted = list(dict.fromkeys(tokens))
        with self._write() as conn:
            sessions: list[tuple[int, str]] = []
            dropped_permits = 0
            for chunk in _chunks(wanted):
                marks = ", ".join("?" * len(chunk))
                sessions += conn.execute(
                    f"SELECT seq, name FROM sessions WHERE key = ? AND token IN ({marks})",
                    (key, *chunk),
                ).fetchall()
                dropped_permits += conn.execute(
                    f"DELETE FROM permits WHERE key = ? AND token IN ({marks})", (key, *chunk)
                ).rowcount
            if sessions:
                sessions.sort()
                first = int(conn.execute(f"SELECT {_NEXT_SEQ}", (key,)).fetchone()[0])
                conn.execute("UPDATE pools SET seq = seq + ? WHERE key = ?", (len(sessions), key))
                conn.executemany(
                    "UPDATE sessions SET token = NULL, host = NULL, pid = NULL, since = NULL,"
                    " seq = ? WHERE key = ? AND name = ?",
                    [(first + i, key, name) for i, (_, name) in enumerate(sessions)],
                )
            found = len(sessions) + dropped_permits
            if found:
                conn.execute(_WAKE, (key,))
        return found

    def clear(self, key: str) -> list[SessionRecord]:
        with self._write() as conn:
            records = [
                SessionRecord(*row)
                for row in conn.execute(
                    "SELECT name, created_at, last_used FROM sessions WHERE key = ?"
                    " ORDER BY token IS NOT NULL, seq",
                    (key,),
                )
            ]
            for table in ("sessions", "permits", "pools"):
                conn.execute(f"DELETE FROM {table} WHERE key = ?", (key,))
        return records

    def stats(self, key: str) -> StoreStats:
        ((idle, in_use, creating, high_water, window_start),) = self._read(
            "SELECT (SELECT count(*) FROM sessions WHERE key = ?1 AND token IS NULL),"
            f" {_IN_USE},"
            " (SELECT count(*) FROM permits WHERE key = ?1),"
            " (SELECT high_water FROM pools WHERE key = ?1),"
            " (SELECT window_start FROM pools WHERE key = ?1)",
            (key,),
        )
        return StoreStats(idle, in_use, creating, high_water or 0, window_start)

    def wait_for_release(self, key: str, timeout: float, releases: int) -> bool:
        """Polls the key's release counter: every millisecond at first, then every 10 ms.

        True when the counter moved past ``releases``, or went back below it or vanished (the
        pool was cleared meanwhile: a wake-up that may be spurious); True too when the store is
        closed while waiting."""
        deadline = time.monotonic() + max(0.0, timeout)
        delay = 0.001
        self._connection()  # a closed store raises here, not below
        while True:
            try:
                rows = self._read("SELECT releases FROM pools WHERE key = ?", (key,))
            except StoreError:
                if self._closed:
                    return True
                raise
            if not rows or rows[0][0] != releases:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.01)

    def close(self) -> None:
        """Close this thread's connection; any later use of the store raises ``StoreError``."""
        self._closed = True
        self._drop_connection()

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<SQLiteStore path={self._path!r}{state}>"
