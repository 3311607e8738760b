"""One database: its SQLite file, the connections to it, its locks and its versions.

Committed data lives in the database's SQLite file (WAL mode). Reads outside read-write
transactions use pooled *reader* connections; they read the latest data, or, when a commit
newer than their read timestamp has landed, the rows as of that timestamp from the history
tables (see ``sql.versions``). Everything that writes uses the one *writer* connection, a
statement at a time (``sql_mutex``): a read-write transaction's statements run there inside
an open SQLite transaction that holds the transaction's own uncommitted writes (so it reads
them), and a commit applies them for good.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ..sql import engine
from .locks import LockManager

if TYPE_CHECKING:
    from .backend import SessionState
    from .transactions import Timestamps, Transaction

T = TypeVar("T")

_RETENTION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DEFAULT_RETENTION_NS = 3600 * 1_000_000_000


class DatabaseState:
    """One database: its SQLite file, schema, connections, locks, versions and sessions."""

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path
        self.writer = engine.connect(str(path))
        self.catalog = engine.load_catalog(self.writer)
        self.sql_mutex = threading.RLock()  # one statement at a time on the writer connection
        self.applied: Transaction | None = None  # whose writes the writer's open txn holds
        self.locks = LockManager()
        # The newest commit timestamp, set before the commit is written, so a reader that
        # sees it no newer than its read timestamp knows that its snapshot holds nothing newer.
        self.last_commit_ts = 0
        self.commits_since_prune = 0
        # Commits that took (or are about to take) a timestamp, and those that finished.
        self._commits_started = 0
        self._commits_finished = 0
        self._commit_finished = threading.Condition()
        self.sessions: dict[str, SessionState] = {}
        self._readers: list[engine.Connection] = []
        self._readers_lock = threading.Lock()

    @property
    def retention_ns(self) -> int:
        """How far back reads may go: the ``version_retention_period`` option (1 hour)."""
        text = self.catalog.objects.options.get("version_retention_period")
        if isinstance(text, str) and text[:-1].isdigit() and text[-1:] in _RETENTION_UNITS:
            return int(text[:-1]) * _RETENTION_UNITS[text[-1]] * 1_000_000_000
        return DEFAULT_RETENTION_NS

    @contextmanager
    def reader(self) -> Iterator[engine.Connection]:
        with self._readers_lock:
            conn = self._readers.pop() if self._readers else None
        if conn is None:
            conn = engine.connect(str(self.path))
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.rollback()
            with self._readers_lock:
                if len(self._readers) < 16:
                    self._readers.append(conn)
                    conn = None
            if conn is not None:
                conn.close()

    def read_at(self, read_ts: int, work: Callable[[engine.Connection, str], T]) -> T:
        """Run ``work(conn, mode)`` on a reader so that it sees the data as of ``read_ts``:
        the tables as they are when no newer commit has landed (``PLAIN``), else their
        versions (``VERSIONED``)."""
        with self.reader() as conn:
            conn.read_ts = read_ts
            if self.last_commit_ts <= read_ts:
                result = work(conn, engine.PLAIN)
                # A commit newer than read_ts that landed before the read set last_commit_ts
                # before it was written: seeing none now means the read saw none.
                if self.last_commit_ts <= read_ts:
                    return result
            return work(conn, engine.VERSIONED)

    def commit_started(self) -> None:
        """Called before a commit takes its timestamp."""
        with self._commit_finished:
            self._commits_started += 1

    def commit_finished(self) -> None:
        with self._commit_finished:
            self._commits_finished += 1
            self._commit_finished.notify_all()

    def settled_timestamp(self, timestamps: Timestamps) -> int:
        """A timestamp of now such that every commit with an earlier timestamp has landed
        (a commit in flight when it is taken is waited for)."""
        now = timestamps.next()
        started = self._commits_started
        if self._commits_finished < started:
            with self._commit_finished:
                while self._commits_finished < started:
                    self._commit_finished.wait(1.0)
        return now

    def reset_writer(self) -> None:
        """Drop the uncommitted writes the writer holds (called with ``sql_mutex`` held)."""
        if self.writer.in_transaction:
            self.writer.rollback()
        self.applied = None

    def close(self) -> None:
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()
        with self.sql_mutex:
            self.writer.close()

    def execute_ddl(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run a schema change on the writer, after dropping uncommitted writes."""
        with self.sql_mutex:
            self.reset_writer()
            return work(self.writer)
