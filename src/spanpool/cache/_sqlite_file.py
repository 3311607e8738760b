"""The SQLite file under ``SQLiteStore``: opening it, its schema, and its transactions.

Each thread uses its own connection, and a forked child opens its own (connections inherited
from the parent are never used nor closed in the child). The file is in WAL mode (readers never
block the writer) with ``synchronous = NORMAL``: a power loss may forget the last steps, which
is harmless because the processes that made them are gone too.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from ..errors import StoreError

# Each pool's epoch, and the reconciliation lease while one is under way (see store.py).
EPOCHS = """CREATE TABLE IF NOT EXISTS epochs (
        key TEXT PRIMARY KEY,
        epoch TEXT NOT NULL,
        lease TEXT,
        lease_until REAL
    ) WITHOUT ROWID"""

SCHEMA_VERSION = 3
UPGRADES = {
    # Version 1 had no count of acquires that found the pool full.
    1: ("ALTER TABLE pools ADD COLUMN wants INTEGER NOT NULL DEFAULT 0",),
    # Version 2 had no epochs: a pool's state that lost them is reconciled once.
    2: (EPOCHS,),
}
APPLICATION_ID = 0x5350504C  # "SPPL" in the file header: this file is a spanpool store

SCHEMA = (
    """CREATE TABLE pools (
        key TEXT PRIMARY KEY,
        window_start REAL,
        high_water INTEGER NOT NULL DEFAULT 0,
        releases INTEGER NOT NULL DEFAULT 0,
        seq INTEGER NOT NULL DEFAULT 0,
        wants INTEGER NOT NULL DEFAULT 0
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
    EPOCHS,
)

# Connections inherited from a parent process: never used nor closed in the child (closing them
# could disturb the parent's locks), only kept referenced so that garbage collection leaves
# them alone.
_INHERITED: list[sqlite3.Connection] = []


class _Local(threading.local):
    conn: sqlite3.Connection | None = None
    pid: int = 0
    file: tuple[int, int] | None = None  # (device, inode) of the path when it was opened


def _identity(path: str) -> tuple[int, int] | None:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


class SQLiteFile:
    """One store file: a connection per thread (and per process), write transactions and
    consistent reads. ``timeout`` is how long a step waits for the file's write lock."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self._timeout = timeout
        self._local = _Local()
        self.closed = False
        self.transactions = 0
        self._counting = threading.Lock()
        self.connection()  # fail now on an unusable path, and create the schema

    def error(self, what: str, exc: BaseException) -> StoreError:
        return StoreError(f"SQLite store {self.path!r}: {what}: {exc}")

    def connection(self) -> sqlite3.Connection:
        local = self._local
        if self.closed:
            self.drop_connection()
            raise StoreError(f"SQLite store {self.path!r} is closed")
        conn = local.conn
        if conn is not None and local.pid == os.getpid():
            if local.file is not None and _identity(self.path) == local.file:
                return conn
            # The file was deleted or replaced under this connection, which would go on
            # working on the old one unseen by anyone else: open what the path names now.
            self.drop_connection()
            conn = None
        if conn is not None:
            _INHERITED.append(conn)
            local.conn = None
        conn = self._open()
        local.conn, local.pid, local.file = conn, os.getpid(), _identity(self.path)
        return conn

    def drop_connection(self) -> None:
        local = self._local
        conn, local.conn = local.conn, None
        if conn is None:
            return
        if local.pid != os.getpid():
            _INHERITED.append(conn)
            return
        with suppress(sqlite3.Error):
            conn.close()

    def close(self) -> None:
        self.closed = True
        self.drop_connection()

    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, timeout=self._timeout, isolation_level=None, check_same_thread=True
            )
        except sqlite3.Error as exc:
            raise self.error("cannot open the database", exc) from exc
        try:
            self._prepare(conn)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise self.error("cannot use the database", exc) from exc
            raise
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {max(0, int(self._timeout * 1000))}")
        version = self._check_header(conn)  # before any change: never touch another file
        self._set_wal(conn)
        conn.execute("PRAGMA synchronous = NORMAL")
        if version == SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = self._check_header(conn)  # another process may have done it meanwhile
            if version == 0:
                for statement in SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            while version < SCHEMA_VERSION:
                for statement in UPGRADES.get(version, ()):
                    conn.execute(statement)
                version = SCHEMA_VERSION if version == 0 else version + 1
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _check_header(self, conn: sqlite3.Connection) -> int:
        """The schema version of the file (0 when it is empty); StoreError when the file is not
        a spanpool store, or is of a later version."""
        # One statement, so one snapshot: another process may be creating the schema.
        application_id, version, objects = conn.execute(
            "SELECT (SELECT application_id FROM pragma_application_id),"
            " (SELECT user_version FROM pragma_user_version),"
            " (SELECT count(*) FROM sqlite_master)"
        ).fetchone()
        if application_id == APPLICATION_ID:
            if 1 <= version <= SCHEMA_VERSION:
                return int(version)
            raise StoreError(
                f"SQLite store {self.path!r} has schema version {version}, but this spanpool "
                f"uses version {SCHEMA_VERSION}: use another file, or the matching spanpool"
            )
        if application_id != 0 or version != 0 or objects:
            raise StoreError(
                f"SQLite store {self.path!r} is a database of another application "
                f"(application_id {application_id}, user_version {version}, {objects} schema "
                "objects), not a spanpool store"
            )
        return 0

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
                f"SQLite store {self.path!r}: cannot use WAL journal mode (got {mode!r}); "
                "the store needs a file on a local file system"
            )

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed when the block ends, rolled back
        when it raises."""
        conn = self.connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._rollback(conn)
            raise self.error("cannot begin a transaction", exc) from exc
        with self._counting:
            self.transactions += 1
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            self._rollback(conn)
            if isinstance(exc, sqlite3.Error):
                raise self.error("transaction failed, nothing was changed", exc) from exc
            raise

    def _rollback(self, conn: sqlite3.Connection) -> None:
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            # The connection is in an unknown state: use a new one next time.
            self.drop_connection()

    def write_one(self, sql: str, params: Mapping[str, Any]) -> int:
        """One statement that writes, as a transaction of its own (SQLite takes the write lock
        when the statement starts, waiting for it as ``BEGIN IMMEDIATE`` does). Returns its
        row count."""
        conn = self.connection()
        try:
            changed = conn.execute(sql, params).rowcount
        except sqlite3.Error as exc:
            self._rollback(conn)
            raise self.error("transaction failed, nothing was changed", exc) from exc
        with self._counting:
            self.transactions += 1
        return changed

    def read(self, sql: str, params: Sequence[Any] | Mapping[str, Any]) -> list[Any]:
        """One statement in its own read transaction (a consistent snapshot)."""
        conn = self.connection()
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self.error("read failed", exc) from exc
