"""spanpool's pools under faults, against LocalSpanner through the official client.

Every scenario checks the pool's books against the server: an RPC that fails, a session the
server dropped, a ping in flight, a close, a fork or a process exit must never lose a session,
hand one out twice, or leave the pool believing in sessions the server no longer has.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from google.api_core import exceptions

from spanpool import (
    BurstyPool,
    FixedSizePool,
    PingingPool,
    PoolClosed,
    PoolForked,
    PoolUsageError,
    SessionLeakWarning,
)
from spanpool.bridge import client as _bridge
from spanpool.testing import LocalSpanner

from ..conftest import FakeClock

# -- helpers ---------------------------------------------------------------------------------


class Pools:
    """Binds pools to databases on the test's server, and closes them all afterwards."""

    def __init__(self, server: LocalSpanner) -> None:
        self.server = server
        self._pools: list[Any] = []

    def bind(self, pool: Any, database_id: str) -> Any:
        self._pools.append(pool)
        return self.server.database(database_id, pool=pool)

    def close_all(self) -> None:
        self.server.clear_faults()
        for pool in self._pools:
            pool.close()


@pytest.fixture
def pools(server: LocalSpanner) -> Iterator[Pools]:
    registry = Pools(server)
    yield registry
    registry.close_all()


def _assert_books_match(pool: Any, server: LocalSpanner, database_name: str) -> None:
    """The pool counts exactly the sessions the server has (or is creating) for it."""
    stats = pool.get_stats()
    assert stats["pool_size"] + stats["pool_creating"] == server.session_count(database_name), stats


def _live_names(server: LocalSpanner, database_name: str) -> set[str]:
    return {session.name for session in server.backend.list_sessions(database_name)}


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` real seconds pass."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def _wait_child(pid: int, timeout: float = 30.0) -> int:
    """The exit code of a forked child; kills it and fails the test if it hangs."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child did not finish")
        time.sleep(0.01)


def _insert(transaction: Any, account_id: int) -> int:
    return int(
        transaction.execute_update(
            f"INSERT INTO Accounts (Id, Owner, Balance) VALUES ({account_id}, 'owner', 100)"
        )
    )


def _select_one(session: Any) -> list[list[Any]]:
    return [list(row) for row in session.snapshot().execute_sql("SELECT 1")]


def _held_sessions(pool: Any, count: int) -> list[Any]:
    return [pool.get(timeout=5) for _ in range(count)]


# -- 1. an RPC error never loses a session -----------------------------------------------------


@pytest.mark.parametrize("size", [3, 250])
def test_failed_bind_keeps_what_was_created_and_fill_completes_the_pool(
    server: LocalSpanner, pools: Pools, size: int
) -> None:
    database_name = server.database_path("bind")
    server.inject_error("BatchCreateSessions", "INTERNAL", count=1)
    pool = FixedSizePool(size=size)

    with pytest.raises(exceptions.InternalServerError):
        pools.bind(pool, "bind")

    stats = pool.get_stats()
    assert stats["pool_creating"] == 0
    assert stats["pool_size"] == server.session_count(database_name)
    # Sessions come in batches of at most 100: the failed batch created nothing, the others
    # were all kept.
    assert stats["pool_size"] in ({0} if size <= 100 else {size - 100, size - 50})
    assert stats["sessions_create_failed"] == size - stats["pool_size"]

    assert pool.fill() == size - stats["pool_size"]
    assert pool.get_stats()["pool_size"] == size
    _assert_books_match(pool, server, database_name)


@pytest.mark.parametrize("size", [1200, 10_000])
def test_a_failing_bind_stops_at_the_first_failed_call_whatever_the_size(
    server: LocalSpanner, pools: Pools, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    monkeypatch.setattr(_bridge, "CREATE_RETRY", None)  # the client's retries, made instant
    server.inject_error("BatchCreateSessions", "UNAVAILABLE")  # every call: the server is down
    pool = FixedSizePool(size=size)

    with pytest.raises(exceptions.ServiceUnavailable):
        pools.bind(pool, "down")

    # One call per lane at most, then the error: the time to it does not grow with the size.
    assert server.request_counts()["BatchCreateSessions"] <= 4
    stats = pool.get_stats()
    assert (stats["pool_size"], stats["pool_creating"]) == (0, 0)
    assert stats["sessions_create_failed"] == size  # every place was given back


@pytest.mark.parametrize(("code", "get_fails"), [("INTERNAL", True), ("UNAVAILABLE", False)])
def test_failed_session_creation_on_get_loses_nothing(
    server: LocalSpanner, pools: Pools, code: str, get_fails: bool
) -> None:
    pool = BurstyPool(target_size=2)
    database = pools.bind(pool, "bursty")
    server.inject_error("CreateSession", code, count=1)

    if get_fails:
        with pytest.raises(exceptions.InternalServerError):
            pool.get()
        stats = pool.get_stats()
        assert (stats["pool_size"], stats["pool_creating"], stats["sessions_create_failed"]) == (
            0,
            0,
            1,
        )
        _assert_books_match(pool, server, database.name)

    # UNAVAILABLE is retried by the client, so the first get already succeeds.
    session = pool.get()
    assert server.request_counts()["CreateSession"] == 2
    assert session.name in _live_names(server, database.name)
    _assert_books_match(pool, server, database.name)
    pool.put(session)
    assert pool.get_stats()["pool_available"] == 1
    _assert_books_match(pool, server, database.name)


def test_failed_freshness_check_puts_the_session_back(server: LocalSpanner, pools: Pools) -> None:
    pool = FixedSizePool(size=2, max_age_minutes=0)
    database = pools.bind(pool, "check")
    server.inject_error("GetSession", "INTERNAL", count=1)

    with pytest.raises(exceptions.InternalServerError):
        pool.get(timeout=1)

    stats = pool.get_stats()
    assert (stats["pool_available"], stats["pool_in_use"]) == (2, 0)
    _assert_books_match(pool, server, database.name)
    session = pool.get(timeout=1)
    assert session.name in _live_names(server, database.name)
    pool.put(session)
    _assert_books_match(pool, server, database.name)


@pytest.mark.parametrize(("code", "lost"), [("INTERNAL", 2), ("UNAVAILABLE", 0)])
def test_failed_pings_replace_the_sessions_and_none_is_handed_out_twice(
    server: LocalSpanner, pools: Pools, clock: FakeClock, code: str, lost: int
) -> None:
    pool = PingingPool(size=4, ping_interval=60, clock=clock)
    database = pools.bind(pool, "ping")
    before = _live_names(server, database.name)
    server.inject_error("ExecuteSql", code, count=2)
    clock.advance(61)

    pool.ping()  # no error escapes

    stats = pool.get_stats()
    assert (stats["pings"], stats["pings_failed"], stats["sessions_replaced"]) == (4, lost, lost)
    assert (stats["pool_available"], stats["pool_in_use"], stats["pool_in_maintenance"]) == (
        4,
        0,
        0,
    )
    assert stats["sessions_deleted"] == lost  # a session in doubt is deleted, not kept
    _assert_books_match(pool, server, database.name)
    after = _live_names(server, database.name)
    assert len(before - after) == lost

    held = _held_sessions(pool, 4)
    names = [session.name for session in held]
    assert len(set(names)) == 4
    assert set(names) == after
    for session in held:
        pool.put(session)


def test_failed_deletes_on_close_are_logged_and_never_raised(
    server: LocalSpanner, pools: Pools, caplog: pytest.LogCaptureFixture
) -> None:
    pool = FixedSizePool(size=4)
    database = pools.bind(pool, "close")
    server.inject_error("DeleteSession", "INTERNAL", count=2)

    with caplog.at_level(logging.WARNING, logger="spanpool"):
        pool.close()

    failures = [r for r in caplog.records if "deleting a session failed" in r.getMessage()]
    assert len(failures) == 2
    stats = pool.get_stats()
    assert (stats["pool_size"], stats["sessions_deleted"]) == (0, 2)
    # The pool forgot them all; the two it could not delete are left to expire on the server.
    assert server.session_count(database.name) == 2


def test_failed_delete_on_put_is_logged_and_never_raised(
    server: LocalSpanner, pools: Pools, caplog: pytest.LogCaptureFixture
) -> None:
    pool = BurstyPool(target_size=1)
    database = pools.bind(pool, "put")
    first, second = pool.get(), pool.get()
    pool.put(first)
    server.inject_error("DeleteSession", "INTERNAL", count=1)

    with caplog.at_level(logging.WARNING, logger="spanpool"):
        pool.put(second)  # one idle already: this one is deleted, and that fails

    assert any("deleting a session failed" in r.getMessage() for r in caplog.records)
    stats = pool.get_stats()
    assert (stats["pool_size"], stats["pool_available"], stats["sessions_deleted"]) == (1, 1, 0)
    assert server.session_count(database.name) == 2
    assert pool.get() is first


# -- 2. dropped sessions are replaced, never handed out again ----------------------------------


def test_fixed_pool_checking_every_time_replaces_dropped_sessions(
    server: LocalSpanner, pools: Pools
) -> None:
    pool = FixedSizePool(size=4, max_age_minutes=0)
    database = pools.bind(pool, "dropped")
    dropped = _live_names(server, database.name)
    assert server.expire_sessions(1.0, database.name) == 4

    held = _held_sessions(pool, 4)

    names = {session.name for session in held}
    assert len(names) == 4
    assert not names & dropped
    for session in held:
        assert database.spanner_api.get_session(name=session.name).name == session.name
    assert pool.get_stats()["sessions_replaced"] >= 4
    _assert_books_match(pool, server, database.name)
    for session in held:
        pool.put(session)


def test_ping_replaces_the_sessions_the_server_dropped(
    server: LocalSpanner, pools: Pools, clock: FakeClock
) -> None:
    pool = PingingPool(size=4, ping_interval=60, clock=clock)
    database = pools.bind(pool, "dropped-ping")
    before = _live_names(server, database.name)
    assert server.expire_sessions(0.5, database.name) == 2
    dropped = before - _live_names(server, database.name)
    clock.advance(61)

    pool.ping()

    stats = pool.get_stats()
    assert (stats["pings"], stats["pings_failed"], stats["sessions_replaced"]) == (4, 2, 2)
    assert server.session_count(database.name) == 4
    _assert_books_match(pool, server, database.name)
    held = _held_sessions(pool, 4)
    names = {session.name for session in held}
    assert len(names) == 4
    assert not names & dropped
    for session in held:
        pool.put(session)


# -- 3. work on a session the server lost ------------------------------------------------------


def test_pool_run_in_transaction_retries_on_a_new_session(
    server: LocalSpanner, pools: Pools
) -> None:
    pool = FixedSizePool(size=1, max_age_minutes=600)
    database = pools.bind(pool, "txn")
    server.expire_sessions(1.0, database.name)

    assert pool.run_in_transaction(_insert, 7) == 1

    with pool.session() as session:
        assert [list(row) for row in session.execute_sql("SELECT Id FROM Accounts")] == [[7]]
    assert pool.get_stats()["sessions_replaced"] == 1
    _assert_books_match(pool, server, database.name)


def test_pool_run_in_transaction_survives_every_idle_session_being_dropped(
    server: LocalSpanner, pools: Pools
) -> None:
    pool = FixedSizePool(size=4, max_age_minutes=600)
    database = pools.bind(pool, "txn-all")
    server.expire_sessions(1.0, database.name)

    assert pool.run_in_transaction(_insert, 8) == 1


def test_session_block_drops_a_session_the_server_lost(server: LocalSpanner, pools: Pools) -> None:
    pool = FixedSizePool(size=1, max_age_minutes=600)
    database = pools.bind(pool, "block")
    server.expire_sessions(1.0, database.name)

    with pytest.raises(exceptions.NotFound), pool.session() as session:
        lost = session.name
        _select_one(session)

    stats = pool.get_stats()
    assert (stats["pool_size"], stats["pool_available"], stats["pool_in_use"]) == (0, 0, 0)
    assert stats["sessions_replaced"] == 1
    _assert_books_match(pool, server, database.name)
    with pool.session() as session:
        assert session.name != lost
        assert _select_one(session) == [[1]]
    _assert_books_match(pool, server, database.name)


def test_database_snapshot_replaces_a_session_the_server_lost(
    server: LocalSpanner, pools: Pools, regular_sessions: None
) -> None:
    pool = FixedSizePool(size=1, max_age_minutes=600)
    database = pools.bind(pool, "snapshot")
    lost = _live_names(server, database.name)
    server.expire_sessions(1.0, database.name)

    with pytest.raises(exceptions.NotFound), database.snapshot() as snapshot:
        list(snapshot.execute_sql("SELECT 1"))

    # The client made a replacement through the pool and put it back: the pool took it in.
    assert pool.get_stats()["pool_size"] == 1
    _assert_books_match(pool, server, database.name)
    with database.snapshot() as snapshot:
        assert [list(row) for row in snapshot.execute_sql("SELECT 1")] == [[1]]
    assert not _live_names(server, database.name) & lost


def test_database_run_in_transaction_does_not_get_a_dropped_session_again(
    server: LocalSpanner, pools: Pools, regular_sessions: None
) -> None:
    pool = FixedSizePool(size=1, max_age_minutes=600)
    database = pools.bind(pool, "db-txn")
    server.expire_sessions(1.0, database.name)

    # The caller may see the first failure; it must not see it again.
    with contextlib.suppress(exceptions.NotFound):
        database.run_in_transaction(_insert, 1)

    assert database.run_in_transaction(_insert, 2) == 1
    _assert_books_match(pool, server, database.name)


# -- 4. pings concurrent with checkouts ----------------------------------------------------------


def test_ping_loop_concurrent_with_eight_threads_of_checkouts(
    server: LocalSpanner, pools: Pools
) -> None:
    pool = PingingPool(size=5, ping_interval=0.001)
    database = pools.bind(pool, "stress")
    stop = threading.Event()
    errors: list[BaseException] = []
    holders: dict[str, str] = {}
    holders_lock = threading.Lock()
    start = threading.Barrier(9)

    def pinger() -> None:
        try:
            start.wait(10)
            while not stop.is_set():
                pool.ping()
                stop.wait(0.002)
        except BaseException as exc:
            errors.append(exc)

    def worker() -> None:
        me = threading.current_thread().name
        try:
            start.wait(10)
            for _ in range(50):
                with pool.session() as session:
                    with holders_lock:
                        other = holders.setdefault(session.name, me)
                    assert other == me, f"{session.name} handed to {me} while {other} held it"
                    try:
                        assert _select_one(session) == [[1]]
                    finally:
                        with holders_lock:
                            del holders[session.name]
        except BaseException as exc:
            errors.append(exc)

    ping_thread = threading.Thread(target=pinger, name="pinger", daemon=True)
    workers = [threading.Thread(target=worker, name=f"worker-{i}") for i in range(8)]
    ping_thread.start()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(60)
    pings_meanwhile = pool.get_stats()["pings"]
    stop.set()
    ping_thread.join(30)

    assert not ping_thread.is_alive()
    assert not any(thread.is_alive() for thread in workers)
    assert errors == []
    # Sessions in constant use need no ping; once the load stops they are due again.
    pool.ping()
    assert pool.get_stats()["pings"] > pings_meanwhile
    stats = pool.get_stats()
    assert (stats["pool_available"], stats["pool_in_use"], stats["pool_in_maintenance"]) == (
        5,
        0,
        0,
    )
    assert server.session_count(database.name) == 5
    _assert_books_match(pool, server, database.name)


# -- 5. a ping in flight does not block get ------------------------------------------------------


def _ping_in_background(
    pool: Any, monkeypatch: pytest.MonkeyPatch
) -> tuple[threading.Thread, threading.Event]:
    """Start ``pool.ping()`` in a thread; the event is set once its first ping is sent."""
    pinging = threading.Event()
    original = _bridge.ping

    def ping(session: Any) -> bool:
        pinging.set()
        return original(session)

    monkeypatch.setattr(_bridge, "ping", ping)
    thread = threading.Thread(target=pool.ping, name="ping-in-flight")
    thread.start()
    assert pinging.wait(10)
    return thread, pinging


def test_get_is_served_while_a_ping_is_in_flight(
    server: LocalSpanner, pools: Pools, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = PingingPool(size=4, ping_interval=60, clock=clock)
    database = pools.bind(pool, "ping-get")
    server.inject_latency(300, "ExecuteSql")
    clock.advance(61)
    pinger, _ = _ping_in_background(pool, monkeypatch)
    try:
        started = time.monotonic()
        session = pool.get(timeout=0.1)
        waited = time.monotonic() - started
        in_flight = pool.get_stats()["pool_in_maintenance"]
        assert _select_one(session) == [[1]]
        pool.put(session)
    finally:
        pinger.join(10)

    assert in_flight > 0  # the ping was still running when get returned
    assert waited < 0.1
    assert not pinger.is_alive()
    stats = pool.get_stats()
    assert stats["pings"] >= 3
    assert (stats["pool_available"], stats["pool_in_maintenance"]) == (4, 0)
    _assert_books_match(pool, server, database.name)


def test_ping_leaves_a_small_pools_last_idle_session_to_callers(
    server: LocalSpanner, pools: Pools, clock: FakeClock
) -> None:
    pool = PingingPool(size=2, ping_interval=60, clock=clock)
    pools.bind(pool, "ping-get-small")
    busy = pool.get(timeout=1)
    clock.advance(61)
    pool.ping()
    assert pool.get_stats()["pings"] == 0  # the only idle session stayed available
    pool.put(pool.get(timeout=0))
    pool.put(busy)
    clock.advance(61)
    pool.ping()  # both due: each is pinged in turn while the other stays idle
    assert pool.get_stats()["pings"] == 2


# -- 6. lifecycle: close, process exit, fork -----------------------------------------------------


def test_with_block_closes_the_pool_and_deletes_every_session(server: LocalSpanner) -> None:
    with FixedSizePool(size=3) as pool:
        database = server.database("lifecycle", pool=pool)
        assert server.session_count(database.name) == 3
        held = pool.get()

    # Idle sessions were deleted at close; the one checked out is deleted when it comes back.
    assert server.session_count(database.name) == 1
    with pytest.raises(PoolClosed):
        pool.get()
    pool.put(held)
    assert server.session_count(database.name) == 0
    stats = pool.get_stats()
    assert (stats["pool_size"], stats["sessions_deleted"]) == (0, 3)


def test_close_wakes_a_waiting_get_with_pool_closed(server: LocalSpanner, pools: Pools) -> None:
    pool = FixedSizePool(size=1, default_timeout=30)
    database = pools.bind(pool, "waiting")
    held = pool.get()
    outcome: list[BaseException] = []

    def wait_for_a_session() -> None:
        try:
            pool.get()
        except BaseException as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait_for_a_session, name="waiter")
    waiter.start()
    assert _wait_for(lambda: pool.get_stats()["requests_waiting"] == 1)

    pool.close()
    waiter.join(10)

    assert not waiter.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], PoolClosed)
    pool.put(held)
    assert server.session_count(database.name) == 0


_EXIT_WITHOUT_CLOSE = textwrap.dedent(
    """
    import sys

    from spanpool.testing import connect

    endpoint, database_id, kind, size = sys.argv[1:]
    if kind == "spanpool":
        from spanpool import FixedSizePool
    else:
        from google.cloud.spanner_v1.pool import FixedSizePool
    pool = FixedSizePool(size=int(size))
    database = connect(endpoint, database_id, pool=pool)
    with pool.session() as session:
        assert list(session.execute_sql("SELECT 1")) == [[1]]
    print("used", flush=True)
    """
)


def _run_and_exit_without_close(server: LocalSpanner, kind: str, size: int) -> tuple[int, str]:
    """Run a process that uses a pool and exits without closing it; returns the session
    count it left on the server, and its stderr."""
    database_id = f"exit-{kind}-{size}"
    done = subprocess.run(
        [sys.executable, "-c", _EXIT_WITHOUT_CLOSE, server.endpoint, database_id, kind, str(size)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "used"
    return server.session_count(server.database_path(database_id)), done.stderr


@pytest.mark.parametrize(
    "size",
    [1, 5],
)
def test_process_exit_without_close_deletes_the_sessions(server: LocalSpanner, size: int) -> None:
    left, stderr = _run_and_exit_without_close(server, "spanpool", size)

    assert left == 0
    assert "Traceback" not in stderr


def test_official_pool_leaves_its_sessions_at_process_exit(server: LocalSpanner) -> None:
    left, _ = _run_and_exit_without_close(server, "official", 5)

    assert left == 5


def _refusals_in_child(pool: Any, database: Any, session: Any, parent: int) -> int:
    """In a forked child: how many of the pool's methods did not refuse clearly (0: all
    raised PoolForked naming both processes). Run with the parent's core lock held, so that a
    method touching it would hang the child instead."""
    calls: list[Callable[[], object]] = [
        pool.get,
        lambda: pool.put(session),
        pool.clear,
        pool.ping,
        pool.get_stats,
        pool.pop_stats,
        pool.maintain,
        pool.check_leaks,
        pool.fill,
        pool.start_maintenance,
        lambda: pool.bind(database),
        lambda: pool.run_in_transaction(lambda transaction: None),
        lambda: pool.session().__enter__(),
    ]
    unclear = 0
    for call in calls:
        try:
            call()
        except PoolForked as exc:
            message = str(exc)
            if f"process {parent}" not in message or f"process {os.getpid()}" not in message:
                unclear += 1
        except BaseException:
            unclear += 1
        else:
            unclear += 1
    pool.close()  # does nothing: the sessions are the parent's
    repr(pool)
    return unclear


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("cls", [FixedSizePool, PingingPool, BurstyPool], ids=lambda c: c.__name__)
def test_everything_in_a_forked_child_refuses_without_touching_the_parents_state(
    server: LocalSpanner, pools: Pools, cls: type
) -> None:
    pool = cls(2) if cls is not BurstyPool else cls(target_size=2)
    database = pools.bind(pool, "fork")
    held = pool.get()  # checked out in the parent when it forks: the child must not return it
    if cls is BurstyPool:
        pool.put(pool.get())
    parent = os.getpid()
    before = _live_names(server, database.name)

    pool._core._lock.acquire()  # a parent thread inside the pool at the instant of the fork
    try:
        pid = os.fork()
        if pid == 0:  # the child: report through the exit code only
            code = 100
            try:
                code = _refusals_in_child(pool, database, held, parent)
            finally:
                os._exit(code)
    finally:
        pool._core._lock.release()

    assert _wait_child(pid, timeout=20) == 0  # how many calls did not raise a clear PoolForked
    assert _live_names(server, database.name) == before
    pool.put(held)
    with pool.session() as session:
        assert _select_one(session) == [[1]]
    _assert_books_match(pool, server, database.name)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_close_in_a_forked_child_leaves_the_parents_sessions_alone(
    server: LocalSpanner, pools: Pools
) -> None:
    pool = FixedSizePool(size=3)
    database = pools.bind(pool, "fork-close")

    pid = os.fork()
    if pid == 0:  # the child: count the deletes close() would send, through the exit code
        code = 100
        try:
            deletes: list[Any] = []
            _bridge.delete = deletes.append  # type: ignore[assignment]
            with contextlib.suppress(PoolForked):
                pool.close()
            code = len(deletes)
        finally:
            os._exit(code)

    assert _wait_child(pid) == 0, "the child deleted sessions of its parent's pool"
    assert server.session_count(database.name) == 3


# -- 7. leak warnings ----------------------------------------------------------------------------


def _check_out_and_forget(pool: Any) -> Any:
    """A checkout site that the leak warning must name."""
    return pool.get(timeout=1)


def test_leak_warning_names_the_checkout_site(
    server: LocalSpanner, pools: Pools, clock: FakeClock
) -> None:
    pool = FixedSizePool(size=2, clock=clock, leak_threshold=5)
    pools.bind(pool, "leak")
    session = _check_out_and_forget(pool)

    clock.advance(4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SessionLeakWarning)
        assert pool.check_leaks() == 0
    clock.advance(2)
    with pytest.warns(SessionLeakWarning, match="_check_out_and_forget") as caught:
        assert pool.check_leaks() == 1

    assert len(caught) == 1
    assert session.name in str(caught[0].message)
    pool.put(session)
    assert pool.check_leaks() == 0


def test_a_session_leaked_again_after_its_return_is_reported_again(
    server: LocalSpanner, pools: Pools, clock: FakeClock
) -> None:
    pool = FixedSizePool(size=1, clock=clock, leak_threshold=5)
    pools.bind(pool, "leak-again")
    first = _check_out_and_forget(pool)
    clock.advance(6)
    with pytest.warns(SessionLeakWarning):
        pool.check_leaks()
    pool.put(first)

    second = _check_out_and_forget(pool)
    assert second is first
    clock.advance(6)
    with pytest.warns(SessionLeakWarning, match="_check_out_and_forget"):
        assert pool.check_leaks() == 1


def test_closing_with_sessions_checked_out_says_how_many_and_where(
    server: LocalSpanner, pools: Pools, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    tracked = FixedSizePool(size=2, clock=clock, leak_threshold=60)
    pools.bind(tracked, "close-tracked")
    session = _check_out_and_forget(tracked)
    clock.advance(3)
    with caplog.at_level(logging.WARNING, logger="spanpool"):
        tracked.close()
    (record,) = [r for r in caplog.records if "still checked out" in r.getMessage()]
    message = record.getMessage()
    assert "closed with 1 session still checked out" in message
    assert "checked out 3.0s ago" in message and "_check_out_and_forget" in message
    tracked.put(session)  # returned after close: deleted
    caplog.clear()

    untracked = FixedSizePool(size=3)
    pools.bind(untracked, "close-untracked")
    held = [untracked.get(), untracked.get()]
    with caplog.at_level(logging.WARNING, logger="spanpool"):
        untracked.close()
    (record,) = [r for r in caplog.records if "still checked out" in r.getMessage()]
    assert "closed with 2 sessions still checked out" in record.getMessage()
    assert "leak_threshold" in record.getMessage()
    for session in held:
        untracked.put(session)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="spanpool"):
        untracked.close()  # closing again says nothing more
    assert caplog.records == []


@pytest.mark.parametrize("cls", [FixedSizePool, BurstyPool], ids=lambda c: c.__name__)
def test_get_before_bind_refuses_and_leaves_the_pool_whole(
    server: LocalSpanner, pools: Pools, cls: type
) -> None:
    pool = cls(2) if cls is not BurstyPool else cls(target_size=2)
    for _ in range(3):
        with pytest.raises(PoolUsageError, match="not bound to a database"):
            pool.get()
    assert pool.get_stats()["pool_creating"] == 0
    database = pools.bind(pool, "unbound-first")
    first, second = pool.get(timeout=1), pool.get(timeout=1)
    pool.put(first)
    pool.put(second)
    _assert_books_match(pool, server, database.name)


# -- 8. built-in maintenance ---------------------------------------------------------------------


def _maintenance_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("spanpool-maintenance-")]


def test_maintenance_worker_pings_and_stops_on_close(server: LocalSpanner, pools: Pools) -> None:
    pool = PingingPool(size=3, ping_interval=0.2, maintenance=True)
    database = pools.bind(pool, "maintenance")
    workers = _maintenance_threads()
    assert len(workers) == 1

    assert _wait_for(lambda: pool.get_stats()["pings"] >= 3), pool.get_stats()
    _assert_books_match(pool, server, database.name)
    pool.close()

    assert not workers[0].is_alive()
    assert _maintenance_threads() == []
    assert server.session_count(database.name) == 0


def test_maintenance_pool_is_topped_up_after_a_failed_bind(
    server: LocalSpanner, pools: Pools
) -> None:
    server.inject_error("BatchCreateSessions", "INTERNAL", count=1)
    pool = PingingPool(size=2, ping_interval=0.2, maintenance=True)
    with pytest.raises(exceptions.InternalServerError):
        pools.bind(pool, "maintenance-bind")

    assert _wait_for(lambda: pool.get_stats()["pool_size"] == 2, timeout=2)


def test_binding_again_after_a_failed_bind_works(server: LocalSpanner, pools: Pools) -> None:
    server.inject_error("BatchCreateSessions", "INTERNAL", count=1)
    pool = FixedSizePool(size=3)
    with pytest.raises(exceptions.InternalServerError):
        pools.bind(pool, "rebind")

    database = pools.bind(pool, "rebind")

    with pool.session() as session:
        assert _select_one(session) == [[1]]
    assert server.session_count(database.name) == 3


_EXIT_AFTER_THE_SERVER_IS_GONE = textwrap.dedent(
    """
    import asyncio, sys

    from spanpool import AsyncFixedSizePool, FixedSizePool
    from spanpool.testing import LocalSpanner, connect, connect_async

    flavour = sys.argv[1]
    server = LocalSpanner().start()
    if flavour == "blocking":
        pool = FixedSizePool(size=20)
        connect(server.endpoint, "gone", pool=pool)
    else:
        apool = AsyncFixedSizePool(size=20)

        async def bind() -> None:
            await connect_async(server.endpoint, "gone", pool=apool)

        asyncio.run(bind())
    server.stop(grace=None)
    print("server stopped", flush=True)
    """
)


@pytest.mark.parametrize("flavour", ["blocking", "asyncio"])
def test_exit_does_not_hang_when_the_server_is_gone(flavour: str) -> None:
    # Deleting at exit is best effort: one short attempt per session, no retries. With the
    # client's default retries each of the 20 deletes would keep the process alive for 30 s.
    done = subprocess.run(
        [sys.executable, "-c", _EXIT_AFTER_THE_SERVER_IS_GONE, flavour],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "server stopped"
    assert "delet" in done.stderr  # the failed deletes are logged, not raised
