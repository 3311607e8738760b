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
- ``permits``: one row per creation permit, in the order they were granted (``id``);
- ``epochs``: the pool's epoch, and the reconciliation lease (``lease``, ``lease_until``)
  while one is under way. A file deleted or replaced under the processes using it is noticed
  at their next step (the path names another file): they open the new one.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..errors import StoreError
from ._sqlite_file import SQLiteFile
from .store import (
    NOBODY,
    Acquired,
    Adoption,
    Checkout,
    Claim,
    Holder,
    MultiplexedClaim,
    MultiplexedRecord,
    SessionRecord,
    StoreStats,
    TakeIdle,
    new_token,
)

_ENSURE_POOL = "INSERT OR IGNORE INTO pools (key) VALUES (?)"
_TOTAL = (
    "SELECT (SELECT count(*) FROM sessions WHERE key = ?1)"
    " + (SELECT count(*) FROM permits WHERE key = ?1)"
)
_IDLE_AND_TOTAL = (
    "SELECT (SELECT count(*) FROM sessions WHERE key = ?1 AND token IS NULL),"
    " (SELECT count(*) FROM sessions WHERE key = ?1)"
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
_EPOCH = "SELECT epoch, lease, lease_until FROM epochs WHERE key = ?"
_MAX_PARAMS = 500  # tokens per ``IN (...)``, well under SQLite's limit on parameters
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


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _MAX_PARAMS):
        yield items[start : start + _MAX_PARAMS]


class SQLiteStore:
    """Keeps pool state in a SQLite file shared by the processes of one host.

    Safe to share between threads (each thread uses its own connection) and across ``fork``
    (a child opens its own connections). ``timeout`` is how long a step waits for the file's
    write lock before failing with ``StoreError``.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 10.0) -> None:
        self._file = SQLiteFile(os.fspath(path), timeout)
        self._write = self._file.write
        self._read = self._file.read

    @property
    def path(self) -> str:
        return self._file.path

    @property
    def identity(self) -> str:
        """This host and the file's full path: what the pools of every process using the file
        agree on, to name their sessions on the Spanner server."""
        return f"sqlite:{socket.gethostname()}:{os.path.realpath(self._file.path)}"

    @property
    def transactions(self) -> int:
        """Write transactions begun by this store object (in this process)."""
        return self._file.transactions

    # -- the Store protocol ------------------------------------------------------------------

    def acquire(self, key: str, checkout: Checkout) -> Acquired:
        holder, now, reclaim_before = checkout.holder, checkout.now, checkout.reclaim_before
        token = new_token()
        with self._write() as conn:
            epoch = conn.execute(_EPOCH, (key,)).fetchone()
            if epoch is None or (epoch[1] is not None and now >= epoch[2]):
                row = conn.execute("SELECT releases FROM pools WHERE key = ?", (key,)).fetchone()
                return Acquired(releases=row[0] if row else 0, reset=True)
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
                    (key, checkout.expired_before, checkout.retire_before),
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
                total = conn.execute(_TOTAL, (key,)).fetchone()[0]
                if epoch[1] is None and total < checkout.max_sessions:
                    conn.execute(_INSERT_PERMIT, (key, token, holder.host, holder.pid, now))
                    spare = checkout.max_sessions - total - 1
                    return Acquired(token=token, dropped=dropped, releases=releases, spare=spare)
                row = conn.execute(
                    "SELECT name, created_at, last_used FROM sessions WHERE key = ?"
                    " AND token IS NOT NULL AND since < ? ORDER BY since, name LIMIT 1",
                    (key, reclaim_before),
                ).fetchone()
                if row is None:
                    conn.execute("UPDATE pools SET wants = wants + 1 WHERE key = ?", (key,))
                    return Acquired(dropped=dropped, releases=releases)
                reclaimed = True
            record = SessionRecord(*row)
            conn.execute(_CHECK_OUT, (token, holder.host, holder.pid, now, seq, key, record.name))
            conn.execute(_RAISE_HIGH_WATER, (key,))
            idle, total = conn.execute(_IDLE_AND_TOTAL, (key,)).fetchone()
        free = 0 if epoch[1] is not None else checkout.max_sessions - total
        return Acquired(record, token, dropped, reclaimed, releases, idle + max(0, free))

    def start_reconcile(
        self, key: str, *, now: float, lease_seconds: float, force: bool
    ) -> str | None:
        lease = new_token()
        with self._write() as conn:
            epoch = conn.execute(_EPOCH, (key,)).fetchone()
            if epoch is None:
                conn.execute(
                    "INSERT INTO epochs (key, epoch, lease, lease_until) VALUES (?, ?, ?, ?)",
                    (key, new_token(), lease, now + lease_seconds),
                )
                return lease
            if (now < epoch[2]) if epoch[1] is not None else not force:
                return None  # another process is reconciling, or nothing calls for it
            conn.execute(
                "UPDATE epochs SET lease = ?, lease_until = ? WHERE key = ?",
                (lease, now + lease_seconds, key),
            )
        return lease

    def adopt(self, key: str, adoption: Adoption) -> list[str] | None:
        refused: list[str] = []
        with self._write() as conn:
            epoch = conn.execute(_EPOCH, (key,)).fetchone()
            if epoch is None or epoch[1] != adoption.lease:
                return None
            conn.execute(_ENSURE_POOL, (key,))
            total = int(conn.execute(_TOTAL, (key,)).fetchone()[0])
            for record in adoption.records:
                known = conn.execute(
                    "SELECT token, host, pid FROM sessions WHERE key = ? AND name = ?",
                    (key, record.name),
                ).fetchone()
                idle = record.last_used < adoption.idle_before
                if known is not None:
                    unclaimed = known[0] is not None and (known[1], known[2]) == (
                        NOBODY.host,
                        NOBODY.pid,
                    )
                    if unclaimed and idle:
                        conn.execute(
                            "UPDATE sessions SET token = NULL, host = NULL, pid = NULL,"
                            f" since = NULL, last_used = ?2, seq = {_NEXT_SEQ}"
                            " WHERE key = ?1 AND name = ?3",
                            (key, record.last_used, record.name),
                        )
                        conn.execute("UPDATE pools SET seq = seq + 1 WHERE key = ?", (key,))
                    continue
                if total >= adoption.max_sessions:
                    refused.append(record.name)
                    continue
                values = (key, record.name, record.created_at, record.last_used)
                if idle:
                    conn.execute(_INSERT_SESSION, (*values, None, None, None, None))
                else:
                    claim = (new_token(), NOBODY.host, NOBODY.pid, record.last_used)
                    conn.execute(_INSERT_SESSION, (*values, *claim))
                conn.execute("UPDATE pools SET seq = seq + 1 WHERE key = ?", (key,))
                total += 1
            conn.execute("UPDATE epochs SET lease = NULL, lease_until = NULL WHERE key = ?", (key,))
            conn.execute(_WAKE, (key,))
        return refused

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
            epoch = conn.execute(_EPOCH, (key,)).fetchone()
            if epoch is None or epoch[1] is not None:
                return []
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

    def take_idle(self, key: str, take: TakeIdle) -> list[tuple[SessionRecord, str | None]]:
        sql = "SELECT name, created_at, last_used FROM sessions WHERE key = ? AND token IS NULL"
        params: list[Any] = [key]
        if take.last_used_before is not None:
            sql += " AND last_used < ?"
            params.append(take.last_used_before)
        if take.created_before is not None:
            sql += " AND created_at < ?"
            params.append(take.created_before)
        sql += " ORDER BY last_used, seq LIMIT ?"
        with self._write() as conn:
            limit = min(take.limit, int(conn.execute(_TOTAL, (key,)).fetchone()[0]) - take.keep)
            if limit <= 0:
                return []
            records = [SessionRecord(*row) for row in conn.execute(sql, (*params, limit))]
            holder = take.holder
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
                    (token, holder.host, holder.pid, take.now, first + i, key, record.name)
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
            for table in ("sessions", "permits", "pools", "epochs"):
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
        self._file.connection()  # a closed store raises here, not below
        while True:
            try:
                rows = self._read("SELECT releases FROM pools WHERE key = ?", (key,))
            except StoreError:
                if self._file.closed:
                    return True
                raise
            if not rows or rows[0][0] != releases:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.01)

    def wait_for_want(self, key: str, timeout: float, wants: int) -> int:
        """Polls the key's want count every 5 ms."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            rows = self._read("SELECT wants FROM pools WHERE key = ?", (key,))
            seen = int(rows[0][0]) if rows else 0
            remaining = deadline - time.monotonic()
            if seen != wants or remaining <= 0:
                return seen
            time.sleep(min(0.005, remaining))

    # -- multiplexed sessions (MultiplexedStore) -------------------------------------------

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

    def close(self) -> None:
        """Close this thread's connection; any later use of the store raises ``StoreError``."""
        self._file.close()

    def __repr__(self) -> str:
        state = " closed" if self._file.closed else ""
        return f"<SQLiteStore path={self.path!r}{state}>"


def _multiplexed_record(row: tuple[Any, ...] | None) -> MultiplexedRecord | None:
    if row is None or row[0] is None:
        return None
    return MultiplexedRecord(str(row[0]), float(row[1]), int(row[2]))
