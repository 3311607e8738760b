"""MultiplexedPool against LocalSpanner, through the unmodified official client.

Where the official client's own ``DatabaseSessionsManager`` has a defect, the same test runs
against it too, marked as an expected failure (strict: the defect must still be there).
"""

from __future__ import annotations

import gc
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.api_core import exceptions
from google.cloud.spanner_v1 import KeySet
from google.cloud.spanner_v1 import pool as official

from spanpool import BurstyPool, FixedSizePool, MultiplexedPool, PoolClosed
from spanpool.bridge import routing
from spanpool.pools import _maintenance
from spanpool.testing import LocalSpanner

from ..conftest import FakeClock, run_in_threads, wait_child
from ._support import eventually

DAY = 86_400.0
OFFICIAL = pytest.param(
    "official",
    marks=pytest.mark.xfail(strict=True, reason="a defect of the client's own session manager"),
)
BOTH = ["spanpool", OFFICIAL]


def _db_id(prefix: str) -> str:
    return f"{prefix}{time.monotonic_ns() % 10**9}"


def _database(server: LocalSpanner, which: str, name: str, **pool_options: Any) -> Any:
    if which == "official":
        return server.database(name, pool=pool_options.get("fallback"))
    return server.database(name, pool=MultiplexedPool(**pool_options))


def _fixed_size_pool(which: str, size: int) -> Any:
    """A FixedSizePool of ``size`` sessions: spanpool's, or the official client's."""
    return FixedSizePool(size=size) if which == "spanpool" else official.FixedSizePool(size=size)


def _query(database: Any, sql: str = "SELECT 1", **kw: Any) -> list[list[Any]]:
    with database.snapshot(**kw) as snapshot:
        return [list(row) for row in snapshot.execute_sql(sql)]


def _insert(database: Any, ident: int) -> None:
    with database.batch() as batch:
        batch.insert("Accounts", ("Id", "Owner", "Balance"), [(ident, "o", 1)])


def _count(transaction: Any) -> int:
    [[count]] = list(transaction.execute_sql("SELECT COUNT(*) FROM Accounts"))
    return int(count)


def _creates(server: LocalSpanner) -> int:
    return server.request_counts().get("CreateSession", 0)


def _client_threads() -> int:
    """Threads alive, but for the in-process server's workers (its executor starts one more
    whenever a request arrives before the last worker is idle again)."""
    return sum(not t.name.startswith("spanner_") for t in threading.enumerate())


# -- a drop-in for the client's own session manager ------------------------------------------


def test_every_operation_of_the_database_runs_on_the_one_multiplexed_session(
    server: LocalSpanner,
) -> None:
    pool = MultiplexedPool()
    database = server.database(_db_id("every"), pool=pool)
    assert _query(database) == [[1]]
    _insert(database, 1)
    assert database.run_in_transaction(_count) == 1
    assert database.execute_partitioned_dml("UPDATE Accounts SET Balance = 2 WHERE true") == 1
    with database.snapshot(multi_use=True) as snapshot:
        assert list(snapshot.execute_sql("SELECT Balance FROM Accounts")) == [[2]]
        assert list(snapshot.execute_sql("SELECT Id FROM Accounts")) == [[1]]
    with database.batch_snapshot() as batch_snapshot:
        assert list(batch_snapshot.execute_sql("SELECT Id FROM Accounts")) == [[1]]
    counts = server.request_counts()
    assert counts["CreateSession"] == 1
    assert "BatchCreateSessions" not in counts and "GetSession" not in counts
    assert server.multiplexed_sessions(database.name) == [pool.session_name]
    assert server.session_count(database.name) == 1  # no regular session at all
    stats = pool.get_stats()
    assert stats["generation"] == 1 and stats["sessions_created"] == 1
    assert stats["requests_served"] >= 6 and stats["fallback_sessions"] == 0


def test_the_role_comes_from_the_database(server: LocalSpanner) -> None:
    pool = MultiplexedPool()
    database = server.database(_db_id("role"), pool=pool, database_role="reader")
    assert _query(database) == [[1]]
    [session] = [
        s
        for s in server.backend.list_sessions(database.name)
        if s.name == pool.session_name  # type: ignore[attr-defined]
    ]
    assert session.creator_role == "reader"


@pytest.mark.parametrize("which", BOTH)
def test_a_pool_given_as_pool_creates_no_regular_session_unless_routed_to(
    server: LocalSpanner, which: str
) -> None:
    database = _database(server, which, _db_id("norouted"), fallback=_fixed_size_pool(which, 4))
    for i in range(3):
        assert _query(database) == [[1]]
        _insert(database, i)
    assert "BatchCreateSessions" not in server.request_counts()
    assert server.session_count(database.name) == 1


def test_operations_routed_to_regular_sessions_go_to_the_fallback(
    server: LocalSpanner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(routing.ENV_MULTIPLEXED_FOR_RW, " FALSE ")
    fallback = BurstyPool(target_size=2)
    pool = MultiplexedPool(fallback=fallback)
    database = server.database(_db_id("routed"), pool=pool)
    assert _query(database) == [[1]]
    assert fallback.get_stats()["pool_size"] == 0  # bound only when first needed
    database.run_in_transaction(lambda t: t.execute_update("DELETE FROM Accounts WHERE true"))
    assert fallback.get_stats()["pool_size"] == 1
    assert pool.get_stats()["fallback_sessions"] == 1
    assert server.session_count(database.name) == 2
    database.close()  # the fallback's regular session is deleted; the multiplexed one stays
    assert server.session_count(database.name) == 1


def test_the_fallback_is_bound_once_by_racing_requests(
    server: LocalSpanner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(routing.ENV_MULTIPLEXED, "false")  # snapshots go to regular sessions
    fallback = FixedSizePool(size=3)
    pool = MultiplexedPool(fallback=fallback)
    database = server.database(_db_id("race"), pool=pool)
    server.inject_latency(100, method="BatchCreateSessions")
    results: list[Any] = []
    run_in_threads(8, lambda _: results.append(_query(database)))
    assert results == [[[1]]] * 8
    assert server.request_counts()["BatchCreateSessions"] == 1
    assert fallback.get_stats()["pool_size"] == 3


def test_routing_reads_the_variables_as_the_client_does(monkeypatch: pytest.MonkeyPatch) -> None:
    from google.cloud.spanner_v1.database_sessions_manager import (
        DatabaseSessionsManager,
        TransactionType,
    )

    for value in ["false", " False", "FALSE ", "0", "no", "", "true", "anything"]:
        for name in routing.ENV_OF.values():
            monkeypatch.setenv(name, value)
        for kind in TransactionType:
            assert routing.uses_multiplexed(kind) == DatabaseSessionsManager._use_multiplexed(kind)
        assert set(routing.routing().values()) == {value.strip().lower() != "false"}
    assert routing.routing({}) == dict.fromkeys(routing.ENV_OF, True)


# -- ready before the first request, once per process -----------------------------------------


def test_creation_starts_at_bind_once_however_many_threads_ask(server: LocalSpanner) -> None:
    server.inject_latency(150, method="CreateSession")
    pool = MultiplexedPool()
    database = server.database(_db_id("ready"), pool=pool)
    assert eventually(lambda: _creates(server) == 1)  # started by bind, no request yet
    results: list[Any] = []
    run_in_threads(12, lambda _: results.append(_query(database)))
    assert results == [[[1]]] * 12
    assert _creates(server) == 1


def test_a_known_session_serves_the_first_request_at_once_on_a_connected_channel(
    server: LocalSpanner, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A new Database whose session is known (the process's, or a store's) makes no RPC at
    # bind, starts no creation, and its first request waits for no thread; its channel is
    # connecting already, so that request does not pay for the connection either.
    name = _db_id("known")
    assert _query(server.database(name, pool=MultiplexedPool())) == [[1]]
    requests_before = len(server.request_log())
    pool = MultiplexedPool()
    database = server.database(name, pool=pool)
    assert pool._entry.attempt is None and pool.session_name is not None
    states: list[grpc.ChannelConnectivity] = []
    channel = database.spanner_api.transport.grpc_channel
    channel.subscribe(states.append)  # watches, without asking to connect
    try:
        assert eventually(lambda: grpc.ChannelConnectivity.READY in states)
    finally:
        channel.unsubscribe(states.append)
    assert len(server.request_log()) == requests_before  # connected, yet nothing sent

    def no_waiting(*args: Any) -> None:
        raise AssertionError("the first request waited for another thread")

    monkeypatch.setattr(_maintenance, "wait", no_waiting)
    assert _query(database) == [[1]]
    assert pool.get_stats()["requests_served"] == 1


@pytest.mark.parametrize("which", BOTH)
def test_a_new_database_of_the_same_process_sends_no_create_session(
    server: LocalSpanner, which: str
) -> None:
    # The DB-API makes a Database per connection: each must not pay a CreateSession.
    name = _db_id("again")
    for _ in range(5):
        database = _database(server, which, name)
        assert _query(database) == [[1]]
        del database
    assert _creates(server) == 1


def test_a_failed_creation_is_retried_with_backoff_and_requests_see_the_error(
    server: LocalSpanner, clock: FakeClock
) -> None:
    server.inject_error("CreateSession", "UNAVAILABLE")
    pool = MultiplexedPool(clock=clock)
    database = server.database(_db_id("backoff"), pool=pool)
    for _ in range(10):
        with pytest.raises(exceptions.ServiceUnavailable):
            _query(database)
    assert _creates(server) == 1  # the clock did not move: still backing off, no new attempt
    server.clear_faults()
    clock.advance(10)
    assert _query(database) == [[1]]
    assert _creates(server) == 2
    assert pool.get_stats()["sessions_created"] == 1


def test_a_hung_server_fails_requests_after_the_deadline_never_hangs(
    server: LocalSpanner,
) -> None:
    pool = MultiplexedPool(create_timeout=0.5)
    server.freeze()
    try:
        database = server.database(_db_id("frozen"), pool=pool)
        with pytest.raises(exceptions.DeadlineExceeded):
            _query(database)
    finally:
        server.unfreeze()


# -- a lost session is replaced once for everyone ---------------------------------------------


@pytest.mark.parametrize("which", BOTH)
def test_a_lost_session_is_replaced_and_the_request_that_hit_it_goes_through(
    server: LocalSpanner, which: str
) -> None:
    database = _database(server, which, _db_id("lost"), fallback=_fixed_size_pool(which, 1))
    assert _query(database) == [[1]]
    for ident in range(3):
        server.lose_multiplexed_sessions(database.name)
        assert _query(database, "SELECT 2") == [[2]]  # single-use snapshot: sent again
        server.lose_multiplexed_sessions(database.name)
        _insert(database, ident)  # batch() commit: sent again
        server.lose_multiplexed_sessions(database.name)
        assert database.run_in_transaction(_count) == ident + 1  # started again
    assert _creates(server) == 10
    assert server.session_count(database.name) == 1  # no regular session stood in


@pytest.mark.parametrize("which", BOTH)
def test_a_user_sees_at_most_the_servers_not_found(server: LocalSpanner, which: str) -> None:
    # A multi-use snapshot began on the lost session: not sent again, but the error is the
    # server's, no regular session is made, and the next request works.
    database = _database(server, which, _db_id("seen"), fallback=_fixed_size_pool(which, 1))
    assert _query(database) == [[1]]
    server.lose_multiplexed_sessions(database.name)
    with pytest.raises(exceptions.NotFound, match="Session not found"):
        _query(database, multi_use=True)
    assert _query(database) == [[1]]
    assert server.session_count(database.name) == 1


def test_the_replacement_is_made_once_for_every_thread(server: LocalSpanner) -> None:
    pool = MultiplexedPool()
    database = server.database(_db_id("once"), pool=pool)
    assert _query(database) == [[1]]
    server.inject_latency(100, method="CreateSession")
    server.lose_multiplexed_sessions(database.name)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(3):
                assert _query(database) == [[1]]
        except BaseException as exc:
            errors.append(exc)

    run_in_threads(10, lambda _: work())
    assert errors == []
    assert _creates(server) == 2
    assert pool.get_stats()["sessions_replaced"] == 1


def test_a_late_report_about_an_older_session_changes_nothing(server: LocalSpanner) -> None:
    pool = MultiplexedPool()
    database = server.database(_db_id("late"), pool=pool)
    assert _query(database) == [[1]]
    old = pool.session_name
    server.lose_multiplexed_sessions(database.name)
    assert _query(database) == [[1]]
    new = pool.session_name
    assert new != old
    # An answer about the old session arrives late (a request still in flight on it).
    with pytest.raises(exceptions.NotFound):
        database.spanner_api.execute_sql(request={"session": old, "sql": "SELECT 1"})
    assert pool.session_name == new
    assert _query(database) == [[1]]
    assert _creates(server) == 2


def test_other_not_found_errors_keep_the_session(server: LocalSpanner) -> None:
    pool = MultiplexedPool()
    database = server.database(_db_id("table"), pool=pool)
    assert _query(database) == [[1]]
    with pytest.raises(exceptions.GoogleAPICallError), database.snapshot() as snapshot:
        list(snapshot.read("NoSuchTable", ("Id",), KeySet(all_=True)))
    assert _query(database) == [[1]]
    assert _creates(server) == 1


# -- rotation -----------------------------------------------------------------------------------


def test_rotation_makes_a_successor_while_transactions_keep_their_session(
    server: LocalSpanner, clock: FakeClock
) -> None:
    pool = MultiplexedPool(clock=clock)
    database = server.database(_db_id("rotate"), pool=pool)
    assert _query(database) == [[1]]
    old = pool.session_name
    with database.snapshot(multi_use=True) as snapshot:
        assert list(snapshot.execute_sql("SELECT 1")) == [[1]]
        assert 7 * DAY <= pool.maintain() <= 7.7 * DAY  # the next round is due at rotation
        assert pool.session_name == old
        clock.advance(7.8 * DAY)
        pool.maintain()
        assert eventually(lambda: pool.session_name != old)
        assert list(snapshot.execute_sql("SELECT 2")) == [[2]]  # still on the old session
        assert snapshot._session.name == old
    assert _query(database) == [[1]]
    assert server.multiplexed_sessions(database.name) == [old, pool.session_name] or sorted(
        server.multiplexed_sessions(database.name)
    ) == sorted([old, pool.session_name])
    stats = pool.get_stats()
    assert stats["rotations"] == 1 and stats["generation"] == 2 and stats["session_age_s"] == 0


def test_a_failed_rotation_is_retried_later(server: LocalSpanner, clock: FakeClock) -> None:
    pool = MultiplexedPool(clock=clock)
    database = server.database(_db_id("rotfail"), pool=pool)
    assert _query(database) == [[1]]
    old = pool.session_name
    server.inject_error("CreateSession", "UNAVAILABLE", count=1)
    clock.advance(8 * DAY)
    pool.maintain()
    assert eventually(lambda: server.status_counts().get(("CreateSession", "UNAVAILABLE")) == 1)
    assert eventually(lambda: pool._entry.attempt is None)
    assert pool.session_name == old
    assert _query(database) == [[1]]  # requests never noticed
    pool.maintain()
    assert _creates(server) == 2  # not again at once
    clock.advance(600)
    pool.maintain()
    assert eventually(lambda: pool.session_name != old)
    assert pool.get_stats()["rotations"] == 1


# -- lifecycle ------------------------------------------------------------------------------------


def _finishes(call: Callable[[], object], timeout: float = 5.0) -> bool:
    done = threading.Event()
    threading.Thread(target=lambda: (call(), done.set()), daemon=True).start()
    return done.wait(timeout)


@pytest.mark.parametrize("which", BOTH)
def test_database_close_does_not_wait_for_a_sleeping_thread(
    server: LocalSpanner, which: str
) -> None:
    database = _database(server, which, _db_id("close"))
    assert _query(database) == [[1]]
    assert _finishes(database.close, timeout=2.0)  # spanpool's takes milliseconds


def test_a_closed_pool_refuses_requests(server: LocalSpanner) -> None:
    pool = MultiplexedPool()
    database = server.database(_db_id("closed"), pool=pool)
    assert _query(database) == [[1]]
    with pool:
        pass
    with pytest.raises(PoolClosed):
        _query(database)


@pytest.mark.parametrize("which", BOTH)
def test_dropped_databases_are_collected_and_leave_no_thread(
    server: LocalSpanner, which: str
) -> None:
    name = _db_id("dropped")
    warm = _database(server, which, name)
    assert _query(warm) == [[1]]
    threads_before = _client_threads()
    refs = []
    for _ in range(15):
        database = _database(server, which, name)
        assert _query(database) == [[1]]
        refs.append(weakref.ref(database))
        del database
    gc.collect()
    assert [ref for ref in refs if ref() is not None] == []
    assert eventually(lambda: _client_threads() <= threads_before)


def test_one_maintenance_thread_for_every_pool_of_the_process(server: LocalSpanner) -> None:
    databases = [server.database(_db_id(f"m{i}"), pool=MultiplexedPool()) for i in range(6)]
    for database in databases:
        assert _query(database) == [[1]]
    names = [t.name for t in threading.enumerate() if t.name.startswith("spanpool-multi")]
    assert names == ["spanpool-multiplexed-maintenance"]
    for database in databases:
        database.close()
    registered = set(_maintenance.maintenance()._pools)
    assert not registered & {database._pool for database in databases}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_keeps_the_session_and_creates_nothing(server: LocalSpanner) -> None:
    name = _db_id("fork")
    pool = MultiplexedPool()
    database = server.database(name, pool=pool)
    assert _query(database) == [[1]]
    session = pool.session_name
    pid = os.fork()
    if pid == 0:  # the child reports through its exit code only, and sends no RPC
        code = 1
        try:
            again = MultiplexedPool()
            again.bind(database)  # a new pool of the same key: the session is known
            same = pool.session_name == session == again.session_name
            code = 0 if same and again._entry.attempt is None else 2
        except BaseException:
            code = 3
        finally:
            os._exit(code)
    assert wait_child(pid, timeout=60) == 0
    assert _creates(server) == 1
    assert _query(database) == [[1]]


# -- bad input ----------------------------------------------------------------------------


def test_bad_arguments_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="labels"):
        MultiplexedPool(labels={"app": "x"})
    with pytest.raises(ValueError, match="create_timeout"):
        MultiplexedPool(create_timeout=0)
    with pytest.raises(ValueError, match="rotate_after"):
        MultiplexedPool(rotate_after=-1)
    with pytest.raises(TypeError, match="store"):
        MultiplexedPool(store=object())
    with pytest.raises(TypeError, match="fallback"):
        MultiplexedPool(fallback=queue.Queue())
    with pytest.raises(TypeError, match="clock"):
        MultiplexedPool(clock=5)


def test_get_and_put_work_directly(server: LocalSpanner) -> None:
    pool = MultiplexedPool()
    server.database(_db_id("direct"), pool=pool)
    first, second = pool.get(), pool.get()  # never checked out: any number at once
    assert first is second and first.is_multiplexed
    assert list(first.execute_sql("SELECT 1")) == [[1]]
    pool.put(first)
    pool.put(second)
    with pool.session() as session:
        assert session is first
