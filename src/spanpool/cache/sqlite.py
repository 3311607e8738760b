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
import sqlite3
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .. import _validate
from ..errors import StoreError
from . import _sqlite_sql as sql
from ._multiplexed_sqlite import MultiplexedSQLite
from ._sqlite_file import SQLiteFile
from .store import (
    NOBODY,
    Acquired,
    Claim,
    ClosingHooks,
    Holder,
    SessionRecord,
    StoreStats,
    new_token,
)

if TYPE_CHECKING:
    from .store import Adoption, Checkout, TakeIdle

WANT_POLL_FIRST = 0.005
"""How soon ``wait_for_want`` reads the want count again at first (seconds)..."""
WANT_POLL_LAST = 0.05
"""...and at the longest, while it stays the same."""
_MAX_PARAMS = 500  # tokens per ``IN (...)``, well under SQLite's limit on parameters


_NO_CLAIM = {"token": None, "host": None, "pid": None, "since": None}
NOBODY_ROW = (NOBODY.host, NOBODY.pid)


def _session_args(key: str, record: SessionRecord) -> dict[str, Any]:
    return {
        "key": key,
        "name": record.name,
        "created_at": record.created_at,
        "last_used": record.last_used,
    }


def _drop(conn: sqlite3.Connection, args: dict[str, Any]) -> tuple[SessionRecord, ...]:
    """Drop the idle sessions that expired or must retire, in the order they became idle."""
    rows = sorted(conn.execute(sql.DROP_DOOMED, args).fetchall())
    return tuple(SessionRecord(*row[1:]) for row in rows)


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _MAX_PARAMS):
        yield items[start : start + _MAX_PARAMS]


class SQLiteStore(MultiplexedSQLite, ClosingHooks):
    """Keeps pool state in a SQLite file shared by the processes of one host.

    Safe to share between threads (each thread uses its own connection) and across ``fork``
    (a child opens its own connections). ``timeout`` is how long a step waits for the file's
    write lock before failing with ``StoreError``.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 10.0) -> None:
        super().__init__()
        self._file = SQLiteFile(os.fspath(path), _validate.number("timeout", timeout))
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
        holder, token = checkout.holder, new_token()
        args = {
            "key": key,
            "token": token,
            "host": holder.host,
            "pid": holder.pid,
            "now": checkout.now,
            "expired": checkout.expired_before,
            "retire": checkout.retire_before,
            "reclaim": checkout.reclaim_before,
        }
        with self._write() as conn:
            row = conn.execute(sql.CHECK_OUT_IDLE, args).fetchone()
            if row is None:
                return self._acquire_otherwise(conn, checkout, args)
            releases, wants, idle, total, doomed, stale, leased = conn.execute(
                sql.CHECKED_OUT, args
            ).fetchone()
            dropped = _drop(conn, args) if doomed else ()
            if stale:
                total -= conn.execute(sql.DROP_STALE_PERMITS, args).rowcount
        idle -= len(dropped)
        free = 0 if leased else checkout.max_sessions - total + len(dropped)
        spare = idle + max(0, free)
        record = SessionRecord(*row)
        return Acquired(record, token, dropped, False, releases, spare, wants=wants)

    def _acquire_otherwise(
        self, conn: sqlite3.Connection, checkout: Checkout, args: dict[str, Any]
    ) -> Acquired:
        """The rest of ``acquire``, in its transaction: the pool's state is lost or its row
        missing, or it has no idle session to hand out (a permit, a reclaim, or full)."""
        head = conn.execute(sql.ACQUIRE_BEGIN, args).fetchone()
        if head is None:
            return Acquired(releases=conn.execute(sql.RELEASES, args).fetchone()[0], reset=True)
        releases, wants, leased, idle, total, doomed, stale = head
        dropped = _drop(conn, args) if doomed else ()
        if stale:
            total -= conn.execute(sql.DROP_STALE_PERMITS, args).rowcount
        idle, total = idle - len(dropped), total - len(dropped)
        token: str = args["token"]
        reclaimed = False
        if idle:  # the pool had no row yet
            row = conn.execute(sql.MOST_RECENT_IDLE, args).fetchone()
        elif not leased and total < checkout.max_sessions:
            conn.execute(sql.INSERT_PERMIT, args)
            spare = checkout.max_sessions - total - 1
            return Acquired(None, token, dropped, False, releases, spare, wants=wants)
        else:
            row = conn.execute(sql.OLDEST_CLAIM, args).fetchone()
            if row is None:
                wants = conn.execute(sql.WANT, args).fetchone()[0]
                return Acquired(dropped=dropped, releases=releases, wants=wants)
            reclaimed = True
        record = SessionRecord(*row)
        conn.execute(sql.CHECK_OUT, {**args, "name": record.name})
        idle, total = conn.execute(sql.RAISE_HIGH_WATER, args).fetchone()
        free = 0 if leased else checkout.max_sessions - total
        spare = idle + max(0, free)
        return Acquired(record, token, dropped, reclaimed, releases, spare, wants=wants)

    def start_reconcile(
        self, key: str, *, now: float, lease_seconds: float, force: bool
    ) -> str | None:
        lease = new_token()
        args = {"key": key, "epoch": new_token(), "lease": lease, "until": now + lease_seconds}
        with self._write() as conn:
            epoch = conn.execute(sql.EPOCH, args).fetchone()
            if epoch is None:
                conn.execute(sql.NEW_EPOCH, args)
            elif (now < epoch[2]) if epoch[1] is not None else not force:
                return None  # another process is reconciling, or nothing calls for it
            else:
                conn.execute(sql.SET_LEASE, args)
        return lease

    def adopt(self, key: str, adoption: Adoption) -> list[str] | None:
        refused: list[str] = []
        pool = {"key": key}
        with self._write() as conn:
            epoch = conn.execute(sql.EPOCH, pool).fetchone()
            if epoch is None or epoch[1] != adoption.lease:
                return None
            conn.execute(sql.ENSURE_POOL, pool)
            total = conn.execute(sql.COUNT_TOTAL, pool).fetchone()[0]
            for record in adoption.records:
                args: dict[str, Any] = {**_session_args(key, record), **_NO_CLAIM}
                known = conn.execute(sql.CLAIM_OF, args).fetchone()
                idle = record.last_used < adoption.idle_before
                if known is not None:
                    if idle and known[0] is not None and (known[1], known[2]) == NOBODY_ROW:
                        conn.execute(sql.ADOPT_IDLE, args)
                        conn.execute(sql.MOVE_SEQ, pool)
                    continue
                if total >= adoption.max_sessions:
                    refused.append(record.name)
                    continue
                if not idle:
                    claim = (new_token(), NOBODY.host, NOBODY.pid, record.last_used)
                    args["token"], args["host"], args["pid"], args["since"] = claim
                conn.execute(sql.INSERT_SESSION, args)
                conn.execute(sql.MOVE_SEQ, pool)
                total += 1
            conn.execute(sql.END_LEASE, pool)
            conn.execute(sql.WAKE, pool)
        return refused

    def created(
        self, key: str, token: str, record: SessionRecord, *, now: float, check_out: bool
    ) -> bool:
        args = {**_session_args(key, record), "token": token, "since": now}
        with self._write() as conn:
            permit = conn.execute(sql.TAKE_PERMIT, args).fetchone()
            if permit is None:
                return False
            if check_out:
                args["host"], args["pid"] = permit
                conn.execute(sql.INSERT_SESSION, args)
                conn.execute(sql.RECORDED_IN_USE, args)
            else:
                conn.execute(sql.INSERT_SESSION, {**args, **_NO_CLAIM})
                conn.execute(sql.RELEASED, args)
        return True

    def create_failed(self, key: str, token: str) -> None:
        args = {"key": key, "token": token}
        with self._write() as conn:
            if conn.execute(sql.TAKE_PERMIT, args).fetchone() is not None:
                conn.execute(sql.WAKE, args)

    def reserve(
        self, key: str, *, holder: Holder, now: float, target: int, max_sessions: int
    ) -> list[str]:
        args = {"key": key, "host": holder.host, "pid": holder.pid, "now": now}
        with self._write() as conn:
            room = conn.execute(sql.RESERVE_ROOM, args).fetchone()
            if room is None or not room[0]:
                return []  # no epoch, or a reconciliation under way
            tokens = [new_token() for _ in range(max(0, min(target, max_sessions) - room[1]))]
            if tokens:
                conn.execute(sql.ENSURE_POOL, args)
                conn.executemany(sql.INSERT_PERMIT, [{**args, "token": t} for t in tokens])
        return tokens

    def release(self, key: str, name: str, token: str, *, now: float) -> bool:
        args = {"key": key, "name": name, "token": token, "now": now}
        with self._write() as conn:
            changed = conn.execute(sql.RELEASE, args).rowcount
            if changed:
                conn.execute(sql.RELEASED, args)
        return changed > 0

    def keep_alive(self, key: str, name: str, token: str, *, now: float) -> bool:
        args = {"key": key, "name": name, "token": token, "now": now}
        return self._file.write_one(sql.KEEP_ALIVE, args) > 0

    def discard(self, key: str, name: str, token: str) -> bool:
        args = {"key": key, "name": name, "token": token}
        with self._write() as conn:
            changed = conn.execute(sql.DISCARD, args).rowcount
            if changed:
                conn.execute(sql.WAKE, args)
        return changed > 0

    def take_idle(self, key: str, take: TakeIdle) -> list[tuple[SessionRecord, str | None]]:
        query = sql.IDLE_LEAST_RECENT
        args: dict[str, Any] = {"key": key, "now": take.now}
        if take.last_used_before is not None:
            query += " AND last_used < :last_used_before"
            args["last_used_before"] = take.last_used_before
        if take.created_before is not None:
            query += " AND created_at < :created_before"
            args["created_before"] = take.created_before
        query += " ORDER BY last_used, seq LIMIT :limit"
        with self._write() as conn:
            args["limit"] = min(
                take.limit, conn.execute(sql.COUNT_TOTAL, args).fetchone()[0] - take.keep
            )
            if args["limit"] <= 0:
                return []
            records = [SessionRecord(*row) for row in conn.execute(query, args)]
            holder = take.holder
            if holder is None:
                conn.executemany(
                    sql.DELETE_SESSION, [{"key": key, "name": r.name} for r in records]
                )
                return [(record, None) for record in records]
            args["count"], args["host"], args["pid"] = len(records), holder.host, holder.pid
            first = conn.execute(sql.MOVE_SEQ_BY, args).fetchone()[0] - len(records) + 1
            taken = [(record, new_token()) for record in records]
            conn.executemany(
                sql.CHECK_OUT_AT,
                [
                    {**args, "token": token, "name": record.name, "seq": first + i}
                    for i, (record, token) in enumerate(taken)
                ],
            )
        return [(record, token) for record, token in taken]

    def roll_window(self, key: str, *, now: float, length: float) -> int | None:
        args = {"key": key, "now": now}
        with self._write() as conn:
            row = conn.execute(sql.WINDOW, args).fetchone()
            started = row is not None and row[0] is not None
            if started and now - row[0] < length:
                return None
            conn.execute(sql.NEW_WINDOW, args)
        return int(row[1]) if started else None

    def claims(self, key: str) -> list[Claim]:
        rows = self._read(sql.CLAIMS, {"key": key})
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
            args: dict[str, Any] = {"key": key, "count": len(sessions)}
            if sessions:
                sessions.sort()
                first = conn.execute(sql.MOVE_SEQ_BY, args).fetchone()[0] - len(sessions) + 1
                conn.executemany(
                    sql.MAKE_IDLE_AT,
                    [
                        {**args, "name": name, "seq": first + i}
                        for i, (_, name) in enumerate(sessions)
                    ],
                )
            found = len(sessions) + dropped_permits
            if found:
                conn.execute(sql.WAKE, args)
        return found

    def clear(self, key: str) -> list[SessionRecord]:
        args = {"key": key}
        with self._write() as conn:
            records = [SessionRecord(*row) for row in conn.execute(sql.EVERY_SESSION, args)]
            for statement in sql.FORGET_POOL:
                conn.execute(statement, args)
        return records

    def stats(self, key: str) -> StoreStats:
        ((idle, in_use, creating, high_water, window_start),) = self._read(sql.STATS, {"key": key})
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
                rows = self._read(sql.RELEASE_COUNT, {"key": key})
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
        """Reads the key's want count (a read, no write lock): every 5 ms at first, then
        less and less often while it stays the same, down to every 50 ms."""
        deadline = time.monotonic() + max(0.0, timeout)
        delay = WANT_POLL_FIRST
        while True:
            rows = self._read(sql.WANT_COUNT, {"key": key})
            seen = int(rows[0][0]) if rows else 0
            remaining = deadline - time.monotonic()
            if seen != wants or remaining <= 0:
                return seen
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, WANT_POLL_LAST)

    def close(self) -> None:
        """Close this thread's connection; any later use of the store raises ``StoreError``."""
        self._before_closing()
        self._file.close()

    def __repr__(self) -> str:
        state = " closed" if self._file.closed else ""
        return f"<SQLiteStore path={self.path!r}{state}>"
