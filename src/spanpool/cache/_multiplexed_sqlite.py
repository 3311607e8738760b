"""``SQLiteStore``'s steps for ``MultiplexedPool`` (``MultiplexedStore``): one row per key in
the table ``multiplexed``, each step one ``BEGIN IMMEDIATE`` transaction, the read without one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from ..errors import StoreError
from .store import Holder, MultiplexedClaim, MultiplexedRecord, new_token

# MultiplexedPool's table, made by the first multiplexed step on a file (files made before it
# existed keep working): one row per key, the session and the creation lease.
_MULTIPLEXED_TABLE = """CREATE TABLE IF NOT EXISTS multiplexed (
    key TEXT PRIMARY KEY,
    name TEXT,
    created_at REAL,
    generation INTEGER NOT NULL DEFAULT 0,
    lease_token TEXT,
    lease_host TEXT,
    lease_pid INTEGER,
    lease_until REAL
) WITHOUT ROWID"""
_MULTIPLEXED_ROW = "SELECT name, created_at, generation, lease_token, lease_until FROM multiplexed"


class MultiplexedSQLite:
    """The ``MultiplexedStore`` steps, over the store's transactions and reads."""

    _write: Callable[[], AbstractContextManager[sqlite3.Connection]]
    _read: Callable[[str, Sequence[Any] | Mapping[str, Any]], list[Any]]

    @contextmanager
    def _multiplexed(self, key: str) -> Iterator[tuple[Any, tuple[Any, ...] | None]]:
        """One write transaction on ``key``'s row (None when there is none)."""
        with self._write() as conn:
            conn.execute(_MULTIPLEXED_TABLE)
            yield conn, conn.execute(f"{_MULTIPLEXED_ROW} WHERE key = ?", (key,)).fetchone()

    def multiplexed_get(self, key: str) -> MultiplexedRecord | None:
        try:
            rows = self._read(f"{_MULTIPLEXED_ROW} WHERE key = ?", (key,))
        except StoreError:  # a file without the table yet: make it
            with self._multiplexed(key) as (_, row):
                return _multiplexed_record(row)
        return _multiplexed_record(rows[0] if rows else None)

    def multiplexed_claim(
        self, key: str, *, holder: Holder, now: float, lease: float, replacing: str | None
    ) -> MultiplexedClaim:
        with self._multiplexed(key) as (conn, row):
            record = _multiplexed_record(row)
            leased = row is not None and row[3] is not None and row[4] > now
            due = record is None or (replacing is not None and record.name == replacing)
            if leased or not due:
                return MultiplexedClaim(None, record)
            token = new_token()
            conn.execute(
                "INSERT INTO multiplexed (key, lease_token, lease_host, lease_pid, lease_until)"
                " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (key) DO UPDATE SET"
                " lease_token = ?2, lease_host = ?3, lease_pid = ?4, lease_until = ?5",
                (key, token, holder.host, holder.pid, now + lease),
            )
            return MultiplexedClaim(token, record)

    def multiplexed_publish(
        self, key: str, token: str, *, name: str, created_at: float
    ) -> MultiplexedRecord | None:
        with self._multiplexed(key) as (conn, row):
            if row is None or row[3] != token:
                return None
            generation = int(row[2]) + 1
            conn.execute(
                "UPDATE multiplexed SET name = ?, created_at = ?, generation = ?,"
                " lease_token = NULL, lease_host = NULL, lease_pid = NULL, lease_until = NULL"
                " WHERE key = ?",
                (name, created_at, generation, key),
            )
            return MultiplexedRecord(name, created_at, generation)

    def multiplexed_abandon(self, key: str, token: str) -> None:
        with self._multiplexed(key) as (conn, _):
            conn.execute(
                "UPDATE multiplexed SET lease_token = NULL, lease_host = NULL, lease_pid = NULL,"
                " lease_until = NULL WHERE key = ? AND lease_token = ?",
                (key, token),
            )


def _multiplexed_record(row: tuple[Any, ...] | None) -> MultiplexedRecord | None:
    if row is None or row[0] is None:
        return None
    return MultiplexedRecord(str(row[0]), float(row[1]), int(row[2]))
