"""AsyncMultiplexedPool against LocalSpanner, through the unmodified official asyncio client."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from typing import Any

import grpc
import pytest
from google.api_core import exceptions

from spanpool import AsyncMultiplexedPool, PoolClosed
from spanpool.pools import _maintenance_async
from spanpool.testing import LocalSpanner, connect_async

from ..conftest import FakeClock


def _db_id(prefix: str) -> str:
    return f"{prefix}{time.monotonic_ns() % 10**9}"


async def _query(database: Any, sql: str = "SELECT 1", **kw: Any) -> list[list[Any]]:
    async with database.snapshot(**kw) as snapshot:
        results = await snapshot.execute_sql(sql)
        return [list(row) async for row in results]


async def _count(transaction: Any) -> int:
    results = await transaction.execute_sql("SELECT COUNT(*) FROM Accounts")
    [[count]] = [row async for row in results]
    return int(count)


def _creates(server: LocalSpanner) -> int:
    return server.request_counts().get("CreateSession", 0)


def test_every_operation_on_one_session_and_losses_replaced(server: LocalSpanner) -> None:
    async def main() -> None:
        pool = AsyncMultiplexedPool()
        database = await connect_async(server.endpoint, _db_id("every"), pool=pool)
        assert await _query(database) == [[1]]
        for ident in range(2):
            async with database.batch() as batch:
                batch.insert("Accounts", ("Id", "Owner", "Balance"), [(ident, "o", 1)])
            assert await database.run_in_transaction(_count) == ident + 1
            server.lose_multiplexed_sessions(database.name)
            assert await _query(database, "SELECT 2") == [[2]]  # sent again on the successor
            server.lose_multiplexed_sessions(database.name)
            assert await database.run_in_transaction(_count) == ident + 1
            server.lose_multiplexed_sessions(database.name)
        async with database.batch() as batch:  # the commit is sent again
            batch.insert("Accounts", ("Id", "Owner", "Balance"), [(9, "o", 1)])
        assert server.session_count(database.name) == 1
        assert _creates(server) == 7
        stats = pool.get_stats()
        assert stats["sessions_replaced"] == 6 and stats["generation"] == 7
        await database.close()
        with pytest.raises(PoolClosed):
            await _query(database)

    asyncio.run(main())


def test_single_flight_across_tasks_and_a_new_database_creates_nothing(
    server: LocalSpanner,
) -> None:
    async def main() -> None:
        server.inject_latency(100, method="CreateSession")
        name = _db_id("flight")
        database = await connect_async(server.endpoint, name, pool=AsyncMultiplexedPool())
        results = await asyncio.gather(*(_query(database) for _ in range(20)))
        assert results == [[[1]]] * 20
        again = await connect_async(server.endpoint, name, pool=AsyncMultiplexedPool())
        assert await _query(again) == [[1]]
        assert _creates(server) == 1

    asyncio.run(main())


def test_errors_and_cancellation_never_lose_the_creation(
    server: LocalSpanner, clock: FakeClock
) -> None:
    async def main() -> None:
        server.inject_error("CreateSession", "UNAVAILABLE", count=1)
        pool = AsyncMultiplexedPool(clock=clock)
        database = await connect_async(server.endpoint, _db_id("cancel"), pool=pool)
        with pytest.raises(exceptions.ServiceUnavailable):
            await _query(database)
        clock.advance(1)  # past the backoff
        server.freeze()  # the next creation is held by the server
        task = asyncio.ensure_future(_query(database))
        while _creates(server) < 2:
            await asyncio.sleep(0.005)
        task.cancel()  # cancelled while waiting: the creation goes on for the others
        with pytest.raises(asyncio.CancelledError):
            await task
        server.unfreeze()
        assert await _query(database) == [[1]]
        assert _creates(server) == 2

    asyncio.run(main())


def test_one_maintenance_task_per_loop_and_dropped_databases_collected(
    server: LocalSpanner,
) -> None:
    async def main() -> None:
        name = _db_id("drop")
        refs = []
        for _ in range(10):
            database = await connect_async(server.endpoint, name, pool=AsyncMultiplexedPool())
            assert await _query(database) == [[1]]
            refs.append(weakref.ref(database))
            del database
        shared = _maintenance_async.maintenance()
        tasks = [t for t in asyncio.all_tasks() if t.get_name() == "spanpool-multiplexed"]
        assert tasks == [shared.task]
        gc.collect()  # the client's result streams are closed by tasks the loop runs now
        await asyncio.sleep(0.01)
        gc.collect()
        assert [ref for ref in refs if ref() is not None] == []
        assert len(shared._pools) == 0
        assert _creates(server) == 1

    asyncio.run(main())


def test_a_store_shares_the_session_between_asyncio_pools(
    server: LocalSpanner, tmp_path: Any
) -> None:
    from spanpool.stores import SQLiteStore

    async def main() -> None:
        name = _db_id("store")
        # Two store objects on one file: as two processes would see it.
        first_pool = AsyncMultiplexedPool(store=SQLiteStore(tmp_path / "store.db"))
        first = await connect_async(server.endpoint, name, pool=first_pool)
        assert await _query(first) == [[1]]
        second_pool = AsyncMultiplexedPool(store=SQLiteStore(tmp_path / "store.db"))
        second = await connect_async(server.endpoint, name, pool=second_pool)
        assert await _query(second) == [[1]]
        assert second_pool.session_name == first_pool.session_name
        assert second_pool.get_stats()["sessions_created"] == 0
        server.lose_multiplexed_sessions(first.name)
        assert await _query(second) == [[1]]  # replaced, and published
        assert await _query(first) == [[1]]  # the first finds the successor in the store
        assert first_pool.session_name == second_pool.session_name
        assert _creates(server) == 2

    asyncio.run(main())


def test_a_known_session_connects_the_channel_at_bind(server: LocalSpanner) -> None:
    async def main() -> None:
        name = _db_id("known")
        first = await connect_async(server.endpoint, name, pool=AsyncMultiplexedPool())
        assert await _query(first) == [[1]]
        requests_before = len(server.request_log())
        database = await connect_async(server.endpoint, name, pool=AsyncMultiplexedPool())
        channel = database.spanner_api.transport.grpc_channel
        state = channel.get_state()  # reads, without asking to connect
        while state != grpc.ChannelConnectivity.READY:
            await asyncio.wait_for(channel.wait_for_state_change(state), 10)
            state = channel.get_state()
        assert len(server.request_log()) == requests_before  # connected, yet nothing sent
        assert await _query(database) == [[1]]

    asyncio.run(main())
