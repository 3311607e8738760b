"""OpenTelemetry metrics of the pools, collected with the SDK's in-memory reader."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import spanpool.metrics
from spanpool import AsyncFixedSizePool, FixedSizePool, MultiplexedPool
from spanpool.testing import LocalSpanner, connect_async


def _instrumented() -> tuple[InMemoryMetricReader, MeterProvider]:
    """An in-memory reader, and a provider it reads from that spanpool's metrics go to."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    spanpool.metrics.instrument(meter_provider=provider)
    return reader, provider


def _collect(reader: InMemoryMetricReader) -> dict[tuple[str, str, str], int]:
    """(metric, pool name, state) -> value, from one collection."""
    found: dict[tuple[str, str, str], int] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == "spanpool"
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    attributes: dict[str, Any] = dict(point.attributes or {})
                    key = (
                        metric.name,
                        attributes["db.client.connection.pool.name"],
                        attributes.get("db.client.connection.state", ""),
                    )
                    found[key] = int(point.value)
    return found


def test_pools_report_sessions_by_state_limits_and_waiters(server: LocalSpanner) -> None:
    reader, provider = _instrumented()
    spanpool.metrics.instrument(meter_provider=provider)  # twice: no duplicate instruments

    pool = FixedSizePool(size=3)
    database = server.database("metrics", pool=pool)
    name = spanpool.metrics.pool_name(pool)
    assert name == f"FixedSizePool:{database.name}"
    held = pool.get()
    seen = _collect(reader)
    assert seen[("db.client.connection.count", name, "idle")] == 2
    assert seen[("db.client.connection.count", name, "used")] == 1
    assert seen[("db.client.connection.max", name, "")] == 3
    assert seen[("db.client.connection.pending_requests", name, "")] == 0
    assert seen[("spanpool.sessions.creating", name, "")] == 0
    pool.put(held)
    assert _collect(reader)[("db.client.connection.count", name, "used")] == 0

    async def asyncio_pool() -> None:
        apool = AsyncFixedSizePool(size=2)
        adb = await connect_async(server.endpoint, "ametrics", pool=apool)
        first, second = await apool.get(), await apool.get()
        waiter = asyncio.create_task(apool.get())
        await asyncio.sleep(0)
        aname = f"AsyncFixedSizePool:{adb.name}"
        seen = _collect(reader)
        assert seen[("db.client.connection.count", aname, "used")] == 2
        assert seen[("db.client.connection.pending_requests", aname, "")] == 1
        await apool.put(first)
        await apool.put(await waiter)
        await apool.put(second)
        await apool.close()

    asyncio.run(asyncio_pool())
    pool.close()
    provider.shutdown()


def test_multiplexed_pools_report_their_session(server: LocalSpanner) -> None:
    reader, provider = _instrumented()
    pool = MultiplexedPool()
    database = server.database("mxmetrics", pool=pool)
    with database.snapshot() as snapshot:
        assert list(snapshot.execute_sql("SELECT 1")) == [[1]]
    server.lose_multiplexed_sessions(database.name)
    with database.snapshot() as snapshot:
        assert list(snapshot.execute_sql("SELECT 1")) == [[1]]
    name = f"MultiplexedPool:{database.name}"
    seen = _collect(reader)
    assert seen[("db.client.connection.count", name, "idle")] == 1
    assert seen[("db.client.connection.max", name, "")] == 1
    assert seen[("spanpool.multiplexed.generation", name, "")] == 2
    assert seen[("spanpool.multiplexed.replacements", name, "")] == 1
    assert seen[("spanpool.multiplexed.requests", name, "")] == 2
    assert seen[("spanpool.multiplexed.age", name, "")] >= 0
    assert ("spanpool.multiplexed.generation", f"FixedSizePool:{database.name}", "") not in seen
    database.close()
    provider.shutdown()


def test_every_kind_of_pool_speaks_the_common_vocabulary_and_appears_in_the_gauges(
    server: LocalSpanner,
) -> None:
    from spanpool import (
        BurstyPool,
        CacheSessionPool,
        PingingPool,
        TransactionPingingPool,
        stats,
    )
    from spanpool.stores import MemoryStore

    reader, provider = _instrumented()
    pools = [
        BurstyPool(target_size=2),
        FixedSizePool(size=2),
        PingingPool(size=2),
        TransactionPingingPool(size=2),
        CacheSessionPool(MemoryStore(), max_sessions=2, min_sessions=1),
        MultiplexedPool(),
    ]
    names = {}
    for number, pool in enumerate(pools):
        server.database(f"vocabulary{number}", pool=pool)
        names[spanpool.metrics.pool_name(pool)] = pool
        keys = set(pool.get_stats())
        assert set(stats.COMMON) <= keys, (type(pool).__name__, set(stats.COMMON) - keys)
    seen = _collect(reader)
    for name, pool in names.items():
        assert ("db.client.connection.count", name, "idle") in seen, name
        assert ("db.client.connection.count", name, "used") in seen, name
        assert ("db.client.connection.pending_requests", name, "") in seen, name
        # Every pool has a limit but BurstyPool, whose pool_max says it has none.
        limit = pool.get_stats()[stats.POOL_MAX]
        assert (limit == stats.UNBOUNDED) == isinstance(pool, BurstyPool), name
        observed = None if limit == stats.UNBOUNDED else limit
        assert seen.get(("db.client.connection.max", name, "")) == observed, name
    for pool in pools:
        closing = getattr(pool, "close", None) or pool.clear
        closing()
    provider.shutdown()


def test_a_pool_without_an_upper_bound_has_no_max_observed_in_either_flavour(
    server: LocalSpanner,
) -> None:
    from spanpool import AsyncBurstyPool, BurstyPool

    reader, provider = _instrumented()

    async def scenario() -> None:
        bursty, abursty = BurstyPool(target_size=2), AsyncBurstyPool(target_size=2)
        bounded = AsyncFixedSizePool(size=2)
        server.database("unbounded", pool=bursty)
        await connect_async(server.endpoint, "aunbounded", pool=abursty)
        await connect_async(server.endpoint, "abounded", pool=bounded)
        held = bursty.get(), await abursty.get()
        assert bursty.get_stats()["pool_max"] == abursty.get_stats()["pool_max"] == 0
        seen = _collect(reader)
        for pool in (bursty, abursty):
            name = spanpool.metrics.pool_name(pool)
            assert seen[("db.client.connection.count", name, "used")] == 1, name
            assert ("db.client.connection.max", name, "") not in seen, name
        assert seen[("db.client.connection.max", spanpool.metrics.pool_name(bounded), "")] == 2
        bursty.put(held[0])
        await abursty.put(held[1])
        bursty.close()
        await abursty.close()
        await bounded.close()

    asyncio.run(scenario())
    provider.shutdown()


def test_a_provider_made_after_another_was_freed_is_instrumented() -> None:
    # A new provider often lands where a freed one was (the same id()); each must still get
    # the instruments. Many rounds, so that such a reuse happens with any allocator.
    pool = FixedSizePool(size=2)
    for _ in range(100):
        reader, provider = _instrumented()
        data = reader.get_metrics_data()
        assert data is not None
        names = {m.name for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics}
        assert "db.client.connection.max" in names
        provider.shutdown()
        del provider, reader, data
        gc.collect(0)  # the provider is freed now (it sits in young reference cycles)
    del pool
