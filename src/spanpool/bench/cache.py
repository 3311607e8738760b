"""CacheSessionPool over each store: how long a warm acquire+release takes, and how many store
round trips it costs, with 1, 4 and 16 processes sharing one pool.

Every process opens its own store, pool and official client, as application workers do, and
runs ``session = pool.acquire(); pool.release(session)`` in a loop for a fixed time. The pool
is warm (its sessions were created beforehand, with room for every process to hold one), so a
cycle makes no Spanner RPC: it is pure store and pool work. LocalSpanner runs as a
``spanpool serve`` process; Redis is a ``redis-server`` started for the run (its rows are left
out when it is not installed). MemoryStore serves one process only, so it has one row.

Reported per store and process count: p50 and p99 of one acquire+release, total cycles per
second, and store round trips per cycle (SQLite: write transactions; Redis: commands; a session
leased by the process costs none). Goals: at most 2 round trips per cycle; p50 <= 0.5 ms with
one process; with 1, 4 and 16 processes no worse than before the lease tier nor than the run
before the warm road took one lock (both in ``EARLIER``).

Then BurstyPool's get+put, the process-local reference, and CacheSessionPool over each store
side by side in one process, taking turns every 20 ms (separate processes differ by more than
the ratios measured): over MemoryStore <= 3x BurstyPool and over SQLite <= 3x MemoryStore
(p50). Then, in ``cache_scenarios.py``, snapshot queries through the official ``Database`` at
5 ms per RPC: CacheSessionPool over SQLite <= 1.02x and over Redis <= 1.05x the time per query
with BurstyPool; last, the hand-back: how soon a session leased by one process reaches a
process that found the pool full.

Run with ``./dev run python -m spanpool.bench.cache [--quick] [--seconds S]`` (or ``./dev bench``).
"""

from __future__ import annotations

import argparse
import array
import multiprocessing
import os
import queue
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from spanpool import BurstyPool, CacheSessionPool
from spanpool.testing import connect, serve_in_process

from .harness import open_store, session_routing
from .progress import report

PROCESS_COUNTS = (1, 4, 16)
P50_GOAL_MS = 0.5
ROUND_TRIP_GOAL = 2.0
DATABASE = "cachebench"
EARLIER = {
    # (store, processes): p50 ms, p99 ms, cycles/s of two earlier runs on the 2-core machine of
    # these goals: "before" the lease tier (one store step per acquire and per release), and
    # the "previous" run, before the warm road took one lock (leases and holdings apart, a
    # watcher reading wants every 5 ms).
    ("sqlite", 1): {"before": (0.057, 0.371, 12_422), "previous": (0.011, 0.035, 62_000)},
    ("sqlite", 4): {"before": (0.061, 2.384, 11_578), "previous": (0.012, 0.037, 53_000)},
    ("sqlite", 16): {"before": (0.068, 19.0, 10_393), "previous": (0.015, 1.227, 62_000)},
    ("redis", 1): {"before": (0.351, 0.647, 2_689), "previous": (0.016, 0.041, 34_000)},
    ("redis", 4): {"before": (0.536, 1.103, 7_463), "previous": (0.016, 0.155, 15_000)},
    ("redis", 16): {"before": (2.681, 4.737, 5_979), "previous": (0.014, 0.639, 76_000)},
}


def _redis_server() -> Any:
    """spanpool.testing's ``redis_server()``: one way to start Redis for tests and bench."""
    from spanpool.testing.redis_server import redis_server

    return redis_server()


def store_counter(store: Any) -> int | None:
    """Round trips the store made so far: SQLite transactions, Redis commands."""
    for name in ("transactions", "round_trips"):
        count = getattr(store, name, None)
        if isinstance(count, int):
            return count
    return None


def worker(
    kind: str,
    address: str,
    endpoint: str,
    database_id: str,
    max_sessions: int,
    seconds: float,
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    """Warm up, wait for the start, then acquire+release for ``seconds``; report latencies.
    ``kind`` "bursty" runs spanpool's process-local BurstyPool's get+put instead."""
    store: Any = None
    if kind == "bursty":
        pool: Any = BurstyPool(target_size=max_sessions)
        take, give = pool.get, pool.put
    else:
        store = open_store(kind, address)
        pool = CacheSessionPool(
            store, max_sessions=max_sessions, min_sessions=1 if kind == "memory" else 0
        )
        take, give = pool.acquire, pool.release
    connect(endpoint, database_id, pool=pool)
    for _ in range(20):
        give(take())
    ready.put(os.getpid())
    go.wait(120)
    latencies = array.array("q")
    created = pool.get_stats()["sessions_created"]
    before = store_counter(store)
    clock = time.perf_counter_ns
    deadline = clock() + int(seconds * 1e9)
    started = clock()
    now = started
    while now < deadline:
        session = take()
        give(session)
        end = clock()
        latencies.append(end - now)
        now = end
    elapsed = now - started
    after = store_counter(store)
    trips = None if before is None or after is None else after - before
    rpcs = pool.get_stats()["sessions_created"] - created
    results.put((latencies.tobytes(), elapsed, trips, rpcs))
    if store is not None:
        store.close()


@dataclass
class Result:
    store: str
    processes: int
    p50_ms: float | None = None
    p99_ms: float | None = None
    per_second: float | None = None
    trips: float | None = None
    error: str = ""

    def verdicts(self) -> list[str]:
        """Goal checks of this row, as 'ok' / 'MISSED' texts."""
        found = []
        if self.store in ("sqlite", "redis") and self.trips is not None:
            met = self.trips <= ROUND_TRIP_GOAL + 1e-9
            found.append(f"trips {'ok' if met else 'MISSED'}")
        if self.store in ("sqlite", "redis") and self.processes == 1 and self.p50_ms is not None:
            met = self.p50_ms <= P50_GOAL_MS
            found.append(f"p50 {'ok' if met else 'MISSED'}")
        for name, (p50, p99, per_second) in EARLIER.get((self.store, self.processes), {}).items():
            if self.p50_ms is not None and self.per_second is not None:
                assert self.p99_ms is not None
                met = self.p50_ms <= p50 and self.p99_ms <= p99 and self.per_second >= per_second
                found.append(f"vs {name} {'ok' if met else 'MISSED'}")
        if self.error:
            found.append("MISSED")
        return found


def percentile(values: Sequence[int], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return float(ordered[index])


def measure(
    context: Any,
    kind: str,
    address: str,
    endpoint: str,
    processes: int,
    seconds: float,
) -> Result:
    database_id = f"{DATABASE}{kind}{processes}"
    max_sessions = processes + 4
    result = Result(kind, processes)
    if kind not in ("memory", "bursty"):
        # Warm the shared pool: one idle session per process, created before anything runs.
        store = open_store(kind, address)
        warm = CacheSessionPool(store, max_sessions=max_sessions, min_sessions=processes)
        connect(endpoint, database_id, pool=warm)
        store.close()
    ready, results, go = context.Queue(), context.Queue(), context.Event()
    workers = [
        context.Process(
            target=worker,
            args=(
                kind,
                address,
                endpoint,
                database_id,
                max_sessions,
                seconds,
                ready,
                go,
                results,
            ),
        )
        for _ in range(processes)
    ]
    try:
        for process in workers:
            process.start()
        for _ in workers:
            ready.get(timeout=120)
        go.set()
        reports = [results.get(timeout=seconds + 120) for _ in workers]
    except queue.Empty:
        result.error = "error: a worker did not report"
        return result
    finally:
        for process in workers:
            process.join(30)
            if process.is_alive():
                process.kill()
    latencies: list[int] = []
    cycles = 0
    trips: int | None = 0
    rpcs = 0
    for raw, _elapsed, worker_trips, worker_rpcs in reports:
        samples = array.array("q")
        samples.frombytes(raw)
        latencies.extend(samples)
        cycles += len(samples)
        trips = None if trips is None or worker_trips is None else trips + worker_trips
        rpcs += worker_rpcs
    if not cycles:
        result.error = "error: no cycle completed"
        return result
    result.p50_ms = percentile(latencies, 50) / 1e6
    result.p99_ms = percentile(latencies, 99) / 1e6
    result.per_second = cycles / statistics.median(r[1] / 1e9 for r in reports)
    result.trips = None if trips is None else trips / cycles
    if rpcs:
        result.error = f"{rpcs} sessions created while measuring"
    return result


def print_table(results: list[Result]) -> None:
    header = ("store", "processes", "p50", "p99", "cycles/s", "round trips/cycle", "goals")
    rows = [header]
    for r in results:

        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:.4f} ms"

        rows.append(
            (
                r.store,
                str(r.processes),
                ms(r.p50_ms),
                ms(r.p99_ms),
                "-" if r.per_second is None else f"{r.per_second:,.0f}",
                "-" if r.trips is None else f"{r.trips:.2f}",
                " ".join(r.verdicts()) + (f" ({r.error})" if r.error else ""),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for index, row in enumerate(rows):
        print("  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))
    checks = [verdict for r in results for verdict in r.verdicts()]
    met = sum(1 for verdict in checks if verdict.endswith("ok"))
    print(f"{met} of {len(checks)} goals met")


@contextmanager
def maybe_redis() -> Iterator[str | None]:
    if shutil.which("redis-server") is None:
        print("redis-server is not installed: no Redis rows", file=sys.stderr)
        yield None
        return
    with _redis_server() as url:
        yield url


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="CacheSessionPool acquire+release over each store, on LocalSpanner."
    )
    parser.add_argument("--quick", action="store_true", help="short measurements")
    parser.add_argument(
        "--seconds", type=float, help="length of each measurement (default 2, or 0.5 with --quick)"
    )
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    from . import cache_scenarios as scenarios  # which imports this module

    seconds = args.seconds or (0.5 if args.quick else 2.0)
    if seconds <= 0:
        raise SystemExit("--seconds must be > 0")
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if "forkserver" in methods:
        context.set_forkserver_preload(["spanpool", "spanpool.cache.sqlite"])
    began = time.monotonic()
    results: list[Result] = []
    with ExitStack() as stack:
        endpoint = stack.enter_context(serve_in_process()).endpoint
        redis_url = stack.enter_context(maybe_redis())
        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="cachebench-"))
        path = os.path.join(folder, "pool.db")
        stores = [("bursty", "", (1,)), ("memory", "", (1,)), ("sqlite", path, PROCESS_COUNTS)]
        if redis_url is not None:
            stores.append(("redis", redis_url, PROCESS_COUNTS))
        for kind, address, counts in stores:
            for processes in counts:
                report("cache", f"{kind} x {processes} ({time.monotonic() - began:.0f} s)")
                try:
                    results.append(measure(context, kind, address, endpoint, processes, seconds))
                except Exception as exc:
                    results.append(Result(kind, processes, error=f"error: {exc!r}"))
        print()
        print(
            f"CacheSessionPool warm acquire+release (BurstyPool: get+put), LocalSpanner and "
            f"stores on loopback, {os.cpu_count()} cores, {seconds:g} s per measurement, "
            f"{time.monotonic() - began:.0f} s" + (" (--quick)" if args.quick else "")
        )
        print_table(results)
        side_stores = [("sqlite", os.path.join(folder, "side.db"))]
        if redis_url is not None:
            side_stores.append(("redis", redis_url))
        report("cache", f"side by side ({time.monotonic() - began:.0f} s)")
        side_by_side(context, endpoint, side_stores, seconds)
        print()
        slow = stack.enter_context(serve_in_process("--latency-ms", f"{scenarios.RPC_MS:g}"))
        query_stores = [("sqlite", os.path.join(folder, "database.db"))]
        if redis_url is not None:
            query_stores.append(("redis", redis_url))
        report("cache", f"queries through the Database ({time.monotonic() - began:.0f} s)")
        with session_routing(regular=True):
            scenarios.database_scenario(slow.endpoint, query_stores, rounds=6 if args.quick else 20)
        print()
        report("cache", f"hand-back ({time.monotonic() - began:.0f} s)")
        scenarios.hand_back(context, endpoint, query_stores, rounds=3 if args.quick else 7)
    return 0


def side_by_side_worker(
    endpoint: str, stores: list[tuple[str, str]], seconds: float, results: Any
) -> None:
    """BurstyPool and CacheSessionPool over each store in one process, taking turns in
    slices of 20 ms for ``seconds`` each: the p50 of each, measured under the same load."""
    cycles: dict[str, tuple[Any, Any]] = {}
    opened = []
    bursty = BurstyPool(target_size=4)
    connect(endpoint, f"{DATABASE}sidebursty", pool=bursty)
    cycles["bursty"] = (bursty.get, bursty.put)
    for kind, address in [("memory", ""), *stores]:
        store = open_store(kind, address)
        opened.append(store)
        pool = CacheSessionPool(store, max_sessions=4, min_sessions=1)
        connect(endpoint, f"{DATABASE}side{kind}", pool=pool)
        cycles[kind] = (pool.acquire, pool.release)
    latencies = {kind: array.array("q") for kind in cycles}
    clock = time.perf_counter_ns
    for take, give in cycles.values():
        for _ in range(200):
            give(take())
    for _ in range(max(1, round(seconds / 0.02))):
        for kind, (take, give) in cycles.items():
            samples = latencies[kind]
            now = clock()
            end = now + 20_000_000
            while now < end:
                give(take())
                done = clock()
                samples.append(done - now)
                now = done
    results.put({kind: percentile(samples, 50) / 1e6 for kind, samples in latencies.items()})
    bursty.clear()
    for store in opened:
        store.close()


def side_by_side(
    context: Any, endpoint: str, stores: list[tuple[str, str]], seconds: float
) -> None:
    """The single-process ratios the shared pool aims at, measured side by side in one
    process (see ``side_by_side_worker``)."""
    results = context.Queue()
    process = context.Process(target=side_by_side_worker, args=(endpoint, stores, seconds, results))
    process.start()
    try:
        p50 = results.get(timeout=seconds * 5 + 120)
    except queue.Empty:
        print("side by side: error: the process did not report")
        return
    finally:
        process.join(30)
        if process.is_alive():
            process.kill()
    print(
        "Side by side in one process, one thread, taking turns every 20 ms: p50 "
        + ", ".join(f"{kind} {value * 1000:.2f} us" for kind, value in p50.items())
    )
    for slower, faster, goal in (("memory", "bursty", 3.0), ("sqlite", "memory", 3.0)):
        if slower in p50 and faster in p50:
            ratio = p50[slower] / p50[faster]
            verdict = "ok" if ratio <= goal else "MISSED"
            print(f"p50 {slower} / {faster}: {ratio:.2f}x (goal <= {goal:g}x) {verdict}")


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
