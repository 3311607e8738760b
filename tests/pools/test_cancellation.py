"""What only the asyncio pools face: a task may be cancelled at any moment (waiting for a
session, holding one, or in the middle of a ping, a fill or a bind), and no session may be lost,
handed out twice, or left checked out for ever because of it; maintenance is a task of the
running loop.

Hand-written (the other pool tests are asyncio sources of generated blocking tests).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from google.api_core import exceptions

from spanpool import (
    AsyncBurstyPool,
    AsyncFixedSizePool,
    AsyncPingingPool,
    AsyncTransactionPingingPool,
    PoolClosed,
)
from spanpool.testing import LocalSpanner, connect_async

from ..conftest import FakeClock
from ._support_async import (
    Pools,
    answered_all,
    assert_all_idle,
    assert_at_rest,
    assert_books_match,
    eventually,
    live_names,
    maintenance_workers,
    rpcs,
    select_one,
)


async def sent(
    server: LocalSpanner, method: str, work: Coroutine[Any, Any, Any]
) -> asyncio.Task[Any]:
    """``work`` as a task, once the server has seen it send its first ``method`` request."""
    task = asyncio.create_task(work)
    assert await eventually(lambda: rpcs(server, method) > 0)
    return task


async def cancelled(task: asyncio.Task[Any]) -> None:
    """Cancel ``task``, which must end cancelled."""
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def waiting_gets(pool: Any, count: int) -> list[asyncio.Task[Any]]:
    """``count`` tasks getting a session from ``pool``, each in line before the next starts."""
    tasks = []
    for _ in range(count):
        tasks.append(asyncio.create_task(pool.get()))
        await asyncio.sleep(0)
    return tasks


async def test_a_get_abandoned_by_wait_for_leaves_no_waiter_behind(server: LocalSpanner) -> None:
    async with Pools(server) as pools:
        pool = AsyncFixedSizePool(size=1, default_timeout=30)
        await pools.bind(pool, "wait-for")
        session = await pool.get()
        for _ in range(3):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(pool.get(), 0.01)
        stats = pool.get_stats()
        assert (stats["requests_waiting"], stats["requests_cancelled"]) == (0, 3)
        await pool.put(session)
        assert await pool.get(timeout=0) is session  # not handed to a departed waiter
        await pool.put(session)


def test_start_maintenance_needs_a_running_loop_and_close_stops_it(
    server: LocalSpanner,
) -> None:
    pool = AsyncFixedSizePool(size=1)
    with pytest.raises(RuntimeError):
        pool.start_maintenance()  # no running loop here

    async def scenario() -> None:
        await connect_async(server.endpoint, "maintenance-start", pool=pool)
        pool.start_maintenance()
        pool.start_maintenance()  # once is enough
        assert len(maintenance_workers()) == 1
        await pool.close()
        assert maintenance_workers() == []

    asyncio.run(scenario())


# -- cancellation ----------------------------------------------------------------------------


STORM_POOLS: dict[str, Callable[[], Any]] = {
    "fixed": lambda: AsyncFixedSizePool(size=10, default_timeout=30),
    "fixed-checking": lambda: AsyncFixedSizePool(size=10, default_timeout=30, max_age_minutes=0),
    # Pinged all the time (by a task the storm cancels too): a session idle 1 ms is due.
    "pinging": lambda: AsyncPingingPool(size=10, default_timeout=30, ping_interval=0.001),
    "transaction-pinging": lambda: AsyncTransactionPingingPool(
        size=10, default_timeout=30, ping_interval=0.001
    ),
    "bursty": lambda: AsyncBurstyPool(target_size=10),
}


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("kind", list(STORM_POOLS))
async def test_cancellation_storm_loses_no_session(
    server: LocalSpanner, kind: str, seed: int
) -> None:
    """300 tasks on 10 sessions, held about a millisecond each; some tasks give up through
    ``wait_for``, and others are cancelled at random moments: waiting, being served, checking
    a session (``fixed-checking``), creating one (``bursty``), using one or returning one.
    A pinging pool is pinged throughout by a task that is cancelled and restarted too."""
    rng = random.Random(seed)

    async with Pools(server) as pools:
        pool = STORM_POOLS[kind]()
        database = await pools.bind(pool, "storm")
        waiting: list[asyncio.Task[Any]] = []  # tasks inside get(), oldest first
        holders: dict[str, int] = {}
        counts = {"served": 0, "gave_up": 0}

        async def use_once(me: int) -> None:
            task = asyncio.current_task()
            assert task is not None
            waiting.append(task)
            try:
                if rng.random() < 0.25:
                    timeout = rng.choice([0.0005, 0.002, 0.01])
                    session = await asyncio.wait_for(pool.get(), timeout)
                else:
                    session = await pool.get()
            except asyncio.TimeoutError:
                counts["gave_up"] += 1
                return
            finally:
                waiting.remove(task)
            holder = holders.setdefault(session.name, me)
            try:
                assert holder == me, f"{session.name} handed to {me} while {holder} held it"
                counts["served"] += 1
                if rng.random() < 0.05:
                    assert await select_one(session) == [[1]]
                else:
                    await asyncio.sleep(rng.uniform(0, 0.002))
            finally:
                if holder == me:
                    del holders[session.name]
                await pool.put(session)

        async def client(me: int) -> None:
            for _ in range(3):
                await use_once(me)

        async def pinger() -> None:
            while True:
                await pool.ping()
                await asyncio.sleep(0.001)

        pingers = [asyncio.create_task(pinger())] if kind.endswith("pinging") else []
        tasks = [asyncio.create_task(client(n)) for n in range(300)]
        for _ in range(120):
            if all(task.done() for task in tasks):
                break
            if pingers and rng.random() < 0.2:  # a ping cancelled, in flight or not
                pingers[-1].cancel()
                pingers.append(asyncio.create_task(pinger()))
            # Mostly the oldest waiters, who are next to be served: cancelling one just
            # as a returned session is handed to it is the race under test.
            if waiting and rng.random() < 0.7:
                rng.choice(waiting[:3]).cancel()
            else:
                rng.choice(tasks).cancel()
            for _ in range(rng.randrange(4)):
                await asyncio.sleep(0)
            if rng.random() < 0.3:
                await asyncio.sleep(0.001)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        # Sessions are idle now, so pings are in flight most of the time: cancel some more.
        for _ in range(10 if pingers else 0):
            await asyncio.sleep(rng.uniform(0, 0.003))
            pingers[-1].cancel()
            pingers.append(asyncio.create_task(pinger()))
        if pingers:
            assert await eventually(lambda: pool.get_stats()["pings"] > 0)
        for task in pingers:
            task.cancel()
        pinged = await asyncio.gather(*pingers, return_exceptions=True)

        unexpected = [
            r
            for r in results + pinged
            if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)
        ]
        assert unexpected == []
        assert any(isinstance(r, asyncio.CancelledError) for r in results)
        assert counts["served"] > 0 and holders == {}
        if kind == "bursty":  # it never waits: a task is cancelled holding or creating one
            # Creations and deletions whose task was cancelled finish in the background.
            def settled() -> bool:
                stats = pool.get_stats()
                size = stats["pool_size"]
                busy = stats["pool_in_use"] + stats["pool_creating"]
                return busy == 0 and server.session_count(database.name) == size

            assert await eventually(settled), pool.get_stats()
            assert_all_idle(pool, pool.get_stats()["pool_size"])
            assert 0 < pool.get_stats()["pool_size"] <= 10
        else:
            assert counts["gave_up"] > 0
            assert pool.get_stats()["requests_cancelled"] > 0
            assert_all_idle(pool, 10)
            assert server.session_count(database.name) == 10
            # And every session still works, each handed out once.
            held = [await pool.get(timeout=0) for _ in range(10)]
            assert {s.name for s in held} == live_names(server, database.name)
            for session in held:
                assert await select_one(session) == [[1]]
                await pool.put(session)


async def test_a_session_handed_to_a_task_cancelled_in_that_instant_goes_to_the_next_waiter(
    server: LocalSpanner,
) -> None:
    async with Pools(server) as pools:
        pool = AsyncFixedSizePool(size=1, default_timeout=30)
        database = await pools.bind(pool, "race")
        held = await pool.get()
        unlucky, next_in_line = await waiting_gets(pool, 2)
        assert pool.get_stats()["requests_waiting"] == 2

        await pool.put(held)  # handed to `unlucky`, which has not run since ...
        stats = pool.get_stats()
        assert (stats["pool_in_use"], stats["requests_waiting"]) == (1, 1)
        await cancelled(unlucky)  # ... and is cancelled before it does

        assert await asyncio.wait_for(next_in_line, 5) is held
        stats = pool.get_stats()
        assert (stats["pool_in_use"], stats["requests_waiting"]) == (1, 0)
        assert stats["requests_cancelled"] == 1
        await pool.put(held)
        assert_all_idle(pool, 1)
        assert server.session_count(database.name) == 1


async def test_a_replacement_granted_to_a_task_cancelled_in_that_instant_goes_to_the_next_waiter(
    server: LocalSpanner,
) -> None:
    async with Pools(server) as pools:
        pool = AsyncFixedSizePool(size=1, default_timeout=30)
        database = await pools.bind(pool, "race-permit")
        unlucky = next_in_line = None
        with pytest.raises(exceptions.NotFound):
            async with pool.session() as session:
                lost = session.name
                unlucky, next_in_line = await waiting_gets(pool, 2)
                server.expire_sessions(1.0, database.name)
                await select_one(session)
        # The lost session's place went to `unlucky`, as the right to create a session ...
        assert unlucky is not None and next_in_line is not None
        assert pool.get_stats()["pool_creating"] == 1
        await cancelled(unlucky)  # ... and it is cancelled before it could

        replacement = await asyncio.wait_for(next_in_line, 5)
        assert replacement.name != lost
        assert await select_one(replacement) == [[1]]
        await pool.put(replacement)
        assert_all_idle(pool, 1)
        assert server.session_count(database.name) == 1


async def test_cancelling_a_get_while_its_session_is_created_loses_nothing(
    server: LocalSpanner,
) -> None:
    async with Pools(server) as pools:
        pool = AsyncBurstyPool(target_size=2)
        database = await pools.bind(pool, "cancel-create")
        server.inject_latency(100, "CreateSession")
        getting = asyncio.create_task(pool.get())
        assert await eventually(lambda: rpcs(server, "CreateSession") == 1)

        await cancelled(getting)

        # The server creates the session anyway: the pool must not lose track of it.
        assert await eventually(lambda: answered_all(server, "CreateSession"))
        assert await eventually(lambda: pool.get_stats()["pool_available"] == 1)
        assert_all_idle(pool, 1)
        assert server.session_count(database.name) == 1
        server.clear_faults()
        session = await pool.get()
        assert rpcs(server, "CreateSession") == 1  # the one created for the cancelled get
        await pool.put(session)


async def test_cancelling_ping_leaves_nothing_checked_out(
    server: LocalSpanner, clock: FakeClock
) -> None:
    async with Pools(server) as pools:
        pool = AsyncPingingPool(size=4, ping_interval=60, clock=clock)
        database = await pools.bind(pool, "cancel-ping")
        server.inject_latency(200, "ExecuteSql")
        clock.advance(61)
        pinging = await sent(server, "ExecuteSql", pool.ping())
        assert pool.get_stats()["pool_in_maintenance"] > 0

        await cancelled(pinging)

        assert_at_rest(pool, server, database.name, 4)
        server.clear_faults()
        await pool.ping()  # none was refreshed by the cancelled ping: all are still due
        assert pool.get_stats()["pings"] == 4


async def test_cancelling_ping_while_it_deletes_failed_sessions_leaves_nothing_checked_out(
    server: LocalSpanner, clock: FakeClock
) -> None:
    async with Pools(server) as pools:
        pool = AsyncPingingPool(size=4, ping_interval=60, clock=clock)
        database = await pools.bind(pool, "cancel-ping-delete")
        server.inject_error("ExecuteSql", "INTERNAL")
        server.inject_latency(200, "DeleteSession")
        clock.advance(61)
        pinging = await sent(server, "DeleteSession", pool.ping())

        await cancelled(pinging)

        stats = pool.get_stats()
        assert (stats["pool_in_use"], stats["pool_in_maintenance"]) == (0, 0), stats
        server.clear_faults()
        await pool.fill()
        assert_all_idle(pool, 4)
        assert await eventually(lambda: server.session_count(database.name) == 4)
        assert_books_match(pool, server, database.name)


async def test_cancelling_begin_pending_transactions_leaves_nothing_checked_out(
    server: LocalSpanner,
) -> None:
    async with Pools(server) as pools:
        pool = AsyncTransactionPingingPool(size=3)
        database = await pools.bind(pool, "cancel-begin")
        held = [await pool.get() for _ in range(3)]
        for session in held:
            session.transaction()  # takes the begun transaction: the session is pending
            await pool.put(session)
        server.reset_counts()
        server.inject_latency(200, "BeginTransaction")
        beginning = await sent(server, "BeginTransaction", pool.begin_pending_transactions())
        assert pool.get_stats()["pool_in_maintenance"] > 0

        await cancelled(beginning)

        assert_at_rest(pool, server, database.name, 3)
        server.clear_faults()
        assert await pool.begin_pending_transactions() == 3  # still pending, all three


async def test_cancelling_maintain_leaves_nothing_checked_out(
    server: LocalSpanner, clock: FakeClock
) -> None:
    async with Pools(server) as pools:
        pool = AsyncPingingPool(size=4, ping_interval=60, clock=clock)
        database = await pools.bind(pool, "cancel-maintain")
        server.expire_sessions(0.5, database.name)
        server.inject_latency(200, "ExecuteSql")
        clock.advance(61)
        maintaining = await sent(server, "ExecuteSql", pool.maintain())

        await cancelled(maintaining)

        stats = pool.get_stats()
        assert (stats["pool_in_use"], stats["pool_in_maintenance"]) == (0, 0), stats
        server.clear_faults()
        for _ in range(8):  # a few rounds ping everything due and replace the dropped
            await pool.maintain()
        assert_all_idle(pool, 4)
        assert server.session_count(database.name) == 4
        held = [await pool.get(timeout=0) for _ in range(4)]
        for session in held:
            assert await select_one(session) == [[1]]
            await pool.put(session)


@pytest.mark.parametrize("size", [3, 250])
async def test_cancelling_bind_loses_no_session(server: LocalSpanner, size: int) -> None:
    async with Pools(server) as pools:
        database_name = server.database_path("cancel-bind")
        server.inject_latency(200, "BatchCreateSessions")
        pool = AsyncFixedSizePool(size=size)
        binding = await sent(server, "BatchCreateSessions", pools.bind(pool, "cancel-bind"))

        await cancelled(binding)

        stats = pool.get_stats()
        assert (stats["pool_in_use"], stats["pool_in_maintenance"]) == (0, 0), stats
        # The creations in flight go on: their sessions join the pool rather than being
        # left on the server, unknown to it.
        assert await eventually(lambda: pool.get_stats()["pool_creating"] == 0)
        assert await eventually(lambda: answered_all(server, "BatchCreateSessions"))
        assert pool.get_stats()["pool_size"] > 0
        assert_books_match(pool, server, database_name)
        server.clear_faults()
        await pool.fill()
        assert_all_idle(pool, size)
        assert server.session_count(database_name) == size


async def test_cancelling_close_still_deletes_every_session(server: LocalSpanner) -> None:
    pool = AsyncFixedSizePool(size=20)  # more than are deleted at once
    database = await connect_async(server.endpoint, "cancel-close", pool=pool)
    server.inject_latency(200, "DeleteSession")
    closing = await sent(server, "DeleteSession", pool.close())

    await cancelled(closing)

    with pytest.raises(PoolClosed):
        await pool.get()
    assert await eventually(lambda: server.session_count(database.name) == 0)
    server.clear_faults()


async def test_a_session_whose_request_was_cut_by_a_cancellation_goes_to_no_other_task(
    server: LocalSpanner,
) -> None:
    async with Pools(server) as pools:
        pool = AsyncFixedSizePool(size=1, default_timeout=30)
        database = await pools.bind(pool, "in-flight")
        first = live_names(server, database.name)
        server.inject_latency(300, "ExecuteStreamingSql")  # the query is still on the server

        async def query() -> None:
            async with pool.session() as session:
                await select_one(session)

        holder = asyncio.create_task(query())
        assert await eventually(lambda: rpcs(server, "ExecuteStreamingSql") == 1)
        waiter = asyncio.create_task(pool.get())
        assert await eventually(lambda: pool.get_stats()["requests_waiting"] == 1)

        await cancelled(holder)

        # The waiter gets a new session, not the one the cancelled query may still be using.
        session = await asyncio.wait_for(waiter, 10)
        assert session.name not in first
        server.clear_faults()
        assert await select_one(session) == [[1]]
        await pool.put(session)
        assert await eventually(lambda: live_names(server, database.name) == {session.name})
        assert pool.get_stats()["sessions_replaced"] == 1
        assert_all_idle(pool, 1)


async def test_a_cancelled_holder_that_was_not_in_a_request_returns_its_session(
    server: LocalSpanner,
) -> None:
    async with Pools(server) as pools:
        pool = AsyncFixedSizePool(size=1, default_timeout=30)
        database = await pools.bind(pool, "idle-holder")
        first = live_names(server, database.name)
        started = asyncio.Event()

        async def hold() -> None:
            async with pool.session() as session:
                assert await select_one(session) == [[1]]
                started.set()
                await asyncio.sleep(60)

        holder = asyncio.create_task(hold())
        await asyncio.wait_for(started.wait(), 10)
        await cancelled(holder)
        session = await pool.get(timeout=0)
        assert {session.name} == first  # nothing was in flight: no need to replace it
        await pool.put(session)
        assert pool.get_stats()["sessions_replaced"] == 0
