"""spanpool's asyncio pools against the official client's asyncio pools, side by side.

Both sides use the official ``AsyncClient`` and ``Database`` on one ``spanpool serve`` process,
in the same run, taking turns within each round; every figure is the median of the rounds.

1. Warm get+put, one task: nanoseconds per ``s = await pool.get(); await pool.put(s)`` after
   bind and one warm-up checkout, for each pool kind; and each spanpool pool against the
   official ``AsyncFixedSizePool``.
2. Fairness under contention: 200 tasks share 10 sessions, each holding one for 1 ms
   (``await asyncio.sleep(0.001)``); cycles min/max across tasks, the longest get(), and
   throughput against the ceiling of 10 sessions kept busy all the time.

The official asyncio pools of google-cloud-spanner 3.71 compare an aware datetime with the
naive last-use time their sessions carry, so their first ``get()`` raises ``TypeError``. To
measure them at all, the bench gives their sessions an aware last-use time after ``bind``
(the row says "patched"); without that they cannot serve a single checkout.

Run with ``./dev run python -m spanpool.bench.async_pools [--quick] [--seconds S]`` (or
``./dev bench``).
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from google.auth.credentials import AnonymousCredentials
from google.cloud import spanner_v1

from spanpool.bridge.common import give_aware_last_use
from spanpool.testing import serve_in_process

from .harness import (
    JOIN_SECONDS,
    KINDS,
    SIDES,
    Settings,
    pool_arguments,
    progress,
    session_routing,
    settings_for,
)
from .pools import parse_args
from .table import (
    FAIRNESS,
    Failed,
    Goal,
    Metrics,
    Row,
    against,
    errors,
    fairness,
    measured_rows,
    median_of,
    print_table,
    warm_rows,
)

TASKS = 200
SIZE = 10
HOLD_SECONDS = 0.001


def pool_class(side: str, kind: str) -> Any:
    if side == "official":
        return getattr(spanner_v1, f"Async{kind}")
    import spanpool

    return getattr(spanpool, f"Async{kind}")


def make_pool(side: str, kind: str, size: int = SIZE) -> Any:
    cls = pool_class(side, kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return cls(**pool_arguments(kind, size))


@dataclass
class Opened:
    pools: dict[tuple[str, str], Any]

    async def close(self) -> None:
        for (side, _), pool in self.pools.items():
            if isinstance(pool, Failed):
                continue
            try:
                if side == "spanpool":
                    await pool.close()
                else:
                    await pool.clear()
            except Exception as exc:
                print(f"  (disposing {type(pool).__name__} raised {exc!r})", file=sys.stderr)


async def open_pools(
    database_for: Callable[[str], Awaitable[Any]], kinds: tuple[str, ...]
) -> Opened:
    opened: dict[tuple[str, str], Any] = {}
    for kind in kinds:
        for side in SIDES:
            try:
                pool = make_pool(side, kind)
                database = await database_for(f"b{side[0]}{kind.lower()}")
                await pool.bind(database)
                if side == "official":
                    give_aware_last_use(pool)
                session = await pool.get()
                await pool.put(session)
                opened[(side, kind)] = pool
            except Exception as exc:
                opened[(side, kind)] = Failed(f"error: {type(exc).__name__}")
    return Opened(opened)


async def interleaved(
    pools: dict[tuple[str, str], Any], rounds: int, measure: Callable[[Any], Awaitable[Metrics]]
) -> dict[tuple[str, str], list[Metrics] | Failed]:
    results: dict[tuple[str, str], list[Metrics] | Failed] = {
        variant: pool if isinstance(pool, Failed) else [] for variant, pool in pools.items()
    }
    for _ in range(rounds):
        for variant, pool in pools.items():
            done = results[variant]
            if isinstance(done, Failed):
                continue
            gc.collect()
            try:
                done.append(await measure(pool))
            except Exception as exc:
                results[variant] = Failed(f"error: {type(exc).__name__}")
    return results


async def warm_cycles(pool: Any, cycles: int, seconds: float) -> Metrics:
    done = 0
    began = time.perf_counter_ns()
    deadline = began + seconds * 1e9
    while done < cycles and time.perf_counter_ns() < deadline:
        for _ in range(100):
            session = await pool.get()
            await pool.put(session)
        done += 100
    return {"ns": (time.perf_counter_ns() - began) / done}


async def contend(pool: Any, seconds: float) -> Metrics:
    counts = [0] * TASKS
    holds = [0] * TASKS
    worst = [0] * TASKS
    errors = [0]
    stop = False

    async def work(i: int) -> None:
        while not stop:
            asked = time.perf_counter_ns()
            try:
                session = await pool.get()
            except Exception:
                errors[0] += 1
                await asyncio.sleep(0.001)
                continue
            got = time.perf_counter_ns()
            worst[i] = max(worst[i], got - asked)
            await asyncio.sleep(HOLD_SECONDS)
            holds[i] += time.perf_counter_ns() - got
            try:
                await pool.put(session)
            except Exception:
                errors[0] += 1
            counts[i] += 1

    tasks = [asyncio.ensure_future(work(i)) for i in range(TASKS)]
    began = time.perf_counter_ns()
    await asyncio.sleep(seconds)
    stop = True
    await asyncio.wait(tasks, timeout=JOIN_SECONDS)
    elapsed = time.perf_counter_ns() - began
    return {**fairness(counts, sum(holds), max(worst), elapsed, SIZE), "errors": float(errors[0])}


async def scenarios(endpoint: str, settings: Settings) -> list[Row]:
    client = spanner_v1.AsyncClient(
        project="test-project",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": endpoint},
        disable_builtin_metrics=True,
    )
    instance = client.instance("test-instance")

    async def database_for(name: str) -> Any:
        return await instance.database(name, pool=spanner_v1.AsyncBurstyPool(target_size=0))

    rows: list[Row] = []
    progress("asyncio: warm get+put, one task")
    opened = await open_pools(database_for, KINDS)
    try:
        results = await interleaved(
            opened.pools,
            settings.rounds,
            lambda pool: warm_cycles(pool, settings.cycles, settings.cycle_seconds),
        )
    finally:
        await opened.close()
    ns = {variant: median_of(measured, "ns") for variant, measured in results.items()}
    fixed = ("Fixed ", ns[("official", "FixedSizePool")])
    others = {kind: ns[("spanpool", kind)] for kind in KINDS if kind != "FixedSizePool"}
    rows += warm_rows("asyncio warm get+put, 1 task", 0, ns, KINDS, patched=KINDS[1:])
    rows += against("asyncio get+put vs official Fixed", 0, fixed, others, Goal("<=", 0.30))

    progress(f"asyncio: {TASKS} tasks on {SIZE} sessions")
    kinds = ("FixedSizePool", "PingingPool")
    opened = await open_pools(database_for, kinds)
    try:
        results = await interleaved(
            opened.pools,
            settings.slow_rounds,
            lambda pool: contend(pool, settings.contention_seconds),
        )
    finally:
        await opened.close()
    title = f"asyncio {TASKS} tasks, {SIZE} sessions:"
    for kind in kinds:
        official, ours = results[("official", kind)], results[("spanpool", kind)]
        rows += measured_rows(title, 0, kind, official, ours, FAIRNESS, official_prefix="patched ")
        rows += measured_rows(title, 0, kind, official, ours, [errors("errors")])
    return rows


def run(args: Any) -> list[Row]:
    settings = settings_for(args)
    endpoint = getattr(args, "endpoint", None)
    with session_routing(regular=True):
        if endpoint:
            rows = asyncio.run(scenarios(endpoint, settings))
            for row in rows:
                row.latency = "endpoint"
            return rows
        with serve_in_process() as server:
            return asyncio.run(scenarios(server.endpoint, settings))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    rows = run(args)
    print()
    print(
        "spanpool asyncio pools vs official google-cloud-spanner asyncio pools, LocalSpanner on "
        f"loopback, {os.cpu_count()} cores, {time.monotonic() - began:.0f} s"
        + (" (--quick)" if args.quick else "")
    )
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
