"""spanpool's session pools against the official client's, side by side on one LocalSpanner.

Each pool kind (BurstyPool, FixedSizePool, PingingPool, TransactionPingingPool) is measured both
from ``google.cloud.spanner_v1.pool`` ("official") and from ``spanpool`` in the same run, on the
same servers, at 0 ms and 5 ms of latency injected into every RPC. The two sides take turns
within each round of measurements and every figure is the median of several rounds, so the
ratios hold on a shared, noisy machine. Timings run against ``spanpool serve`` processes, so the
server does not compete with the pools for the interpreter lock; RPC and session counts come
from an in-process LocalSpanner.

1. Warm get+put, one thread: nanoseconds per ``s = pool.get(); pool.put(s)`` after bind and one
   warm-up checkout, next to a bare ``deque`` + ``Lock`` pool.
2. RPCs per warm checkout: server requests during warm get+put cycles.
3. Fairness under contention: 32 threads share 10 sessions, each holding one for 1 ms; cycles
   min/max across threads, the longest get(), and throughput against the ceiling of 10 sessions
   kept busy all the time. BurstyPool creates sessions when empty, so it is shown apart.
4. bind of 400 sessions when the server creates at most 100 per BatchCreateSessions, at 5 ms;
   and how many sessions the server holds afterwards.
5. get() latency while ping() refreshes every session: a PingingPool left idle until each of its
   sessions is due for a ping, then 4 threads doing get/put cycles while one thread calls
   ``ping()``; get() percentiles during the ping() calls against the steady state after them.

Prints one table and writes a chart to ``bench/out/pools.png``. The scenarios are here; the
pools, servers and rounds they run on in ``harness.py``, how threads drive the pools in
``threads.py``, and the rows, goals and table (shared with the other suites) in ``table.py``.

Run with ``./dev run python -m spanpool.bench.pools [--quick] [--seconds S]`` (or ``./dev bench``).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from spanpool.testing import LocalSpanner, serve_in_process

from .chart import write_chart
from .harness import (
    KINDS,
    LATENCIES_MS,
    SIDES,
    Bench,
    bound_pools,
    fallback_warning,
    interleaved,
    measure_pools,
    progress,
    session_routing,
    settings_for,
    unbound_pool,
)
from .table import (
    FAIRNESS,
    Metrics,
    against,
    attempt,
    cell,
    chart_bars,
    errors,
    measured_rows,
    median_of,
    print_table,
    ratio,
    warm_rows,
)
from .table import Failed as Failed  # with the next three, what bench/multiplexed.py takes here
from .table import Goal as Goal
from .table import Row as Row
from .table import side_by_side as side_by_side
from .threads import (
    CONTENTION_SIZE,
    CONTENTION_THREADS,
    BarePool,
    contention,
    count_requests,
    gets_while_pinging,
    percentile,
    run_cycles,
)

OUT_DIR = Path("bench") / "out"  # under the working directory
BIND_SIZE = 400
BATCH_LIMIT = 100
PING_INTERVAL = 1  # seconds: a ping() pass over 50 sessions at 5 ms ends well within it


# -- scenarios -------------------------------------------------------------------------------


def warm_cycle_rows(bench: Bench, latency_ms: float) -> list[Row]:
    """1. Time per warm ``get``+``put`` in one thread, for each pool kind and a bare pool."""
    settings = bench.settings
    variants = [(side, kind) for kind in KINDS for side in SIDES]
    with bound_pools(bench.database(latency_ms), variants) as pools:
        pools[("bare", "deque")] = BarePool()

        def per_cycle(pool: Any) -> Metrics:
            done, ns = run_cycles(pool, settings.cycles, settings.cycle_seconds)
            return {"ns": ns / done}

        results = measure_pools(pools, settings.rounds, per_cycle)
    ns = {variant: median_of(measured, "ns") for variant, measured in results.items()}
    fixed, bare = ("Fixed ", ns[("official", "FixedSizePool")]), ("bare ", ns[("bare", "deque")])
    ours = {kind: ns[("spanpool", kind)] for kind in KINDS}
    others = {kind: measured for kind, measured in ours.items() if kind != "FixedSizePool"}
    return [
        *warm_rows("warm get+put, 1 thread", latency_ms, ns, KINDS),
        *against("get+put vs official Fixed", latency_ms, fixed, others, Goal("<=", 0.30)),
        *against("get+put vs bare deque+Lock", latency_ms, bare, ours, Goal("<=", 2.5)),
    ]


def rpc_rows(bench: Bench, latency_ms: float) -> list[Row]:
    """2. Requests the server receives per warm checkout (in-process LocalSpanner)."""
    settings, server = bench.settings, bench.counter
    variants = [(side, kind) for kind in KINDS for side in SIDES]

    def per_checkout(pool: Any) -> Metrics:
        return count_requests(
            server, lambda: run_cycles(pool, settings.cycles, settings.cycle_seconds)[0]
        )

    server.inject_latency(latency_ms)
    try:
        with bound_pools(bench.counted_database(), variants) as pools:
            results = measure_pools(pools, 1, per_checkout)
    finally:
        server.inject_latency(0)

    def described(measured: list[Metrics] | Failed) -> str:
        if isinstance(measured, Failed):
            return str(measured)
        methods = ", ".join(sorted(m for m in measured[0] if m != "rpcs"))
        return f"{measured[0]['rpcs']:.2f}" + (f" ({methods})" if methods else "")

    rows = []
    for kind in KINDS:
        official, ours = results[("official", kind)], results[("spanpool", kind)]
        row = side_by_side(
            "RPCs per warm checkout",
            latency_ms,
            kind,
            median_of(official, "rpcs"),
            median_of(ours, "rpcs"),
            "{:.2f}".format,
            Goal("==", 0),
            absolute=True,
        )
        row.official, row.spanpool = described(official), described(ours)
        rows.append(row)
    return rows


def contention_rows(bench: Bench, latency_ms: float) -> list[Row]:
    """3. CONTENTION_THREADS threads sharing CONTENTION_SIZE sessions, each held 1 ms."""
    settings = bench.settings
    kinds = ("FixedSizePool", "PingingPool", "BurstyPool")
    variants = [(side, kind) for kind in kinds for side in SIDES]
    with bound_pools(bench.database(latency_ms), variants, size=CONTENTION_SIZE) as pools:
        results = measure_pools(
            pools,
            settings.slow_rounds,
            lambda pool: contention(pool, settings.contention_seconds),
        )
    rows = []
    title = f"{CONTENTION_THREADS} threads, {CONTENTION_SIZE} sessions:"
    for kind in kinds:
        official, ours = results[("official", kind)], results[("spanpool", kind)]
        # BurstyPool grows past CONTENTION_SIZE when empty: no goals, and sessions instead of
        # throughput against a ceiling of CONTENTION_SIZE sessions.
        pool, measures = kind, list(FAIRNESS)
        if kind == "BurstyPool":
            pool = f"{kind} (grows)"
            measures = [(name, key, fmt, None) for name, key, fmt, _ in FAIRNESS[:2]]
            measures.append(("sessions used", "sessions", "{:.0f}".format, None))
        rows += measured_rows(
            title, latency_ms, pool, official, ours, [*measures, errors("get()/put() errors")]
        )
    return rows


def bind_rows(bench: Bench, latency_ms: float) -> list[Row]:
    """4. ``bind`` of BIND_SIZE sessions, the server creating at most BATCH_LIMIT per call:
    wall time on the timing server, and the sessions the counting server holds afterwards."""
    settings, server = bench.settings, bench.counter
    kinds = ("FixedSizePool", "PingingPool")
    variants = [(side, kind) for kind in kinds for side in SIDES]
    names = {variant: "bind-{}-{}".format(*variant) for variant in variants}
    timing_databases = {v: bench.database(latency_ms, names[v]) for v in variants}
    bind_errors: dict[tuple[str, str], str] = {}

    def timed(variant: tuple[str, str]) -> Metrics:
        with unbound_pool(variant, BIND_SIZE) as pool:
            began = time.perf_counter_ns()
            pool.bind(timing_databases[variant])
            return {"ms": (time.perf_counter_ns() - began) / 1e6}

    def counted(variant: tuple[str, str]) -> Metrics:
        database = bench.counted_database(names[variant])
        with unbound_pool(variant, BIND_SIZE) as pool:

            def bind() -> int:
                bound = attempt(functools.partial(pool.bind, database))
                if isinstance(bound, Failed):
                    bind_errors[variant] = f"bind {bound}"
                return 1

            metrics = count_requests(server, bind)
            metrics["sessions"] = server.session_count(server.database_path(names[variant]))
            return metrics

    timings = interleaved(variants, settings.rounds, timed)
    server.inject_latency(latency_ms)
    try:
        counts = interleaved(variants, 1, counted)
    finally:
        server.inject_latency(0)

    def sessions(variant: tuple[str, str]) -> str:
        measured = counts[variant]
        if isinstance(measured, Failed):
            return str(measured)
        batches = measured[0].get("BatchCreateSessions", 0)
        text = f"{measured[0]['sessions']:.0f} ({batches:.0f} batches)"
        return f"{text}, {bind_errors[variant]}" if variant in bind_errors else text

    rows = []
    timed_title = f"bind of {BIND_SIZE}, {BATCH_LIMIT} per batch"
    made_title, made_goal = f"sessions after bind of {BIND_SIZE}", Goal("==", BIND_SIZE)
    for kind in kinds:
        official, ours = ("official", kind), ("spanpool", kind)
        times = median_of(timings[official], "ms"), median_of(timings[ours], "ms")
        made = median_of(counts[official], "sessions"), median_of(counts[ours], "sessions")
        rows.append(
            side_by_side(
                timed_title, latency_ms, kind, *times, "{:,.1f} ms".format, Goal("<=", 0.5)
            )
        )
        row = side_by_side(
            made_title, latency_ms, kind, *made, "{:.0f}".format, made_goal, absolute=True
        )
        row.official, row.spanpool = sessions(official), sessions(ours)
        if ours in bind_errors:
            row.checked, row.spanpool_failed = None, True
        rows.append(row)
    return rows


def ping_rows(bench: Bench, latency_ms: float) -> list[Row]:
    """5. get() latency of a PingingPool while ``ping()`` refreshes each of its sessions."""
    return [
        row for size in bench.settings.ping_sizes for row in ping_rows_of(bench, latency_ms, size)
    ]


def ping_rows_of(bench: Bench, latency_ms: float, size: int) -> list[Row]:
    """Scenario 5 for pools of ``size`` sessions. Few get() calls fit in one ping() pass, so
    the percentiles are over the calls of all rounds rather than medians of each round's; and
    a small pool, whose pass is shorter, runs more rounds, so that p99 is not just the slowest
    of a hundred calls."""
    settings = bench.settings
    rounds = settings.ping_rounds * max(1, 30 // size)
    variants = [(side, "PingingPool") for side in SIDES]
    waits: dict[str, dict[str, list[int]]] = {side: {"ping": [], "steady": []} for side in SIDES}
    with bound_pools(
        bench.database(latency_ms), variants, size=size, ping_interval=PING_INTERVAL
    ) as pools:
        waits_of = {id(pool): waits[side] for (side, _), pool in pools.items()}
        results = measure_pools(
            pools,
            rounds,
            lambda pool: gets_while_pinging(pool, settings.steady_seconds, waits_of[id(pool)]),
            # Idle pools: every session is due for a ping when the round starts.
            before_round=functools.partial(time.sleep, PING_INTERVAL + 0.2),
        )
    rows = []
    label = f"PingingPool, {size} sessions"
    for q in (0.50, 0.99):
        texts, ratios, failed = {}, {}, False
        for side in SIDES:
            measured = results[(side, "PingingPool")]
            pinging = percentile_ms(measured, waits[side]["ping"], q)
            steady = percentile_ms(measured, waits[side]["steady"], q)
            ratios[side] = ratio(pinging, steady)
            failed = side == "spanpool" and Failed in (type(pinging), type(steady))
            texts[side] = f"{cell(pinging, '{:.3f}'.format)} / {cell(steady, '{:.3f}'.format)}"
            if ratios[side] is not None:
                texts[side] += f" (x{ratios[side]:.1f}, n={len(waits[side]['ping'])})"
        rows.append(
            Row(
                f"get() p{q * 100:.0f} ms, during ping() / steady",
                f"{latency_ms:g} ms",
                label,
                texts["official"],
                texts["spanpool"],
                ratios["spanpool"],
                Goal("<=", 2) if q == 0.99 else None,
                ratios["spanpool"],
                failed,
            )
        )
    official, ours = results[("official", "PingingPool")], results[("spanpool", "PingingPool")]
    rows += measured_rows(
        "", latency_ms, label, official, ours, [errors("get()/put()/ping() errors")]
    )
    return rows


def percentile_ms(measured: list[Metrics] | Failed, waits: list[int], q: float) -> float | Failed:
    if isinstance(measured, Failed):
        return measured
    return percentile(waits, q) / 1e6 if waits else Failed("no get()")


SCENARIOS: list[tuple[str, Callable[[Bench, float], list[Row]], tuple[float, ...]]] = [
    ("1. warm get+put", warm_cycle_rows, LATENCIES_MS),
    ("2. RPCs per warm checkout", rpc_rows, LATENCIES_MS),
    ("3. fairness under contention", contention_rows, LATENCIES_MS),
    ("4. bind of 400 sessions", bind_rows, (5.0,)),
    ("5. get() while ping()", ping_rows, LATENCIES_MS),
]


# -- entry point -----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="spanpool's pools against the official client's, on LocalSpanner."
    )
    parser.add_argument(
        "--quick", action="store_true", help="short runs, one round of the slow scenarios"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        help="length of each contention run of scenario 3 (default 2, or 0.5 with --quick); "
        "the other windows scale with it",
    )
    parser.add_argument(
        "--scenario",
        type=int,
        action="append",
        choices=range(1, len(SCENARIOS) + 1),
        help="run only this scenario (repeat for several; default: all)",
    )
    parser.add_argument(
        "--latency",
        type=float,
        action="append",
        choices=LATENCIES_MS,
        help="measure only at this injected latency in ms (repeat for several; default: all)",
    )
    parser.add_argument(
        "--endpoint",
        metavar="HOST:PORT",
        help="time the pools against this server (emulator protocol) instead of LocalSpanner "
        "processes at 0 and 5 ms; RPC counts still come from an embedded LocalSpanner",
    )
    return parser.parse_args(argv)


def measure(args: argparse.Namespace) -> list[Row]:
    """Measure the chosen scenarios (``--scenario``, all by default) and return the rows."""
    settings = settings_for(args)
    endpoint = getattr(args, "endpoint", None)
    chosen = getattr(args, "scenario", None)
    wanted = tuple(getattr(args, "latency", None) or LATENCIES_MS)
    began = time.monotonic()
    rows: list[Row] = []
    with ExitStack() as servers:
        servers.enter_context(session_routing(regular=True))  # the official Database's pool
        if endpoint:
            endpoints = {0.0: endpoint}
        else:
            endpoints = {
                latency: servers.enter_context(
                    serve_in_process(
                        "--latency-ms", f"{latency:g}", "--max-sessions-per-batch", str(BATCH_LIMIT)
                    )
                ).endpoint
                for latency in wanted
            }
        counter = servers.enter_context(LocalSpanner(max_sessions_per_batch=BATCH_LIMIT))
        bench = Bench(settings, endpoints, counter)
        for number, (title, scenario, latencies) in enumerate(SCENARIOS, 1):
            if chosen and number not in chosen:
                continue
            for latency in sorted(endpoints) if endpoint else [x for x in latencies if x in wanted]:
                progress(f"{title} at {latency:g} ms ({time.monotonic() - began:.0f} s)")
                try:
                    found = scenario(bench, latency)
                except Exception as exc:
                    traceback.print_exc()
                    failure = f"error: {type(exc).__name__}"
                    found = [Row(title, f"{latency:g} ms", "-", failure, failure)]
                if endpoint:
                    for row in found:
                        row.latency = "endpoint"
                rows += found
    return rows


def run(args: argparse.Namespace) -> int:
    """Measure every scenario, print the table, write the chart."""
    warning = fallback_warning()
    if warning:
        print(warning, file=sys.stderr, flush=True)
    began = time.monotonic()
    rows = measure(args)
    print()
    print(
        f"spanpool pools vs official google-cloud-spanner pools, LocalSpanner on loopback, "
        f"{os.cpu_count()} cores, {time.monotonic() - began:.0f} s"
        + (" (--quick)" if args.quick else "")
    )
    if warning:
        print(warning)
    print_table(rows)
    title = "spanpool against its goals (bars left of the goal line meet them)"
    if warning:
        title += "\nWARNING: spanpool's pools were missing; both sides are the official pools"
    try:
        png = write_chart(chart_bars(rows), OUT_DIR / "pools.png", title)
    except Exception as exc:
        print(f"chart not written: {exc!r}")
    else:
        print(f"chart: {png}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
