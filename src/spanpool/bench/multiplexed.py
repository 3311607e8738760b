"""MultiplexedPool against the client's own multiplexed-session manager, side by side in one run.

LocalSpanner runs in a process of its own with 5 ms added to every RPC (``--latency-ms``). The
client's manager is what a ``Database`` uses on default settings; spanpool's is a
``MultiplexedPool`` given as ``pool=``. Measured:

- **new worker**: a fresh process's time from ``instance.database(...)`` to its first result,
  and the ``CreateSession`` calls it made (the median of several workers, each a new
  interpreter; the variants take turns worker by worker). The client's manager creates a
  session on the first request of every process; spanpool with a SQLite or Redis store that
  already holds the session makes none (goal: first result at most 0.6x the client's).
  Measured twice: with nothing of the client used before in the process (its first gRPC
  channel and lazy set-up weigh on both sides alike), and with the client used once before on
  another database (what is left is the road to the session);
- **warm request**: one ``SELECT 1`` snapshot on a warm ``Database``, one thread, the median
  of requests taking turns with the client's (goal: at most 1.02x the client's);
- **threads** alive after 100 ``Database`` objects were made, used once and dropped (the
  client's manager leaks one thread each: 100+; spanpool: a constant);
- **close()**: how long ``Database.close()`` takes (the client's joins a thread that sleeps
  10 minutes: given up after a few seconds);
- **lost session**: requests that fail after the server lost the multiplexed session.

Run with ``./dev run python -m spanpool.bench.multiplexed [--quick]`` (or ``./dev bench``).
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

from .harness import open_store, session_routing
from .pools import Failed, Goal, Row, side_by_side

LATENCY_MS = 5.0
NEW_WORKER_GOAL = 0.6
WARM_GOAL = 1.02
DATABASE = "bench"


# -- the server, in a process of its own ---------------------------------------------------------


def _serve(conn: Any, latency_ms: float) -> None:
    """LocalSpanner with ``latency_ms`` on every RPC, answering control commands on ``conn``."""
    from spanpool.testing import LocalSpanner

    with LocalSpanner(max_workers=64) as server:
        server.inject_latency(latency_ms)
        conn.send(server.endpoint)
        while True:
            command = conn.recv()
            if command == "stop":
                return
            if command == "creates":
                conn.send(server.request_counts().get("CreateSession", 0))
            elif command == "lose":
                conn.send(server.lose_multiplexed_sessions())


class Server:
    def __init__(self, context: Any, latency_ms: float) -> None:
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, latency_ms), daemon=True)
        self._process.start()
        self.endpoint: str = self._conn.recv()

    def ask(self, command: str) -> Any:
        self._conn.send(command)
        return self._conn.recv()

    def stop(self) -> None:
        self._conn.send("stop")
        self._process.join(10)


# -- a new worker --------------------------------------------------------------------------------


def _client(endpoint: str) -> Any:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import spanner

    return spanner.Client(
        project="bench-project",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": endpoint},
        disable_builtin_metrics=True,
    )


def _query(database: Any) -> list[Any]:
    with database.snapshot() as snapshot:
        return list(snapshot.execute_sql("SELECT 1"))


def _new_worker(
    endpoint: str, variant: str, kind: str, address: str, warm_client: bool, out: Any
) -> None:
    """One new worker process: ``instance.database`` to first result, in seconds.

    With ``warm_client`` the client library was used once before (a query on another
    database, through the client's own manager), so that what is timed is the road to the
    session, not the first use of gRPC and the client in the process."""
    from spanpool import MultiplexedPool

    instance = _client(endpoint).instance("bench-instance")
    store = open_store(kind, address)
    if store is not None:  # its connection is open, as in a worker that uses the store
        store.multiplexed_get("bench:another-key")
    if warm_client:
        _query(instance.database(f"warmup{os.getpid()}"))
    began = time.perf_counter()
    if variant == "official":
        database = instance.database(DATABASE)
    else:
        database = instance.database(DATABASE, pool=MultiplexedPool(store=store))
    rows = _query(database)
    elapsed = time.perf_counter() - began
    out.put((elapsed, rows == [[1]]))
    out.close()
    out.join_thread()
    os._exit(0)  # the client's manager would keep its thread (and this process) waiting


def _one_worker(
    context: Any, server: Server, variant: str, kind: str, address: str, warm_client: bool
) -> tuple[float, int]:
    """One new worker's time to first result (s), and the CreateSession calls it made."""
    before = server.ask("creates")
    out = context.Queue()
    process = context.Process(
        target=_new_worker, args=(server.endpoint, variant, kind, address, warm_client, out)
    )
    process.start()
    elapsed, ok = out.get(timeout=120)
    process.join(30)
    if not ok:
        raise RuntimeError(f"{variant} worker got a wrong result")
    warmup = 1 if warm_client else 0  # the warm-up creates the other database's session
    return elapsed, server.ask("creates") - before - warmup


Variant = tuple[str, str, str]
"""(``official`` or ``spanpool``, the store's kind or ``""``, its address)"""


def new_workers(
    context: Any,
    server: Server,
    variants: Sequence[Variant],
    workers: int,
    warm_client: bool = False,
) -> dict[Variant, tuple[float, float]]:
    """For each variant, the median time to first result (s) and the CreateSession calls per
    worker. Each worker is a new interpreter ("spawn"): its imports are done before the clock
    starts, and nothing of the client was used in it before unless ``warm_client``. The
    variants take turns worker by worker, so that a noisy machine weighs on each alike."""
    times: dict[Variant, list[float]] = {variant: [] for variant in variants}
    creates: dict[Variant, int] = dict.fromkeys(variants, 0)
    for round_ in range(workers):
        order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
        for variant in order:
            elapsed, made = _one_worker(context, server, *variant, warm_client)
            times[variant].append(elapsed)
            creates[variant] += made
    return {v: (statistics.median(times[v]), creates[v] / workers) for v in variants}


# -- in this process -----------------------------------------------------------------------------


def warm_requests(endpoint: str, requests: int) -> tuple[float, float]:
    """Median seconds per warm request: (the client's manager, MultiplexedPool). The two take
    turns request by request, so that a noisy machine weighs on both alike."""
    from spanpool import MultiplexedPool

    instance = _client(endpoint).instance("bench-instance")
    official = instance.database(DATABASE)
    ours = instance.database(DATABASE, pool=MultiplexedPool())
    for database in (official, ours):
        for _ in range(20):
            _query(database)
    spent: dict[str, list[float]] = {"official": [], "spanpool": []}
    for i in range(requests):
        order = [("official", official), ("spanpool", ours)]
        if i % 2:
            order.reverse()
        for name, database in order:
            began = time.perf_counter()
            _query(database)
            spent[name].append(time.perf_counter() - began)
    ours.close()
    return statistics.median(spent["official"]), statistics.median(spent["spanpool"])


def threads_after_dropping(endpoint: str, variant: str, count: int) -> int:
    """Threads alive (more than before) after ``count`` Databases made, used and dropped."""
    from spanpool import MultiplexedPool

    instance = _client(endpoint).instance("bench-instance")
    gc.collect()
    before = threading.active_count()
    for _ in range(count):
        if variant == "official":
            database = instance.database(DATABASE)
        else:
            database = instance.database(DATABASE, pool=MultiplexedPool())
        _query(database)
        del database
    gc.collect()
    deadline = time.monotonic() + 2.0
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)  # spanpool's maintenance thread ends once its pools are collected
    return threading.active_count() - before


def close_time(endpoint: str, variant: str, give_up: float) -> float | None:
    """Seconds ``Database.close()`` took, None when still blocked after ``give_up``."""
    from spanpool import MultiplexedPool

    instance = _client(endpoint).instance("bench-instance")
    if variant == "official":
        database = instance.database(DATABASE)
    else:
        database = instance.database(DATABASE, pool=MultiplexedPool())
    _query(database)
    done = threading.Event()
    began = time.perf_counter()
    elapsed: list[float] = []

    def close() -> None:
        database.close()
        elapsed.append(time.perf_counter() - began)
        done.set()

    threading.Thread(target=close, daemon=True).start()
    return elapsed[0] if done.wait(give_up) else None


def failures_after_loss(server: Server, variant: str, requests: int) -> int:
    """Requests that fail after the server lost the multiplexed session."""
    from spanpool import MultiplexedPool

    instance = _client(server.endpoint).instance("bench-instance")
    if variant == "official":
        database = instance.database("lossbench")
    else:
        database = instance.database("lossbench", pool=MultiplexedPool())
    _query(database)
    server.ask("lose")
    failed = 0
    for _ in range(requests):
        try:
            _query(database)
        except Exception:
            failed += 1
    return failed


# -- the run -------------------------------------------------------------------------------------


@contextmanager
def _redis() -> Iterator[str | None]:
    if shutil.which("redis-server") is None:
        yield None
        return
    from spanpool.testing.redis_server import redis_server

    with redis_server() as url:
        yield url


def _context() -> Any:
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["google.cloud.spanner", "spanpool"])
        return context
    return multiprocessing.get_context("spawn")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def run(quick: bool, latency_ms: float = LATENCY_MS, table: list[Row] | None = None) -> int:
    """Measure, print the table; with ``table``, also add the measurements there as rows of
    spanpool against the client's manager (for ``spanpool bench``'s summary and chart). On the
    client's default routing, whatever the environment or an earlier suite set."""
    with session_routing(regular=False):
        return _measure(quick, latency_ms, [] if table is None else table)


def _measure(quick: bool, latency_ms: float, table: list[Row]) -> int:
    context = _context()
    workers = 3 if quick else 7
    requests = 200 if quick else 1000
    print(
        f"MultiplexedPool vs the client's own manager: server in another process, "
        f"{latency_ms:g} ms per RPC"
    )
    server = Server(context, latency_ms)
    failed_goals: list[str] = []
    rows: list[tuple[str, str, str, str]] = []
    try:
        with ExitStack() as stack:
            redis_url = stack.enter_context(_redis())
            folder = stack.enter_context(tempfile.TemporaryDirectory())
            sqlite_path = os.path.join(folder, "store.db")
            stores = [("sqlite", sqlite_path)] + ([("redis", redis_url)] if redis_url else [])

            spawn = multiprocessing.get_context("spawn")
            for kind, address in stores:
                _one_worker(spawn, server, "spanpool", kind, address, False)  # warms the store
            official: Variant = ("official", "", "")
            alone: Variant = ("spanpool", "", "")
            shared: list[Variant] = [("spanpool", kind, address) for kind, address in stores]
            for warm_client in (False, True):
                what = "new worker, client used before" if warm_client else "new worker"
                measured = new_workers(
                    spawn, server, [official, alone, *shared], workers, warm_client
                )
                base, base_creates = measured[official]
                rows.append(
                    (what, "official manager", _ms(base), f"{base_creates:.1f} CreateSession")
                )
                first, creates = measured[alone]
                rows.append(
                    (
                        what,
                        "spanpool, no store",
                        _ms(first),
                        f"{creates:.1f} CreateSession, {first / base:.2f}x",
                    )
                )
                for store_variant in shared:
                    kind = store_variant[1]
                    first, creates = measured[store_variant]
                    ratio = first / base
                    rows.append(
                        (
                            what,
                            f"spanpool, warm {kind} store",
                            _ms(first),
                            f"{creates:.1f} CreateSession, {ratio:.2f}x",
                        )
                    )
                    table.append(
                        side_by_side(
                            f"{what}: first result",
                            latency_ms,
                            f"warm {kind} store",
                            base,
                            first,
                            _ms,
                            Goal("<=", NEW_WORKER_GOAL),
                        )
                    )
                    table.append(
                        side_by_side(
                            f"{what}: CreateSession",
                            latency_ms,
                            f"warm {kind} store",
                            base_creates,
                            creates,
                            "{:.1f}".format,
                            Goal("==", 0),
                            absolute=True,
                        )
                    )
                    if ratio > NEW_WORKER_GOAL or creates > 0:
                        failed_goals.append(f"{what} with {kind} store: {ratio:.2f}x")

            official_warm, ours_warm = warm_requests(server.endpoint, requests)
            ratio = ours_warm / official_warm
            rows.append(("warm request", "official manager", _ms(official_warm), ""))
            rows.append(("warm request", "spanpool", _ms(ours_warm), f"{ratio:.3f}x"))
            table.append(
                side_by_side(
                    "warm request",
                    latency_ms,
                    "MultiplexedPool",
                    official_warm,
                    ours_warm,
                    _ms,
                    Goal("<=", WARM_GOAL),
                )
            )
            if ratio > WARM_GOAL:
                failed_goals.append(f"warm request: {ratio:.3f}x")

            ours_threads = threads_after_dropping(server.endpoint, "spanpool", 100)
            official_threads = threads_after_dropping(server.endpoint, "official", 100)
            rows.append(
                (
                    "threads after 100 dropped Databases",
                    "official manager",
                    f"{official_threads:+}",
                    "",
                )
            )
            rows.append(
                ("threads after 100 dropped Databases", "spanpool", f"{ours_threads:+}", "")
            )
            table.append(
                side_by_side(
                    "threads after 100 dropped Databases",
                    latency_ms,
                    "MultiplexedPool",
                    official_threads,
                    ours_threads,
                    "{:+.0f}".format,
                    absolute=True,
                )
            )

            give_up = 3.0
            closes: dict[str, float] = {}
            blocked: dict[str, bool] = {}
            for variant in ("official", "spanpool"):
                took = close_time(server.endpoint, variant, give_up)
                shown = f"> {give_up:g} s (still blocked)" if took is None else _ms(took)
                label = "official manager" if variant == "official" else "spanpool"
                rows.append(("Database.close()", label, shown, ""))
                # Still blocked: at least give_up, which is what the ratio then compares.
                closes[variant] = give_up if took is None else took
                blocked[variant] = took is None
            table.append(
                side_by_side(
                    "Database.close()",
                    latency_ms,
                    "MultiplexedPool",
                    closes["official"],
                    Failed(f"> {give_up:g} s") if blocked["spanpool"] else closes["spanpool"],
                    _ms,
                    absolute=True,
                    official_prefix="> " if blocked["official"] else "",
                )
            )

            failures: dict[str, int] = {}
            for variant in ("official", "spanpool"):
                failed = failures_after_loss(server, variant, 10)
                label = "official manager" if variant == "official" else "spanpool"
                rows.append(("lost session: failed of 10 requests", label, str(failed), ""))
                failures[variant] = failed
            table.append(
                side_by_side(
                    "lost session: failed of 10 requests",
                    latency_ms,
                    "MultiplexedPool",
                    failures["official"],
                    failures["spanpool"],
                    "{:.0f}".format,
                    Goal("==", 0),
                    absolute=True,
                )
            )
    finally:
        server.stop()
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    if failed_goals:
        print("goals missed: " + "; ".join(failed_goals))
    else:
        print(
            f"goals met: new worker with a warm store <= {NEW_WORKER_GOAL}x, "
            f"warm request <= {WARM_GOAL}x"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer workers and rounds")
    parser.add_argument("--latency-ms", type=float, default=LATENCY_MS)
    args = parser.parse_args(argv)
    return run(args.quick, args.latency_ms)


if __name__ == "__main__":
    sys.exit(main())
