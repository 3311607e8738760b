"""CacheSessionPool shared by separate processes, over SQLite and over Redis.

The LocalSpanner runs in the test process, which only waits while the workers run: each
worker is a process of its own with its own store connection, pool and official client, as
the workers of a web server or a job queue are. The server's peak count of live sessions
shows that the global ``max_sessions`` held, and a ledger outside the pool (a Redis set, a
SQLite table with a primary key) shows that no session was ever held by two processes at once.
"""

from __future__ import annotations

import itertools
import os
import queue
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest

from spanpool import CacheSessionPool, NotCheckedOut
from spanpool.cache import _leases
from spanpool.testing import LocalSpanner

from ..conftest import ACCOUNTS_DDL, wait_child, worker_processes
from ..stores import open_store
from . import _cache_workers as workers

_ids = itertools.count()


@pytest.fixture(scope="module")
def mp() -> Any:
    return worker_processes("tests.cache._cache_workers")


@pytest.fixture(scope="module")
def server() -> Iterator[LocalSpanner]:
    with LocalSpanner(ddl=ACCOUNTS_DDL, max_workers=128) as srv:
        yield srv


def _db_id(prefix: str) -> str:
    return f"{prefix}{next(_ids)}p{os.getpid()}t{time.monotonic_ns() % 10**6}"


def _local_pool(store_address: tuple[str, str], server: LocalSpanner, db_id: str, **kw: Any) -> Any:
    pool = CacheSessionPool(open_store(*store_address), **kw)
    database = server.database(db_id, pool=pool)
    return pool, database


def _collect(results: Any, processes: list[Any], count: int, timeout: float = 120) -> list[Any]:
    """``count`` reports from the workers; fails at once when a worker dies without one."""
    reports: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(reports) < count:
        try:
            reports.append(results.get(timeout=0.2))
            continue
        except queue.Empty:
            pass
        dead = [p for p in processes if p.exitcode not in (None, 0)]
        if dead or time.monotonic() > deadline:
            for process in processes:
                process.kill()
            pytest.fail(f"workers failed: {[(p.pid, p.exitcode) for p in processes]}")
    return reports


def _join(processes: list[Any], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    for process in processes:
        process.join(max(0.1, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            pytest.fail(f"worker {process.pid} did not finish")


def test_six_processes_hammering_one_pool(
    mp: Any, server: LocalSpanner, store_address: tuple[str, str], tmp_path: Any
) -> None:
    max_sessions, processes_count, cycles = 4, 6, 40
    db_id = _db_id("hammer")
    if store_address[0] == "redis":
        ledger = ("redis", store_address[1], f"test-ledger:{db_id}")
    else:
        ledger = ("sqlite", str(tmp_path / "ledger.db"), "holding")
        workers.Ledger(*ledger)  # made here: switching a file to WAL is not done by six at once
    start, results = mp.Event(), mp.Queue()
    processes = [
        mp.Process(
            target=workers.hammer,
            args=(
                store_address,
                ledger,
                server.endpoint,
                db_id,
                max_sessions,
                cycles,
                start,
                results,
            ),
        )
        for _ in range(processes_count)
    ]
    for process in processes:
        process.start()
    start.set()
    reports = _collect(results, processes, len(processes))
    _join(processes)

    assert all(process.exitcode == 0 for process in processes)
    assert sum(report[1] for report in reports) == processes_count * cycles
    assert [report[2] for report in reports] == [0] * processes_count  # never held twice
    database_name = server.database_path(db_id)
    assert 1 <= server.peak_session_count(database_name) <= max_sessions
    # Everything is back, and the store knows exactly the sessions the server has.
    pool, _ = _local_pool(store_address, server, db_id, max_sessions=max_sessions)
    stats = pool.get_stats()
    assert (stats["pool_in_use"], stats["pool_creating"]) == (0, 0)
    assert stats["pool_available"] == server.session_count(database_name) <= max_sessions
    assert workers.Ledger(*ledger).size() == 0
    assert sum(report[3]["requests_timeouts"] for report in reports) == 0
    assert pool.clear() is True


def test_a_sigkilled_holder_is_reclaimed_at_once(
    mp: Any, server: LocalSpanner, store_address: tuple[str, str]
) -> None:
    db_id = _db_id("killed")
    results = mp.Queue()
    holder = mp.Process(
        target=workers.hold, args=(store_address, server.endpoint, db_id, 2, 2, results)
    )
    holder.start()
    names = set(_collect(results, [holder], 1)[0])
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(30)
    assert holder.exitcode == -signal.SIGKILL

    pool, database = _local_pool(
        store_address, server, db_id, max_sessions=2, min_sessions=0, should_wait_for_session=False
    )
    assert pool.get_stats()["pool_in_use"] == 2  # still checked out to the dead process
    # reclaim_after_seconds is 20 minutes: the pool sees the holder's pid is gone instead.
    session = pool.acquire()
    assert session.name in names
    stats = pool.get_stats()
    assert (stats["sessions_reclaimed"], stats["pool_in_use"], stats["pool_available"]) == (2, 1, 1)
    pool.release(session)
    assert pool.clear() is True
    assert server.session_count(database.name) == 0


def test_a_waiter_in_another_process_gets_the_released_session(
    mp: Any, server: LocalSpanner, store_address: tuple[str, str]
) -> None:
    db_id = _db_id("waiter")
    pool, _ = _local_pool(store_address, server, db_id, max_sessions=1, min_sessions=0)
    session = pool.acquire()
    waiting, results = mp.Event(), mp.Queue()
    sleep_interval = 30.0
    child = mp.Process(
        target=workers.wait_for_one,
        args=(store_address, server.endpoint, db_id, 1, sleep_interval, waiting, results),
    )
    watch = open_store(*store_address)
    wants = watch.wait_for_want(pool.key, 0, -1)
    child.start()
    assert waiting.wait(60)
    # The child found the pool full: its acquire counted one more want, then it waits.
    assert watch.wait_for_want(pool.key, 60, wants) > wants
    watch.close()
    pool.release(session)
    outcome, name, waited, stats = _collect(results, [child], 1)[0]
    _join([child])
    assert outcome == "ok", name
    assert name == session.name
    assert (stats["requests_waiting_total"], stats["requests_timeouts"]) == (1, 0)
    # Woken by the release (a Redis blocking pop, SQLite's fast polling), well before the
    # 30 s sleep interval would have ended.
    assert waited < sleep_interval
    assert pool.get_stats()["pool_available"] == 1


def test_a_session_leased_here_goes_to_a_waiter_in_another_process(
    mp: Any,
    server: LocalSpanner,
    store_address: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    record_property: Any,
) -> None:
    # Unused leased sessions would go back after LINGER anyway: here only a want can do it
    # within the waiter's 30 s.
    monkeypatch.setattr(_leases, "LINGER", 3600.0)
    db_id = _db_id("handback")
    pool, _ = _local_pool(store_address, server, db_id, max_sessions=2, min_sessions=0)
    mine = pool.acquire()
    pool.release(mine)  # leased: still checked out to this process, one free place left
    assert (pool.store_stats().in_use, pool.get_stats()["pool_available"]) == (1, 1)
    results = mp.Queue()
    child = mp.Process(
        target=workers.want_one_more, args=(store_address, server.endpoint, db_id, 2, results)
    )
    child.start()
    outcome, name, waited, stats = _collect(results, [child], 1)[0]
    _join([child])
    assert outcome == "ok", name
    assert name == mine.name  # given back by this process when the other found the pool full
    assert (stats["requests_waiting_total"], stats["requests_timeouts"]) == (1, 0)
    record_property("hand_back_seconds", waited)  # bench/cache.py reports it; no bound here
    assert pool.store_stats().idle == 2


def test_a_process_that_exits_returns_what_it_holds(
    server: LocalSpanner, store_address: tuple[str, str]
) -> None:
    db_id = _db_id("exits")
    script = textwrap.dedent(
        f"""
        from spanpool import CacheSessionPool
        from spanpool.testing import connect
        from tests.stores import open_store

        pool = CacheSessionPool(open_store(*{store_address!r}), max_sessions=3, min_sessions=0)
        connect({server.endpoint!r}, {db_id!r}, pool=pool)
        held = [pool.acquire(), pool.acquire()]
        print(pool.get_stats()["pool_in_use"])
        # exits without releasing them
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2"
    pool, database = _local_pool(store_address, server, db_id, max_sessions=3, min_sessions=0)
    stats = pool.get_stats()
    assert (stats["pool_in_use"], stats["pool_available"]) == (0, 2)
    assert server.session_count(database.name) == 2
    assert pool.clear() is True


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_forgets_the_checkouts_of_its_parent(
    server: LocalSpanner, tmp_path: Any
) -> None:
    store_address = ("sqlite", str(tmp_path / "pool.db"))
    pool, database = _local_pool(
        store_address, server, _db_id("fork"), max_sessions=2, min_sessions=1
    )
    session = pool.acquire()

    pid = os.fork()
    if pid == 0:  # the child: report through the exit code only
        code = 1
        try:
            stats = pool.get_stats()  # the store is shared; the checkout is the parent's
            fresh = stats["held_here"] == 0 and stats["pool_in_use"] == 1
            try:
                pool.release(session)
                code = 2
            except NotCheckedOut:
                code = 0 if fresh and pool._holder.pid == os.getpid() else 3
        except BaseException:
            code = 4
        finally:
            os._exit(code)

    # 2: the child released the parent's session; 3: it kept the parent's state; 4: error
    assert wait_child(pid, timeout=60) == 0
    pool.release(session)
    assert pool.get_stats()["pool_available"] == 1 == server.session_count(database.name)
