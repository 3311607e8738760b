"""CacheSessionPool over each store: how long a warm acquire+release takes, and how many store
round trips it costs, with 1, 4 and 16 processes sharing one pool.

Every process opens its own store, pool and official client, as application workers do, and
runs ``session = pool.acquire(); pool.release(session)`` in a loop for a fixed time. The pool
is warm (its sessions were created beforehand, with room for every process to hold one), so a
cycle makes no Spanner RPC: it is pure store and pool work. LocalSpanner runs as a
``spanpool serve`` process; Redis is a ``redis-server`` started for the run (its rows are left
out when it is not installed). MemoryStore serves one process only, so it has one row.

Reported per store and process count: p50 and p99 of one acquire+release, total cycles per
second, and store round trips per cycle (SQLite: ``BEGIN IMMEDIATE`` transactions; Redis:
commands). Goals: at most 2 round trips per cycle (Redis) and one transaction per step, so at
most 2 per cycle (SQLite); p50 <= 0.5 ms for Redis and SQLite with one process (with more
processes than cores the processes also wait for a CPU, which the table shows but does not
judge).

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

from spanpool import CacheSessionPool
from spanpool.testing import connect, serve_in_process

from .progress import report

PROCESS_COUNTS = (1, 4, 16)
P50_GOAL_MS = 0.5
ROUND_TRIP_GOAL = 2.0
DATABASE = "cachebench"


def _redis_server() -> Any:
    """spanpool.testing's ``redis_server()``: one way to start Redis for tests and bench."""
    from spanpool.testing.redis_server import redis_server

    return redis_server()


def open_store(kind: str, address: str) -> Any:
    if kind == "memory":
        from spanpool.stores import MemoryStore

        return MemoryStore()
    if kind == "sqlite":
        from spanpool.stores import SQLiteStore

        return SQLiteStore(address)
    from spanpool.stores import RedisStore

    return RedisStore(address)


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
    """Warm up, wait for the start, then acquire+release for ``seconds``; report latencies."""
    store = open_store(kind, address)
    pool = CacheSessionPool(
        store, max_sessions=max_sessions, min_sessions=1 if kind == "memory" else 0
    )
    connect(endpoint, database_id, pool=pool)
    for _ in range(20):
        pool.release(pool.acquire())
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
        session = pool.acquire()
        pool.release(session)
        end = clock()
        latencies.append(end - now)
        now = end
    elapsed = now - started
    after = store_counter(store)
    trips = None if before is None or after is None else after - before
    rpcs = pool.get_stats()["sessions_created"] - created
    results.put((latencies.tobytes(), elapsed, trips, rpcs))
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
    if kind != "memory":
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
            return "-" if value is None else f"{value:.3f} ms"

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
        stores = [("memory", "", (1,)), ("sqlite", os.path.join(folder, "pool.db"), PROCESS_COUNTS)]
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
        f"CacheSessionPool warm acquire+release, LocalSpanner and stores on loopback, "
        f"{os.cpu_count()} cores, {seconds:g} s per measurement, "
        f"{time.monotonic() - began:.0f} s" + (" (--quick)" if args.quick else "")
    )
    print_table(results)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
