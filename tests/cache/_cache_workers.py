"""Worker processes for ``test_cache_pool_processes.py``: each opens its own store, pool and
client, as a real worker process of an application would.

Functions here run in child processes started by ``multiprocessing`` ("forkserver" or
"spawn"), so they take only plain arguments and report through a queue.
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Any

from spanpool import CacheSessionPool
from spanpool.testing import connect

from ..stores import open_store


class Ledger:
    """Who holds which session, outside the pool: taking a session someone else holds
    fails (a Redis set's SADD answers 0; a SQLite primary key refuses the row)."""

    def __init__(self, kind: str, address: str, name: str) -> None:
        self._kind = kind
        self._name = name
        if kind == "redis":
            import redis

            self._redis: Any = redis.Redis.from_url(address)
        else:
            self._sqlite = sqlite3.connect(address, timeout=60, isolation_level=None)
            # Already WAL when the test made the ledger first: changing the mode takes a lock
            # that waits for no busy timeout, so processes starting at once must not all try.
            if self._sqlite.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                self._sqlite.execute("PRAGMA journal_mode=WAL")
            self._sqlite.execute(
                f"CREATE TABLE IF NOT EXISTS {name} (session TEXT PRIMARY KEY, pid INTEGER)"
            )

    def take(self, session: str) -> bool:
        if self._kind == "redis":
            return int(self._redis.sadd(self._name, session)) == 1
        try:
            self._sqlite.execute(f"INSERT INTO {self._name} VALUES (?, ?)", (session, os.getpid()))
        except sqlite3.IntegrityError:
            return False
        return True

    def give(self, session: str) -> None:
        if self._kind == "redis":
            self._redis.srem(self._name, session)
        else:
            self._sqlite.execute(f"DELETE FROM {self._name} WHERE session = ?", (session,))

    def size(self) -> int:
        if self._kind == "redis":
            return int(self._redis.scard(self._name))
        return int(self._sqlite.execute(f"SELECT count(*) FROM {self._name}").fetchone()[0])


def _connected_pool(
    store: tuple[str, str], endpoint: str, database_id: str, **options: Any
) -> CacheSessionPool:
    """A CacheSessionPool on its own connection to ``store``, serving a client of its own."""
    pool = CacheSessionPool(open_store(*store), **options)
    connect(endpoint, database_id, pool=pool)
    return pool


def hammer(
    store: tuple[str, str],
    ledger: tuple[str, str, str],
    endpoint: str,
    database_id: str,
    max_sessions: int,
    cycles: int,
    start: Any,
    results: Any,
) -> None:
    """Acquire, use and release sessions ``cycles`` times, as fast as possible."""
    pool = _connected_pool(
        store,
        endpoint,
        database_id,
        max_sessions=max_sessions,
        min_sessions=1,
        sleep_interval_seconds=0.05,
        max_cycles_to_wait_for_session=600,
    )
    holding = Ledger(*ledger)
    start.wait(60)
    doubles = done = 0
    for _ in range(cycles):
        session = pool.acquire()
        if not holding.take(session.name):
            doubles += 1
        assert list(session.snapshot().execute_sql("SELECT 1")) == [[1]]
        holding.give(session.name)
        pool.release(session)
        done += 1
    results.put((os.getpid(), done, doubles, pool.get_stats()))


def hold(
    store: tuple[str, str],
    endpoint: str,
    database_id: str,
    max_sessions: int,
    count: int,
    results: Any,
) -> None:
    """Check out ``count`` sessions, report their names, and hang on to them until killed."""
    pool = _connected_pool(store, endpoint, database_id, max_sessions=max_sessions, min_sessions=0)
    sessions = [pool.acquire() for _ in range(count)]
    results.put([session.name for session in sessions])
    time.sleep(120)


def _waiting_once(
    store: tuple[str, str],
    endpoint: str,
    database_id: str,
    max_sessions: int,
    sleep_interval: float,
) -> CacheSessionPool:
    """A pool of at most ``max_sessions`` whose acquire waits one ``sleep_interval`` at most."""
    return _connected_pool(
        store,
        endpoint,
        database_id,
        max_sessions=max_sessions,
        min_sessions=0,
        sleep_interval_seconds=sleep_interval,
        max_cycles_to_wait_for_session=1,
    )


def _timed_acquire(pool: CacheSessionPool, results: Any) -> Any:
    """Acquire, and report ``("ok", session name, seconds waited, stats)`` or ``("error",
    repr of the error, seconds waited, stats)``; returns the session, or None."""
    began = time.monotonic()
    try:
        session = pool.acquire()
    except Exception as exc:
        results.put(("error", repr(exc), time.monotonic() - began, pool.get_stats()))
        return None
    waited = time.monotonic() - began
    results.put(("ok", session.name, waited, pool.get_stats()))
    return session


def wait_for_one(
    store: tuple[str, str],
    endpoint: str,
    database_id: str,
    max_sessions: int,
    sleep_interval: float,
    waiting: Any,
    results: Any,
) -> None:
    """Acquire from a full pool, waiting at most one ``sleep_interval``; report what came."""
    pool = _waiting_once(store, endpoint, database_id, max_sessions, sleep_interval)
    waiting.set()
    session = _timed_acquire(pool, results)
    if session is not None:
        pool.release(session)


def want_one_more(
    store: tuple[str, str], endpoint: str, database_id: str, max_sessions: int, results: Any
) -> None:
    """Take the pool's last free place, then one more session: the pool is full, so another
    process must give one back. Report what came and how long the second acquire took."""
    pool = _waiting_once(store, endpoint, database_id, max_sessions, sleep_interval=30.0)
    first = pool.acquire()
    second = _timed_acquire(pool, results)
    if second is not None:
        pool.release(first)
        pool.release(second)
