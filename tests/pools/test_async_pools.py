"""spanpool's asyncio pools against LocalSpanner, through the unmodified official asyncio client.

The behaviours of test_pools.py and test_pool_faults.py, for the asyncio twins, and what only
asyncio adds: a task may be cancelled at any moment (waiting for a session, holding one, or in
the middle of a ping, a fill or a bind), and no session may be lost, handed out twice, or left
checked out for ever because of it. Each test runs its scenario with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import random
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

import pytest
from google.api_core import exceptions
from google.cloud import spanner_v1

import spanpool
from spanpool import (
    AsyncAbstractSessionPool,
    AsyncBurstyPool,
    AsyncFixedSizePool,
    AsyncPingingPool,
    AsyncSessionCheckout,
    AsyncTransactionPingingPool,
    NotCheckedOut,
    PoolClosed,
    PoolForked,
    PoolFull,
    PoolTimeout,
    SessionLeakWarning,
)
from spanpool.testing import LocalSpanner, connect_async

from ..conftest import ACCOUNTS_DDL, FakeClock

T = TypeVar("T")

POOLS = [AsyncBurstyPool, AsyncFixedSizePool, AsyncPingingPool, AsyncTransactionPingingPool]
SIZED_POOLS = [AsyncFixedSizePool, AsyncPingingPool, AsyncTransactionPingingPool]


# -- helpers ---------------------------------------------------------------------------------


def run(scenario: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run``, with a deadline: a scenario stuck for ever fails instead of hanging."""

    async def bounded() -> T:
        return await asyncio.wait_for(scenario, 60)

    return asyncio.run(bounded())


class Pools:
    """Binds pools to databases of the test's server; at the end, clears the server's faults
    and closes every pool. Use it as ``async with Pools(server) as pools:``."""

    def __init__(self, server: LocalSpanner) -> None:
        self.server = server
        self._pools: list[Any] = []

    async def bind(self, pool: Any, database_id: str, **options: Any) -> Any:
        self._pools.append(pool)
        return await connect_async(self.server.endpoint, database_id, pool=pool, **options)

    async def __aenter__(self) -> Pools:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.clear_faults()
        for pool in self._pools:
            await pool.close()


def make(cls: type, **kw: Any) -> Any:
    if cls is AsyncBurstyPool:
        kw = {"target_size": kw.pop("size", 10), **kw}
    return cls(**kw)


def assert_books_match(pool: Any, server: LocalSpanner, database_name: str) -> None:
    """The pool counts exactly the sessions the server has (or is creating) for it."""
    stats = pool.get_stats()
    assert stats["pool_size"] + stats["pool_creating"] == server.session_count(database_name), stats


def assert_all_idle(pool: Any, size: int) -> None:
    stats = pool.get_stats()
    busy = (
        stats["pool_in_use"],
        stats["pool_in_maintenance"],
        stats["pool_creating"],
        stats["requests_waiting"],
    )
    assert busy == (0, 0, 0, 0), stats
    assert stats["pool_available"] == stats["pool_size"] == size, stats


def live_names(server: LocalSpanner, database_name: str) -> set[str]:
    return {session.name for session in server.backend.list_sessions(database_name)}


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition``, letting other tasks run, until it holds or ``timeout`` real
    seconds pass (for what happens in another thread: the server, or a background task)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.002)
    return True


def wait_child(pid: int, timeout: float = 20.0) -> int:
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


def rpcs(server: LocalSpanner, method: str) -> int:
    return server.request_counts().get(method, 0)


def answered_all(server: LocalSpanner, method: str) -> bool:
    """The server has finished every call of ``method`` it received, even those whose caller
    went away (it still does the work: creates the session, deletes it)."""
    answered = sum(1 for record in server.request_log() if record.method == method)
    return answered == rpcs(server, method)


async def select_one(session: Any) -> list[list[Any]]:
    results = await session.snapshot().execute_sql("SELECT 1")
    return [list(row) async for row in results]


async def insert(transaction: Any, account_id: int) -> int:
    return int(
        await transaction.execute_update(
            f"INSERT INTO Accounts (Id, Owner, Balance) VALUES ({account_id}, 'owner', 100)"
        )
    )


async def use(database: Any, rounds: int, first_id: int = 0) -> None:
    """Snapshots and read-write transactions through the official asyncio ``Database``."""
    for i in range(first_id, first_id + rounds):
        async with database.snapshot() as snapshot:
            assert [list(row) async for row in await snapshot.execute_sql("SELECT 1")] == [[1]]
        assert await database.run_in_transaction(insert, i) == 1


async def count_accounts(database: Any) -> int:
    async with database.snapshot() as snapshot:
        rows = [
            list(row) async for row in await snapshot.execute_sql("SELECT COUNT(*) FROM Accounts")
        ]
    return int(rows[0][0])


# -- drop-in use through the official asyncio Database ------------------------------------------


@pytest.mark.parametrize("cls", POOLS, ids=lambda c: c.__name__)
def test_drop_in_for_the_official_async_database_any_number_of_uses(
    server: LocalSpanner, regular_sessions: None, cls: type
) -> None:
    async def scenario() -> None:
        pool = make(cls, size=3, default_timeout=30) if cls is not AsyncBurstyPool else make(cls)
        database = await connect_async(server.endpoint, f"dropin{cls.__name__.lower()}", pool)
        await use(database, 4)
        # More tasks than sessions, each with its own snapshots and transactions.
        await asyncio.gather(*(use(database, 3, first_id=100 * (n + 1)) for n in range(5)))
        assert await count_accounts(database) == 4 + 5 * 3
        stats = pool.get_stats()
        assert (stats["pool_in_use"], stats["requests_waiting"]) == (0, 0)
        assert stats["requests_num"] > 0  # the Database really used the pool
        await pool.close()
        assert server.session_count(database.name) == 0

    run(scenario())


def test_the_official_async_fixed_size_pool_breaks_when_a_session_is_reused(
    server: LocalSpanner, regular_sessions: None
) -> None:
    # What spanpool's AsyncFixedSizePool fixes: in 3.71 a session used by a query comes back
    # with a naive last-use time, which the official pool compares with an aware one.
    async def scenario() -> None:
        pool = spanner_v1.AsyncFixedSizePool(size=2)
        database = await connect_async(server.endpoint, "officialfixed", pool)
        with pytest.raises(TypeError, match="offset-naive and offset-aware"):
            await use(database, 3)

    run(scenario())


@pytest.mark.parametrize("cls", POOLS, ids=lambda c: c.__name__)
def test_no_rpc_on_a_warm_checkout(server: LocalSpanner, cls: type) -> None:
    async def scenario() -> None:
        async with Pools(server) as pools:
            pool = make(cls, size=2)
            await pools.bind(pool, f"warm{cls.__name__.lower()}")
            await pool.put(await pool.get())  # a BurstyPool creates its first session here
            server.reset_counts()
            for _ in range(50):
                await pool.put(await pool.get())
            assert server.request_counts() == {}

    run(scenario())


@pytest.mark.parametrize("cls", POOLS, ids=lambda c: c.__name__)
def test_labels_and_role_are_sent_on_every_creation_path(
    server: LocalSpanner, clock: FakeClock, cls: type
) -> None:
    labels = {"app": "billing", "tier": "gold"}

    async def scenario() -> None:
        async with Pools(server) as pools:
            pool = make(cls, size=2, labels=labels, database_role="auditor", clock=clock)
            database = await pools.bind(pool, f"labels{cls.__name__.lower()}")  # batch
            held = [await pool.get() for _ in range(2)]
            # A session deleted while checked out is replaced by the next get (CreateSession).
            await held.pop().delete()
            held.append(await pool.get())
            assert rpcs(server, "CreateSession") >= 1
            if cls is not AsyncBurstyPool:
                for session in held:
                    await pool.put(session)
                held = []
                # Sessions the server dropped are replaced by a ping (BatchCreateSessions).
                server.expire_sessions(1.0, database.name)
                clock.advance(3600)
                server.reset_counts()
                await pool.ping()
                assert rpcs(server, "BatchCreateSessions") >= 1
            sessions = server.backend.list_sessions(database.name)
            assert len(sessions) == 2
            assert [(s.labels, s.creator_role) for s in sessions] == [(labels, "auditor")] * 2
            for session in held:
                await pool.put(session)

    run(scenario())


def test_bind_creates_exactly_size_sessions_in_capped_batches() -> None:
    async def scenario(server: LocalSpanner) -> None:
        pool = AsyncFixedSizePool(size=250)
        database = await connect_async(server.endpoint, "bind", pool)
        assert server.session_count(database.name) == 250
        calls = server.request_counts()["BatchCreateSessions"]
        assert 36 <= calls <= 40  # 250 / 7, in 3 groups of 100 asked for concurrently
        assert pool.get_stats()["pool_available"] == 250
        await pool.close()
        assert server.session_count(database.name) == 0

    with LocalSpanner(max_sessions_per_batch=7) as server:
        run(scenario(server))


# -- waiting, timeouts, misuse ---------------------------------------------------------------


def test_waiters_are_served_first_come_first_served(server: LocalSpanner) -> None:
    async def scenario() -> None:
        async with Pools(server) as pools:
            pool = AsyncFixedSizePool(size=1, default_timeout=30)
            await pools.bind(pool, "fifo")
            held = await pool.get()
            order: list[int] = []

            async def wait(n: int) -> None:
                session = await pool.get()
                order.append(n)
                await asyncio.sleep(0)
                await pool.put(session)

            tasks = []
            for n in range(5):
                tasks.append(asyncio.create_task(wait(n)))
                # The next waiter starts only once this one is queued.
                assert await eventually(lambda n=n: pool.get_stats()["requests_waiting"] == n + 1)
            await pool.put(held)
            await asyncio.gather(*tasks)
            assert order == [0, 1, 2, 3, 4]

    run(scenario())


def test_get_times_out_with_an_error_that_is_queue_empty(server: LocalSpanner) -> None:
    async def scenario() -> None:
        async with Pools(server) as pools:
            pool = AsyncFixedSizePool(size=1, default_timeout=0.05)
            await pools.bind(pool, "timeout")
            session = await pool.get()
            with pytest.raises(queue.Empty) as info:
                await pool.get()
            assert isinstance(info.value, PoolTimeout)
            assert "0.05" in str(info.value)
            with pytest.raises(PoolTimeout):
                await pool.get(timeout=0)
            stats = pool.get_stats()
            assert (stats["requests_timeouts"], stats["requests_waiting"]) == (2, 0)
            await pool.put(session)
            assert_all_idle(pool, 1)

    run(scenario())


def test_a_get_abandoned_by_wait_for_leaves_no_waiter_behind(server: LocalSpanner) -> None:
    async def scenario() -> None:
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

    run(scenario())


def test_foreign_double_and_closed_use_are_refused(server: LocalSpanner) -> None:
    async def scenario() -> None:
        async with Pools(server) as pools:
            pool = AsyncFixedSizePool(size=2)
            other = AsyncFixedSizePool(size=1)
            await pools.bind(pool, "mine")
            other_db = await pools.bind(other, "theirs")
            session = await pool.get()
            await pool.put(session)
            with pytest.raises(NotCheckedOut, match="not checked out"):
                await pool.put(session)  # twice
            stranger = await other.get()
            with pytest.raises(NotCheckedOut, match=other_db.name):
                await pool.put(stranger)
            loose = other_db.session()
            await loose.create()
            with pytest.raises(NotCheckedOut):
                await pool.put(loose)
            await loose.delete()
            assert_all_idle(pool, 2)  # nothing changed
            await other.put(stranger)
            await pool.close()
            with pytest.raises(PoolClosed):
                await pool.get()
            with pytest.raises(PoolClosed):
                async with pool.session():
                    pass

    run(scenario())


def test_put_on_a_full_pool_raises_queue_full(server: LocalSpanner) -> None:
    async def scenario() -> None:
        async with Pools(server) as pools:
            pool = AsyncFixedSizePool(size=1)
            database = await pools.bind(pool, "full")
            extra = pool._new_session()
            await extra.create()
            with pytest.raises(queue.Full) as info:
                await pool.put(extra)
            assert isinstance(info.value, PoolFull)
            assert_all_idle(pool, 1)
            await extra.delete()
            assert server.session_count(database.name) == 1

    run(scenario())


def test_bursty_pool_creates_when_empty_and_deletes_when_full(server: LocalSpanner) -> None:
    async def scenario() -> None:
        async with Pools(server) as pools:
            pool = AsyncBurstyPool(target_size=2)
            database = await pools.bind(pool, "bursty")
            assert server.session_count(database.name) == 0
            held = [await pool.get() for _ in range(3)]
            assert server.session_count(database.name) == 3
            assert rpcs(server, "CreateSession") == 3
            for session in held:
                await pool.put(session)
            assert server.session_count(database.name) == 2
            stats = pool.get_stats()
            assert (stats["sessions_deleted"], stats["pool_available"]) == (1, 2)

    run(scenario())


# -- a custom pool, checkouts ------------------------------------------------------------------


class ListPool(AsyncAbstractSessionPool):
    """The custom pool of the documentation: a list, sessions created on demand."""

    def __init__(self) -> None:
        super().__init__(labels={"custom": "yes"})
        self.sessions: list[Any] = []

    async def bind(self, database: Any) -> None:
        self._database = database

    async def get(self, *args: Any, **kwargs: Any) -> Any:
        if self.sessions:
            return self.sessions.pop()
        session = self._new_session()
        await session.create()
        return session

    async def put(self, session: Any) -> None:
        self.sessions.append(session)

    async def clear(self) -> None:
        while self.sessions:
            await self.sessions.pop().delete()


def test_a_custom_pool_works_with_the_official_async_database(
    server: LocalSpanner, regular_sessions: None
) -> None:
    async def scenario() -> None:
        pool = ListPool()
        database = await connect_async(server.endpoint, "custom", pool)
        await use(database, 3)
        assert len(pool.sessions) == 1
        assert server.session_labels(database.name) == [{"custom": "yes"}]
        async with AsyncSessionCheckout(pool) as session:
            assert await select_one(session) == [[1]]
            assert pool.sessions == []
        assert len(pool.sessions) == 1
        await pool.clear()
        assert server.session_count(database.name) == 0

    run(scenario())


@pytest.mark.parametrize("cls", POOLS, ids=lambda c: c.__name__)
def test_session_checkout_returns_the_session_even_when_the_block_fails(
    server: LocalSpanner, cls: type
) -> None:
    async def scenario() -> None:
        async with Pools(server) as pools:
            pool = make(cls, size=1)
            database = await pools.bind(pool, "checkout")
            with pytest.raises(RuntimeError, match="boom"):
                async with pool.session() as session:
                    assert await select_one(session) == [[1]]
                    raise RuntimeError("boom")
            assert_all_idle(pool, 1)
            assert_books_match(pool, server, database.name)

    run(scenario())


# -- TransactionPingingPool, stats, order ------------------------------------------------------


def test_transaction_pinging_pool_hands_out_begun_transactions(server: LocalSpanner) -> None:
    async def scenario() -> None:
        async with Pools(server) as pools:
            pool = AsyncTransactionPingingPool(size=2)
            database = await pools.bind(pool, "txpool")
            assert rpcs(server, "BeginTransaction") == 2
            session = await pool.get()
            transaction = session.transaction()
            begun = transaction._transaction_id
            assert begun is not None  # begun before it was handed out
            server.reset_counts()
            transaction.insert("Accounts", ("Id", "Owner", "Balance"), [(1, "a", 5)])
            await transaction.commit()
            # One round trip: the Commit, in the transaction the pool began; no new Begin.
            assert server.request_counts() == {"Commit": 1}
            (commit,) = [r for r in server.request_log() if r.method == "Commit"]
            assert (commit.target, commit.code) == (session.name, "OK")
            await pool.put(session)
            assert await pool.begin_pending_transactions() == 1
            assert await pool.begin_pending_transactions() == 0
            assert await count_accounts(database) == 1
            assert_all_idle(pool, 2)

    run(scenario())


def test_stats_have_the_documented_keys(server: LocalSpanner) -> None:
    async def scenario() -> None:
        async with Pools(server) as pools:
            pool = AsyncPingingPool(size=2)
            await pools.bind(pool, "stats")
            await pool.put(await pool.get())
            stats = pool.get_stats()
            for key in (
                "pool_max",
                "pool_size",
                "pool_available",
                "pool_in_use",
                "requests_waiting",
                "requests_num",
                "requests_wait_ms",
                "requests_timeouts",
                "requests_cancelled",
                "sessions_created",
                "sessions_deleted",
                "sessions_replaced",
                "pings",
            ):
                assert key in stats, key
            assert stats["pool_max"] == 2 and stats["sessions_created"] == 2
            assert stats["requests_num"] == 1
            assert pool.pop_stats()["requests_num"] == 1
            assert pool.get_stats()["requests_num"] == 0

    run(scenario())


def test_pinging_pool_hands_out_the_least_recently_used_first(
    server: LocalSpanner, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with Pools(server) as pools:
            lru = AsyncPingingPool(size=3, clock=clock)
            lifo = AsyncFixedSizePool(size=3, clock=clock)
            await pools.bind(lru, "lru")
            await pools.bind(lifo, "lifo")
            for pool, expected in ((lru, [1, 0, 2]), (lifo, [2, 0, 1])):
                a, b, c = [await pool.get() for _ in range(3)]
                for session in (b, a, c):  # b is returned first: the least recently used
                    clock.advance(1)
                    await pool.put(session)
                got = [await pool.get() for _ in range(3)]
                assert got == [(a, b, c)[i] for i in expected]
                for session in got:
                    await pool.put(session)

    run(scenario())


# -- pings and dropped sessions ----------------------------------------------------------------


def test_ping_refreshes_only_the_sessions_that_are_due(
    server: LocalSpanner, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with Pools(server) as pools:
            pool = AsyncPingingPool(size=4, ping_interval=60, clock=clock)
            database = await pools.bind(pool, "ping-due")
            clock.advance(50)
            recent = [await pool.get() for _ in range(2)]
            for session in recent:
                await pool.put(session)
            clock.advance(20)  # idle for 70 s: the two others; for 20 s: these two
            server.reset_counts()

            await pool.ping()

            assert server.request_counts() == {"ExecuteSql": 2}
            pinged = {r.target for r in server.request_log()}
            assert pinged == live_names(server, database.name) - {s.name for s in recent}
            assert pool.get_stats()["pings"] == 2

            clock.advance(41)  # now the two used at 50 s are due, the pinged ones are not
            server.reset_counts()
            await pool.ping()
            assert {r.target for r in server.request_log()} == {s.name for s in recent}
            assert_all_idle(pool, 4)

    run(scenario())


def test_ping_replaces_the_sessions_the_server_dropped(
    server: LocalSpanner, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with Pools(server) as pools:
            pool = AsyncPingingPool(size=4, ping_interval=60, clock=clock)
            database = await pools.bind(pool, "dropped-ping")
            before = live_names(server, database.name)
            assert server.expire_sessions(0.5, database.name) == 2
            dropped = before - live_names(server, database.name)
            clock.advance(61)

            await pool.ping()

            stats = pool.get_stats()
            assert (stats["pings"], stats["pings_failed"], stats["sessions_replaced"]) == (4, 2, 2)
            assert server.session_count(database.name) == 4
            assert_all_idle(pool, 4)
            held = [await pool.get(timeout=0) for _ in range(4)]
            names = {session.name for session in held}
            assert len(names) == 4 and not names & dropped
            for session in held:
                await pool.put(session)

    run(scenario())


def test_fixed_pool_checking_every_time_replaces_dropped_sessions(server: LocalSpanner) -> None:
    async def scenario() -> None:
        async with Pools(server) as pools:
            pool = AsyncFixedSizePool(size=4, max_age_minutes=0)
            database = await pools.bind(pool, "dropped")
            dropped = live_names(server, database.name)
            assert server.expire_sessions(1.0, database.name) == 4

            held = [await pool.get(timeout=5) for _ in range(4)]

            names = {session.name for session in held}
            assert len(names) == 4 and not names & dropped
            assert names == live_names(server, database.name)
            assert pool.get_stats()["sessions_replaced"] == 4
            assert_books_match(pool, server, database.name)
            for session in held:
                await pool.put(session)

    run(scenario())


def test_get_is_served_while_a_ping_is_in_flight(server: LocalSpanner, clock: FakeClock) -> None:
    async def scenario() -> None:
        async with Pools(server) as pools:
            pool = AsyncPingingPool(size=4, ping_interval=60, clock=clock)
            database = await pools.bind(pool, "ping-get")
            server.inject_latency(200, "ExecuteSql")
            clock.advance(61)
            pinging = asyncio.create_task(pool.ping())
            assert await eventually(lambda: rpcs(server, "ExecuteSql") > 0)

            session = await pool.get(timeout=0)  # no waiting for the ping

            assert pool.get_stats()["pool_in_maintenance"] > 0  # still in flight
            await pool.put(session)
            await pinging
            stats = pool.get_stats()
            assert stats["pings"] >= 3
            assert_all_idle(pool, 4)
            assert_books_match(pool, server, database.name)

    run(scenario())


# -- RPC failures lose no session ------------------------------------------------------------


@pytest.mark.parametrize("size", [3, 250])
def test_failed_bind_keeps_what_was_created_and_fill_completes_the_pool(
    server: LocalSpanner, size: int
) -> None:
    async def scenario() -> None:
        async with Pools(server) as pools:
            database_name = server.database_path("bind")
            server.inject_error("BatchCreateSessions", "INTERNAL", count=1)
            pool = AsyncFixedSizePool(size=size)

            with pytest.raises(exceptions.InternalServerError):
                await pools.bind(pool, "bind")

            stats = pool.get_stats()
            assert stats["pool_creating"] == 0
            assert stats["pool_size"] == server.session_count(database_name)
            assert stats["pool_size"] in ({0} if size <= 100 else {size - 100, size - 50})
            assert stats["sessions_create_failed"] == size - stats["pool_size"]

            assert await pool.fill() == size - stats["pool_size"]
            assert_all_idle(pool, size)
            assert_books_match(pool, server, database_name)

    run(scenario())


@pytest.mark.parametrize(("code", "get_fails"), [("INTERNAL", True), ("UNAVAILABLE", False)])
def test_failed_session_creation_on_get_loses_nothing(
    server: LocalSpanner, code: str, get_fails: bool
) -> None:
    async def scenario() -> None:
        async with Pools(server) as pools:
            pool = AsyncBurstyPool(target_size=2)
            database = await pools.bind(pool, "bursty")
            server.inject_error("CreateSession", code, count=1)

            if get_fails:
                with pytest.raises(exceptions.InternalServerError):
                    await pool.get()
                stats = pool.get_stats()
                failed = (
                    stats["pool_size"],
                    stats["pool_creating"],
                    stats["sessions_create_failed"],
                )
                assert failed == (0, 0, 1)
                assert_books_match(pool, server, database.name)

            # UNAVAILABLE is retried by the client, so the first get already succeeds.
            session = await pool.get()
            assert rpcs(server, "CreateSession") == 2
            assert session.name in live_names(server, database.name)
            assert_books_match(pool, server, database.name)
            await pool.put(session)
            assert_all_idle(pool, 1)
            assert_books_match(pool, server, database.name)

    run(scenario())


def test_failed_freshness_check_puts_the_session_back(server: LocalSpanner) -> None:
    async def scenario() -> None:
        async with Pools(server) as pools:
            pool = AsyncFixedSizePool(size=2, max_age_minutes=0)
            database = await pools.bind(pool, "check")
            server.inject_error("GetSession", "INTERNAL", count=1)

            with pytest.raises(exceptions.InternalServerError):
                await pool.get(timeout=1)

            assert_all_idle(pool, 2)
            session = await pool.get(timeout=1)
            assert session.name in live_names(server, database.name)
            await pool.put(session)
            assert_books_match(pool, server, database.name)

    run(scenario())


@pytest.mark.parametrize(("code", "lost"), [("INTERNAL", 2), ("UNAVAILABLE", 0)])
def test_failed_pings_replace_the_sessions_and_none_is_handed_out_twice(
    server: LocalSpanner, clock: FakeClock, code: str, lost: int
) -> None:
    async def scenario() -> None:
        async with Pools(server) as pools:
            pool = AsyncPingingPool(size=4, ping_interval=60, clock=clock)
            database = await pools.bind(pool, "ping")
            before = live_names(server, database.name)
            server.inject_error("ExecuteSql", code, count=2)
            clock.advance(61)

            await pool.ping()  # no error escapes

            stats = pool.get_stats()
            assert (stats["pings"], stats["pings_failed"], stats["sessions_replaced"]) == (
                4,
                lost,
                lost,
            )
            assert stats["sessions_deleted"] == lost  # a session in doubt is deleted, not kept
            assert_all_idle(pool, 4)
            assert_books_match(pool, server, database.name)
            after = live_names(server, database.name)
            assert len(before - after) == lost

            held = [await pool.get(timeout=0) for _ in range(4)]
            assert {session.name for session in held} == after
            for session in held:
                await pool.put(session)

    run(scenario())


def test_failed_deletes_on_close_and_put_are_logged_and_never_raised(
    server: LocalSpanner, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        fixed = AsyncFixedSizePool(size=4)
        fixed_db = await connect_async(server.endpoint, "close", fixed)
        bursty = AsyncBurstyPool(target_size=1)
        bursty_db = await connect_async(server.endpoint, "put", bursty)
        first, second = await bursty.get(), await bursty.get()
        await bursty.put(first)
        server.inject_error("DeleteSession", "INTERNAL", count=3)

        with caplog.at_level(logging.WARNING, logger="spanpool"):
            await bursty.put(second)  # one idle already: this one is deleted, and that fails
            await fixed.close()

        failures = [r for r in caplog.records if "deleting a session failed" in r.getMessage()]
        assert len(failures) == 3
        stats = fixed.get_stats()
        assert (stats["pool_size"], stats["sessions_deleted"]) == (0, 2)
        # The pool forgot them all; those it could not delete are left to expire.
        assert server.session_count(fixed_db.name) == 2
        stats = bursty.get_stats()
        assert (stats["pool_size"], stats["pool_available"], stats["sessions_deleted"]) == (1, 1, 0)
        assert server.session_count(bursty_db.name) == 2
        assert await bursty.get() is first
        await bursty.put(first)
        await bursty.close()

    run(scenario())


# -- work on a session the server lost -------------------------------------------------------


def test_pool_run_in_transaction_retries_on_a_new_session(server: LocalSpanner) -> None:
    async def scenario() -> None:
        async with Pools(server) as pools:
            pool = AsyncFixedSizePool(size=1, max_age_minutes=600)
            database = await pools.bind(pool, "txn")
            server.expire_sessions(1.0, database.name)

            assert await pool.run_in_transaction(insert, 7) == 1

            async with pool.session() as session:
                results = await session.execute_sql("SELECT Id FROM Accounts")
                assert [list(row) async for row in results] == [[7]]
            assert pool.get_stats()["sessions_replaced"] == 1
            assert_books_match(pool, server, database.name)

    run(scenario())


def test_session_block_drops_a_session_the_server_lost(server: LocalSpanner) -> None:
    async def scenario() -> None:
        async with Pools(server) as pools:
            pool = AsyncFixedSizePool(size=1, max_age_minutes=600)
            database = await pools.bind(pool, "block")
            server.expire_sessions(1.0, database.name)

            with pytest.raises(exceptions.NotFound):
                async with pool.session() as session:
                    lost = session.name
                    await select_one(session)

            stats = pool.get_stats()
            assert (stats["pool_size"], stats["pool_available"], stats["pool_in_use"]) == (0, 0, 0)
            assert stats["sessions_replaced"] == 1
            assert_books_match(pool, server, database.name)
            async with pool.session() as session:
                assert session.name != lost
                assert await select_one(session) == [[1]]
            assert_books_match(pool, server, database.name)

    run(scenario())


def test_database_snapshot_and_transaction_recover_from_a_lost_session(
    server: LocalSpanner, regular_sessions: None
) -> None:
    async def scenario() -> None:
        async with Pools(server) as pools:
            pool = AsyncFixedSizePool(size=1, max_age_minutes=600)
            database = await pools.bind(pool, "snapshot")
            lost = live_names(server, database.name)
            server.expire_sessions(1.0, database.name)

            with pytest.raises(exceptions.NotFound):
                async with database.snapshot() as snapshot:
                    [row async for row in await snapshot.execute_sql("SELECT 1")]

            # The client made a replacement through the pool and put it back: it was taken in.
            assert pool.get_stats()["pool_size"] == 1
            assert_books_match(pool, server, database.name)
            async with database.snapshot() as snapshot:
                rows = [list(row) async for row in await snapshot.execute_sql("SELECT 1")]
            assert rows == [[1]]
            assert not live_names(server, database.name) & lost

            server.expire_sessions(1.0, database.name)
            # The caller may see the first failure; it must not see it again.
            with contextlib.suppress(exceptions.NotFound):
                await database.run_in_transaction(insert, 1)
            assert await database.run_in_transaction(insert, 2) == 1
            assert_books_match(pool, server, database.name)

    run(scenario())


# -- lifecycle: close, maintenance, leaks ------------------------------------------------------


@pytest.mark.parametrize("cls", POOLS, ids=lambda c: c.__name__)
def test_async_with_closes_the_pool_and_deletes_every_session(
    server: LocalSpanner, cls: type
) -> None:
    async def scenario() -> None:
        async with make(cls, size=3) as pool:
            database = await connect_async(server.endpoint, "lifecycle", pool)
            held = [await pool.get() for _ in range(3)]
            await pool.put(held.pop())
            await pool.put(held.pop())
            assert server.session_count(database.name) == 3

        # Idle sessions were deleted at close; the one checked out is deleted when it is back.
        assert server.session_count(database.name) == 1
        with pytest.raises(PoolClosed):
            await pool.get()
        await pool.put(held.pop())
        assert server.session_count(database.name) == 0
        stats = pool.get_stats()
        assert (stats["pool_size"], stats["sessions_deleted"]) == (0, 3)

    run(scenario())


def test_close_wakes_a_waiting_get_with_pool_closed(server: LocalSpanner) -> None:
    async def scenario() -> None:
        pool = AsyncFixedSizePool(size=1, default_timeout=30)
        database = await connect_async(server.endpoint, "waiting", pool)
        held = await pool.get()
        waiter = asyncio.create_task(pool.get())
        assert await eventually(lambda: pool.get_stats()["requests_waiting"] == 1)

        await pool.close()

        with pytest.raises(PoolClosed):
            await asyncio.wait_for(waiter, 5)
        await pool.put(held)
        assert server.session_count(database.name) == 0

    run(scenario())


_EXIT_WITHOUT_CLOSE = textwrap.dedent(
    """
    import asyncio
    import sys

    from spanpool import AsyncFixedSizePool
    from spanpool.testing import connect_async

    endpoint, database_id, size = sys.argv[1:]


    async def main() -> None:
        pool = AsyncFixedSizePool(size=int(size))
        await connect_async(endpoint, database_id, pool)
        async with pool.session() as session:
            results = await session.execute_sql("SELECT 1")
            assert [list(row) async for row in results] == [[1]]


    asyncio.run(main())
    print("used", flush=True)
    """
)


def test_process_exit_without_close_deletes_the_sessions(server: LocalSpanner) -> None:
    # The event loop, and the asyncio channel with it, are gone by then.
    done = subprocess.run(
        [sys.executable, "-c", _EXIT_WITHOUT_CLOSE, server.endpoint, "exit", "3"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "used"
    assert "Traceback" not in done.stderr
    assert rpcs(server, "BatchCreateSessions") == 1
    assert server.session_count(server.database_path("exit")) == 0


def _maintenance_tasks() -> list[asyncio.Task[Any]]:
    return [
        task
        for task in asyncio.all_tasks()
        if task.get_name().startswith("spanpool-maintenance-") and not task.done()
    ]


def _refusals_in_child(pool: Any, database: Any, session: Any, parent: int) -> int:
    """In a forked child (still inside the parent's running loop, which it must not use): how
    many of the pool's methods did not refuse clearly. A coroutine method must raise
    PoolForked before its first suspension; run with the parent's core lock held, so that a
    method touching it would hang the child instead."""
    calls: list[Callable[[], Any]] = [
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
        lambda: pool.run_in_transaction(insert, 1),
        lambda: pool.session().__aenter__(),
    ]
    unclear = 0
    for call in calls:
        try:
            outcome = call()
            if asyncio.iscoroutine(outcome):
                try:
                    outcome.send(None)
                finally:
                    outcome.close()
        except PoolForked as exc:
            message = str(exc)
            if f"process {parent}" not in message or f"process {os.getpid()}" not in message:
                unclear += 1
        except BaseException:
            unclear += 1
        else:
            unclear += 1
    closing = pool.close()
    try:
        closing.send(None)  # does nothing: the sessions are the parent's
    except StopIteration:
        pass
    else:
        unclear += 1
    repr(pool)
    return unclear


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("cls", [AsyncFixedSizePool, AsyncBurstyPool], ids=lambda c: c.__name__)
def test_everything_in_a_forked_child_refuses_without_touching_the_parents_state(
    server: LocalSpanner, cls: type
) -> None:
    async def scenario() -> None:
        async with Pools(server) as pools:
            pool = make(cls, size=2)
            database = await pools.bind(pool, "fork")
            held = await pool.get()
            if cls is AsyncBurstyPool:
                await pool.put(await pool.get())
            before = live_names(server, database.name)
            parent = os.getpid()
            pool._core._lock.acquire()  # another thread inside the pool at the fork
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
            assert await asyncio.to_thread(wait_child, pid) == 0
            assert live_names(server, database.name) == before
            await pool.put(held)
            async with pool.session() as session:
                assert await select_one(session) == [[1]]
            assert_books_match(pool, server, database.name)

    run(scenario())


def test_maintenance_task_pings_and_stops_on_close(server: LocalSpanner) -> None:
    async def scenario() -> None:
        pool = AsyncPingingPool(size=3, ping_interval=0.2, maintenance=True)
        database = await connect_async(server.endpoint, "maintenance", pool)
        workers = _maintenance_tasks()
        assert len(workers) == 1

        assert await eventually(lambda: pool.get_stats()["pings"] >= 3), pool.get_stats()
        assert_books_match(pool, server, database.name)
        await pool.close()

        assert workers[0].done()
        assert _maintenance_tasks() == []
        assert server.session_count(database.name) == 0

    run(scenario())


def test_start_maintenance_needs_a_running_loop_and_close_stops_it(server: LocalSpanner) -> None:
    pool = AsyncFixedSizePool(size=1)
    with pytest.raises(RuntimeError):
        pool.start_maintenance()

    async def scenario() -> None:
        await connect_async(server.endpoint, "maintenance-start", pool)
        pool.start_maintenance()
        pool.start_maintenance()  # once is enough
        assert len(_maintenance_tasks()) == 1
        await pool.close()
        assert _maintenance_tasks() == []

    run(scenario())


def test_maintenance_tops_the_pool_up_after_a_failed_bind(server: LocalSpanner) -> None:
    async def scenario() -> None:
        async with Pools(server) as pools:
            server.inject_error("BatchCreateSessions", "INTERNAL", count=1)
            pool = AsyncPingingPool(size=2, ping_interval=0.2, maintenance=True)
            with pytest.raises(exceptions.InternalServerError):
                await pools.bind(pool, "maintenance-bind")
            assert pool.get_stats()["pool_size"] == 0

            assert await eventually(lambda: pool.get_stats()["pool_size"] == 2)

    run(scenario())


def test_binding_again_after_a_failed_bind_works(server: LocalSpanner) -> None:
    async def scenario() -> None:
        async with Pools(server) as pools:
            server.inject_error("BatchCreateSessions", "INTERNAL", count=1)
            pool = AsyncFixedSizePool(size=3)
            with pytest.raises(exceptions.InternalServerError):
                await pools.bind(pool, "rebind")

            database = await pools.bind(pool, "rebind")

            async with pool.session() as session:
                assert await select_one(session) == [[1]]
            assert server.session_count(database.name) == 3

    run(scenario())


async def _check_out_and_forget(pool: Any) -> Any:
    """A checkout site that the leak warning must name."""
    return await pool.get(timeout=1)


def test_leak_warning_names_the_checkout_site(server: LocalSpanner, clock: FakeClock) -> None:
    async def scenario() -> None:
        async with Pools(server) as pools:
            pool = AsyncFixedSizePool(size=2, clock=clock, leak_threshold=5)
            await pools.bind(pool, "leak")
            session = await _check_out_and_forget(pool)

            clock.advance(4)
            with warnings.catch_warnings():
                warnings.simplefilter("error", SessionLeakWarning)
                assert pool.check_leaks() == 0
            clock.advance(2)
            with pytest.warns(SessionLeakWarning, match="_check_out_and_forget") as caught:
                assert pool.check_leaks() == 1
            assert len(caught) == 1
            assert session.name in str(caught[0].message)
            await pool.put(session)
            assert pool.check_leaks() == 0

    run(scenario())


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
def test_cancellation_storm_loses_no_session(server: LocalSpanner, kind: str, seed: int) -> None:
    """300 tasks on 10 sessions, held about a millisecond each; some tasks give up through
    ``wait_for``, and others are cancelled at random moments: waiting, being served, checking
    a session (``fixed-checking``), creating one (``bursty``), using one or returning one.
    A pinging pool is pinged throughout by a task that is cancelled and restarted too."""
    rng = random.Random(seed)

    async def scenario() -> None:
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

    run(scenario())


def test_a_session_handed_to_a_task_cancelled_in_that_instant_goes_to_the_next_waiter(
    server: LocalSpanner,
) -> None:
    async def scenario() -> None:
        async with Pools(server) as pools:
            pool = AsyncFixedSizePool(size=1, default_timeout=30)
            database = await pools.bind(pool, "race")
            held = await pool.get()
            unlucky = asyncio.create_task(pool.get())
            await asyncio.sleep(0)
            next_in_line = asyncio.create_task(pool.get())
            await asyncio.sleep(0)
            assert pool.get_stats()["requests_waiting"] == 2

            await pool.put(held)  # handed to `unlucky`, which has not run since ...
            stats = pool.get_stats()
            assert (stats["pool_in_use"], stats["requests_waiting"]) == (1, 1)
            unlucky.cancel()  # ... and is cancelled before it does
            with pytest.raises(asyncio.CancelledError):
                await unlucky

            assert await asyncio.wait_for(next_in_line, 5) is held
            stats = pool.get_stats()
            assert (stats["pool_in_use"], stats["requests_waiting"]) == (1, 0)
            assert stats["requests_cancelled"] == 1
            await pool.put(held)
            assert_all_idle(pool, 1)
            assert server.session_count(database.name) == 1

    run(scenario())


def test_a_replacement_granted_to_a_task_cancelled_in_that_instant_goes_to_the_next_waiter(
    server: LocalSpanner,
) -> None:
    async def scenario() -> None:
        async with Pools(server) as pools:
            pool = AsyncFixedSizePool(size=1, default_timeout=30)
            database = await pools.bind(pool, "race-permit")
            unlucky = next_in_line = None
            with pytest.raises(exceptions.NotFound):
                async with pool.session() as session:
                    lost = session.name
                    unlucky = asyncio.create_task(pool.get())
                    await asyncio.sleep(0)
                    next_in_line = asyncio.create_task(pool.get())
                    await asyncio.sleep(0)
                    server.expire_sessions(1.0, database.name)
                    await select_one(session)
            # The lost session's place went to `unlucky`, as the right to create a session ...
            assert unlucky is not None and next_in_line is not None
            assert pool.get_stats()["pool_creating"] == 1
            unlucky.cancel()  # ... and it is cancelled before it could
            with pytest.raises(asyncio.CancelledError):
                await unlucky

            replacement = await asyncio.wait_for(next_in_line, 5)
            assert replacement.name != lost
            assert await select_one(replacement) == [[1]]
            await pool.put(replacement)
            assert_all_idle(pool, 1)
            assert server.session_count(database.name) == 1

    run(scenario())


def test_cancelling_a_get_while_its_session_is_created_loses_nothing(
    server: LocalSpanner,
) -> None:
    async def scenario() -> None:
        async with Pools(server) as pools:
            pool = AsyncBurstyPool(target_size=2)
            database = await pools.bind(pool, "cancel-create")
            server.inject_latency(100, "CreateSession")
            getting = asyncio.create_task(pool.get())
            assert await eventually(lambda: rpcs(server, "CreateSession") == 1)

            getting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await getting

            # The server creates the session anyway: the pool must not lose track of it.
            assert await eventually(lambda: answered_all(server, "CreateSession"))
            assert await eventually(lambda: pool.get_stats()["pool_available"] == 1)
            assert_all_idle(pool, 1)
            assert server.session_count(database.name) == 1
            server.clear_faults()
            session = await pool.get()
            assert rpcs(server, "CreateSession") == 1  # the one created for the cancelled get
            await pool.put(session)

    run(scenario())


def test_cancelling_ping_leaves_nothing_checked_out(server: LocalSpanner, clock: FakeClock) -> None:
    async def scenario() -> None:
        async with Pools(server) as pools:
            pool = AsyncPingingPool(size=4, ping_interval=60, clock=clock)
            database = await pools.bind(pool, "cancel-ping")
            server.inject_latency(200, "ExecuteSql")
            clock.advance(61)
            pinging = asyncio.create_task(pool.ping())
            assert await eventually(lambda: rpcs(server, "ExecuteSql") > 0)
            assert pool.get_stats()["pool_in_maintenance"] > 0

            pinging.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pinging

            assert_all_idle(pool, 4)
            assert_books_match(pool, server, database.name)
            server.clear_faults()
            await pool.ping()  # none was refreshed by the cancelled ping: all are still due
            assert pool.get_stats()["pings"] == 4

    run(scenario())


def test_cancelling_ping_while_it_deletes_failed_sessions_leaves_nothing_checked_out(
    server: LocalSpanner, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with Pools(server) as pools:
            pool = AsyncPingingPool(size=4, ping_interval=60, clock=clock)
            database = await pools.bind(pool, "cancel-ping-delete")
            server.inject_error("ExecuteSql", "INTERNAL")
            server.inject_latency(200, "DeleteSession")
            clock.advance(61)
            pinging = asyncio.create_task(pool.ping())
            assert await eventually(lambda: rpcs(server, "DeleteSession") > 0)

            pinging.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pinging

            stats = pool.get_stats()
            assert (stats["pool_in_use"], stats["pool_in_maintenance"]) == (0, 0), stats
            server.clear_faults()
            await pool.fill()
            assert_all_idle(pool, 4)
            assert await eventually(lambda: server.session_count(database.name) == 4)
            assert_books_match(pool, server, database.name)

    run(scenario())


def test_cancelling_begin_pending_transactions_leaves_nothing_checked_out(
    server: LocalSpanner,
) -> None:
    async def scenario() -> None:
        async with Pools(server) as pools:
            pool = AsyncTransactionPingingPool(size=3)
            database = await pools.bind(pool, "cancel-begin")
            held = [await pool.get() for _ in range(3)]
            for session in held:
                session.transaction()  # takes the begun transaction: the session is pending
                await pool.put(session)
            server.reset_counts()
            server.inject_latency(200, "BeginTransaction")
            beginning = asyncio.create_task(pool.begin_pending_transactions())
            assert await eventually(lambda: rpcs(server, "BeginTransaction") > 0)
            assert pool.get_stats()["pool_in_maintenance"] > 0

            beginning.cancel()
            with pytest.raises(asyncio.CancelledError):
                await beginning

            assert_all_idle(pool, 3)
            assert_books_match(pool, server, database.name)
            server.clear_faults()
            assert await pool.begin_pending_transactions() == 3  # still pending, all three

    run(scenario())


def test_cancelling_maintain_leaves_nothing_checked_out(
    server: LocalSpanner, clock: FakeClock
) -> None:
    async def scenario() -> None:
        async with Pools(server) as pools:
            pool = AsyncPingingPool(size=4, ping_interval=60, clock=clock)
            database = await pools.bind(pool, "cancel-maintain")
            server.expire_sessions(0.5, database.name)
            server.inject_latency(200, "ExecuteSql")
            clock.advance(61)
            maintaining = asyncio.create_task(pool.maintain())
            assert await eventually(lambda: rpcs(server, "ExecuteSql") > 0)

            maintaining.cancel()
            with pytest.raises(asyncio.CancelledError):
                await maintaining

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

    run(scenario())


@pytest.mark.parametrize("size", [3, 250])
def test_cancelling_bind_loses_no_session(server: LocalSpanner, size: int) -> None:
    async def scenario() -> None:
        async with Pools(server) as pools:
            database_name = server.database_path("cancel-bind")
            server.inject_latency(200, "BatchCreateSessions")
            pool = AsyncFixedSizePool(size=size)
            binding = asyncio.create_task(pools.bind(pool, "cancel-bind"))
            assert await eventually(lambda: rpcs(server, "BatchCreateSessions") > 0)

            binding.cancel()
            with pytest.raises(asyncio.CancelledError):
                await binding

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

    run(scenario())


def test_cancelling_close_still_deletes_every_session(server: LocalSpanner) -> None:
    async def scenario() -> None:
        pool = AsyncFixedSizePool(size=20)  # more than are deleted at once
        database = await connect_async(server.endpoint, "cancel-close", pool)
        server.inject_latency(200, "DeleteSession")
        closing = asyncio.create_task(pool.close())
        assert await eventually(lambda: rpcs(server, "DeleteSession") > 0)

        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing

        with pytest.raises(PoolClosed):
            await pool.get()
        assert await eventually(lambda: server.session_count(database.name) == 0)
        server.clear_faults()

    run(scenario())


def test_public_names() -> None:
    for name in (
        "AsyncAbstractSessionPool",
        "AsyncBurstyPool",
        "AsyncFixedSizePool",
        "AsyncPingingPool",
        "AsyncTransactionPingingPool",
        "AsyncSessionCheckout",
    ):
        assert hasattr(spanpool, name)
    assert ACCOUNTS_DDL
