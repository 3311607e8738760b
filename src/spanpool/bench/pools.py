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

Prints one table and writes a chart to ``bench/out/pools.png``.

Run with ``./dev run python -m spanpool.bench.pools [--quick] [--seconds S]`` (or ``./dev bench``).
"""

from __future__ import annotations

import argparse
import bisect
import collections
import functools
import gc
import math
import os
import statistics
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from google.cloud.spanner_v1 import pool as official_pool

from spanpool.testing import REGULAR_SESSIONS_ENV, LocalSpanner, connect, serve_in_process

from .chart import Bar, write_chart
from .progress import report

try:
    from spanpool import BurstyPool, FixedSizePool, PingingPool, TransactionPingingPool
except ImportError as error:
    SPANPOOL_MISSING: str | None = str(error)
    SPANPOOL_POOLS: dict[str, Any] = {
        "BurstyPool": official_pool.BurstyPool,
        "FixedSizePool": official_pool.FixedSizePool,
        "PingingPool": official_pool.PingingPool,
        "TransactionPingingPool": official_pool.TransactionPingingPool,
    }
else:
    SPANPOOL_MISSING = None
    SPANPOOL_POOLS = {
        "BurstyPool": BurstyPool,
        "FixedSizePool": FixedSizePool,
        "PingingPool": PingingPool,
        "TransactionPingingPool": TransactionPingingPool,
    }

KINDS = ("BurstyPool", "FixedSizePool", "PingingPool", "TransactionPingingPool")
POOLS: dict[str, dict[str, Any]] = {
    "official": {kind: getattr(official_pool, kind) for kind in KINDS},
    "spanpool": SPANPOOL_POOLS,
}
SIDES = ("official", "spanpool")
LATENCIES_MS = (0.0, 5.0)
OUT_DIR = Path("bench") / "out"  # under the working directory

CONTENTION_THREADS = 32
CONTENTION_SIZE = 10
HOLD_SECONDS = 0.001
BIND_SIZE = 400
BATCH_LIMIT = 100
PING_WORKERS = 4
PING_INTERVAL = 1  # seconds: a ping() pass over 50 sessions at 5 ms ends well within it
JOIN_SECONDS = 30.0  # how long a stuck get() or ping() is waited for before giving up on it

K = TypeVar("K")
T = TypeVar("T")
Metrics = dict[str, float]


# -- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Failed:
    """A measurement that could not be made, e.g. because the pool raised."""

    reason: str

    def __str__(self) -> str:
        return self.reason


def attempt(measure: Callable[[], T]) -> T | Failed:
    """``measure()``, or ``error: <type>`` when it raises."""
    try:
        return measure()
    except Exception as exc:
        return Failed(f"error: {type(exc).__name__}")


@dataclass(frozen=True)
class Goal:
    """What spanpool should achieve: ``value <op> limit``."""

    op: str  # "<=", ">=" or "=="
    limit: float
    text: str = ""

    def met(self, value: float) -> bool:
        if self.op == "<=":
            return value <= self.limit
        if self.op == ">=":
            return value >= self.limit
        return value == self.limit

    def score(self, value: float) -> float | None:
        """``value`` relative to the goal, 1 at the goal and smaller when better (bounds only)."""
        if self.op == "<=" and self.limit > 0:
            return value / self.limit
        if self.op == ">=":
            return self.limit / value if value > 0 else math.inf
        return None

    def __str__(self) -> str:
        return f"{self.op} {self.text or format(self.limit, 'g')}"


@dataclass
class Row:
    """One line of the table: ``checked`` is the number the goal applies to; without it the
    goal is missed when spanpool's measurement failed, and cannot be judged otherwise."""

    scenario: str
    latency: str
    pool: str
    official: str
    spanpool: str
    ratio: float | None = None
    goal: Goal | None = None
    checked: float | None = None
    spanpool_failed: bool = False
    official_value: float | None = None
    spanpool_value: float | None = None

    @property
    def verdict(self) -> str:
        if self.goal is None:
            return ""
        if self.checked is None:
            return "miss" if self.spanpool_failed else "n/a"
        return "ok" if self.goal.met(self.checked) else "miss"


def median_of(results: list[Metrics] | Failed, key: str) -> float | Failed:
    """The median of ``key`` over the rounds that measured it."""
    if isinstance(results, Failed):
        return results
    values = [metrics[key] for metrics in results if key in metrics]
    return statistics.median(values) if values else Failed("n/a")


def total_of(results: list[Metrics] | Failed, key: str) -> float | Failed:
    if isinstance(results, Failed):
        return results
    return sum(metrics.get(key, 0.0) for metrics in results)


def ratio(numerator: float | Failed, denominator: float | Failed) -> float | None:
    if isinstance(numerator, Failed) or isinstance(denominator, Failed) or denominator == 0:
        return None
    return numerator / denominator


def value(measured: float | Failed) -> float | None:
    return None if isinstance(measured, Failed) else measured


def cell(measured: float | Failed, fmt: Callable[[float], str]) -> str:
    return str(measured) if isinstance(measured, Failed) else fmt(measured)


def duration(ns: float) -> str:
    return f"{ns:,.0f} ns" if ns < 1e6 else f"{ns / 1e6:,.2f} ms"


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# -- pools and servers -----------------------------------------------------------------------


def make_pool(side: str, kind: str, size: int = 10, ping_interval: int = 3000) -> Any:
    """An unbound pool of ``kind`` from ``side``, with the official constructor arguments."""
    cls = POOLS[side][kind]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TransactionPingingPool's
        if kind == "BurstyPool":
            return cls(target_size=size)
        if kind == "FixedSizePool":
            return cls(size=size, default_timeout=10, max_age_minutes=55)
        return cls(size=size, default_timeout=10, ping_interval=ping_interval)


def dispose(pool: Any, delete_sessions: bool = True) -> None:
    """Stop ``pool``: ``close()`` when it has one, else ``clear()`` unless told to keep them."""
    try:
        close = getattr(pool, "close", None)
        if close is not None:
            close()
        elif delete_sessions:
            pool.clear()
    except Exception as exc:
        print(f"  (disposing a {type(pool).__name__} raised {exc!r})", file=sys.stderr)


def warm_database(endpoint: str, name: str) -> Any:
    """The official ``Database`` ``name`` on ``endpoint``, its gRPC channel already connected.

    Pools are bound to it explicitly, so that ``bind`` alone can be timed.
    """
    database = connect(endpoint, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        session = database.session()
    session.create()
    session.delete()
    return database


@contextmanager
def bound_pools(
    database: Any, variants: Sequence[tuple[str, str]], **options: Any
) -> Iterator[dict[tuple[str, str], Any]]:
    """Pools for ``(side, kind)`` variants, bound to ``database`` and warmed by one checkout.

    A variant whose pool fails to bind or to check out maps to ``Failed``.
    """
    pools: dict[tuple[str, str], Any] = {}

    def open_pool(side: str, kind: str) -> Any:
        pool = make_pool(side, kind, **options)
        pools[(side, kind)] = pool
        pool.bind(database)
        pool.put(pool.get())
        return pool

    opened = {variant: attempt(functools.partial(open_pool, *variant)) for variant in variants}
    try:
        yield opened
    finally:
        for pool in pools.values():
            dispose(pool)


class Bench:
    """The servers of one run, the databases on them, and how long to measure."""

    def __init__(self, settings: Settings, endpoints: dict[float, str], counter: LocalSpanner):
        self.settings = settings
        self.endpoints = endpoints
        self.counter = counter
        self._databases: dict[tuple[str, str], Any] = {}

    def database(self, latency_ms: float, name: str = "bench") -> Any:
        """A database on the timing server with ``latency_ms`` of injected latency."""
        return self._database(self.endpoints[latency_ms], name)

    def counted_database(self, name: str = "bench") -> Any:
        """A database on the in-process LocalSpanner, whose requests are counted."""
        return self._database(self.counter.endpoint, name)

    def _database(self, endpoint: str, name: str) -> Any:
        if (endpoint, name) not in self._databases:
            self._databases[(endpoint, name)] = warm_database(endpoint, name)
        return self._databases[(endpoint, name)]


@dataclass(frozen=True)
class Settings:
    """How long and how often each scenario measures."""

    rounds: int  # rounds of the short timings (scenarios 1 and 4)
    slow_rounds: int  # rounds of the contention runs of scenario 3
    ping_rounds: int  # rounds of scenario 5 (each adds a few dozen get()s during ping())
    cycles: int  # get+put cycles per measurement of scenarios 1 and 2 ...
    cycle_seconds: float  # ... or fewer, when they take longer than this
    contention_seconds: float  # one run of scenario 3
    steady_seconds: float  # the steady-state window of scenario 5
    ping_sizes: tuple[int, ...] = (10, 50)


def interleaved(
    variants: Sequence[K],
    rounds: int,
    measure: Callable[[K], Metrics],
    before_round: Callable[[], None] | None = None,
) -> dict[K, list[Metrics] | Failed]:
    """``measure(variant)`` for every variant in every round, rounds visiting the variants in
    rotated orders so that none is always first; a variant that raises once is ``Failed``."""
    results: dict[K, list[Metrics] | Failed] = {variant: [] for variant in variants}
    for round_ in range(rounds if variants else 0):
        if before_round is not None:
            before_round()
        shift = round_ % len(variants)
        for variant in [*variants[shift:], *variants[:shift]]:
            done = results[variant]
            if isinstance(done, Failed):
                continue
            measured = attempt(functools.partial(measure, variant))
            if isinstance(measured, Failed):
                results[variant] = measured
            else:
                done.append(measured)
    return results


def progress(message: str) -> None:
    report("pools", message)


# -- measurement shapes ----------------------------------------------------------------------


class BarePool:
    """The floor for a warm checkout: a ``deque`` of sessions guarded by a ``Lock``."""

    def __init__(self, size: int = 10) -> None:
        self._lock = threading.Lock()
        self._sessions: collections.deque[object] = collections.deque(object() for _ in range(size))

    def get(self) -> object:
        with self._lock:
            return self._sessions.pop()

    def put(self, session: object) -> None:
        with self._lock:
            self._sessions.append(session)


def run_cycles(pool: Any, cycles: int, seconds: float) -> tuple[int, int]:
    """Warm ``get``/``put`` cycles in this thread, ``cycles`` of them or as many as fit in about
    ``seconds``; returns (cycles done, nanoseconds taken). The clock is read once per batch, in
    batches growing from 1 to 1024 cycles, so that reading it costs nearly nothing."""
    gc.collect()
    get, put = pool.get, pool.put
    done, batch = 0, 1
    start = time.perf_counter_ns()
    deadline = start + int(seconds * 1e9)
    while done < cycles:
        batch = min(batch, cycles - done)
        for _ in range(batch):
            session = get()
            put(session)
        done += batch
        if time.perf_counter_ns() >= deadline:
            break
        batch = min(batch * 2, 1024)
    return done, time.perf_counter_ns() - start


def count_requests(server: LocalSpanner, work: Callable[[], int]) -> Metrics:
    """Requests per method that ``server`` receives during ``work()``, divided by the number
    ``work`` returns; ``rpcs`` is their sum. Waits 0.1 s for requests sent in the background."""
    server.reset_counts()
    per = work()
    time.sleep(0.1)
    counts = {method: n / max(per, 1) for method, n in server.request_counts().items() if n}
    return {"rpcs": sum(counts.values()), **counts}


@dataclass
class WorkerLog:
    """What one contention worker saw: each get() as (start, duration) in ns."""

    cycles: int = 0
    gets: list[tuple[int, int]] = field(default_factory=list)
    hold_ns: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    sessions: set[object] = field(default_factory=set)


@dataclass
class Contention:
    """The workers' logs of one contention run, and how long it lasted."""

    logs: list[WorkerLog]
    elapsed_ns: int

    @property
    def cycles(self) -> int:
        return sum(log.cycles for log in self.logs)

    @property
    def gets(self) -> list[tuple[int, int]]:
        return [get for log in self.logs for get in log.gets]

    @property
    def errors(self) -> int:
        return sum(sum(log.errors.values()) for log in self.logs)


def contend(pool: Any, threads: int, hold_seconds: float, drive: Callable[[], None]) -> Contention:
    """``threads`` workers loop get → sleep ``hold_seconds`` → put on ``pool`` while ``drive()``
    runs in this thread, and stop when it returns. A worker whose get() raises counts the error
    and retries after 1 ms; none outlives ``drive()`` by more than JOIN_SECONDS."""
    stop = threading.Event()
    start = threading.Barrier(threads + 1, timeout=JOIN_SECONDS)
    logs = [WorkerLog() for _ in range(threads)]

    def work(log: WorkerLog) -> None:
        start.wait()
        while not stop.is_set():
            asked = time.perf_counter_ns()
            try:
                session = pool.get()
            except Exception as exc:
                log.errors[type(exc).__name__] += 1
                time.sleep(0.001)
                continue
            got = time.perf_counter_ns()
            time.sleep(hold_seconds)
            log.hold_ns += time.perf_counter_ns() - got
            try:
                pool.put(session)
            except Exception as exc:
                log.errors[type(exc).__name__] += 1
            log.gets.append((asked, got - asked))
            log.cycles += 1
            log.sessions.add(getattr(session, "session_id", None) or id(session))

    workers = [threading.Thread(target=work, args=(log,), daemon=True) for log in logs]
    for worker in workers:
        worker.start()
    start.wait()
    began = time.perf_counter_ns()
    try:
        drive()
    finally:
        stop.set()
        give_up = time.monotonic() + JOIN_SECONDS
        for worker in workers:
            worker.join(max(0.0, give_up - time.monotonic()))
    if any(worker.is_alive() for worker in workers):
        logs[0].errors["worker stuck in get()"] += 1
    return Contention(logs, time.perf_counter_ns() - began)


def fairness(pool: Any, seconds: float) -> Metrics:
    """Scenario 3's run: CONTENTION_THREADS threads on ``pool`` for ``seconds``."""
    run = contend(pool, CONTENTION_THREADS, HOLD_SECONDS, functools.partial(time.sleep, seconds))
    counts = [log.cycles for log in run.logs]
    cycles = max(run.cycles, 1)
    mean_hold = sum(log.hold_ns for log in run.logs) / cycles / 1e9
    ceiling = CONTENTION_SIZE / mean_hold if mean_hold else math.inf
    return {
        "min/max": min(counts) / max(max(counts), 1),
        "worst ms": max((wait for _, wait in run.gets), default=0) / 1e6,
        "throughput": run.cycles / (run.elapsed_ns / 1e9) / ceiling,
        "sessions": float(len(set().union(*(log.sessions for log in run.logs)))),
        "errors": float(run.errors),
    }


def gets_while_pinging(pool: Any, steady_seconds: float, waits: dict[str, list[int]]) -> Metrics:
    """Scenario 5's run, on a pool whose sessions are all due for a ping.

    A pinger thread calls ``ping()`` repeatedly (1 ms apart) for at least 50 ms, and at least
    until its first call, which refreshes every session, returns; meanwhile PING_WORKERS threads
    do get → 1 ms → put. The duration of each get() that starts inside a ping() call is added to
    ``waits["ping"]``; of those that start 20 ms or more after the last ping() call returned,
    during ``steady_seconds``, to ``waits["steady"]``. Returns the errors of get, put and ping.
    """
    calls: list[tuple[int, int]] = []
    failures: collections.Counter[str] = collections.Counter()

    def pinger() -> None:
        until = time.perf_counter_ns() + 50_000_000
        while not calls or time.perf_counter_ns() < until:
            began = time.perf_counter_ns()
            try:
                pool.ping()
            except Exception as exc:
                failures[type(exc).__name__] += 1
            calls.append((began, time.perf_counter_ns()))
            time.sleep(0.001)

    def drive() -> None:
        thread = threading.Thread(target=pinger, daemon=True)
        thread.start()
        thread.join(JOIN_SECONDS)
        if thread.is_alive():
            failures["ping() did not return"] += 1
            return
        time.sleep(0.02 + steady_seconds)

    run = contend(pool, PING_WORKERS, HOLD_SECONDS, drive)
    starts = [began for began, _ in calls]
    settled = calls[-1][1] + 20_000_000 if calls else math.inf
    for asked, wait in run.gets:
        index = bisect.bisect_right(starts, asked) - 1
        if index >= 0 and asked < calls[index][1]:
            waits["ping"].append(wait)
        elif asked >= settled:
            waits["steady"].append(wait)
    return {"errors": float(run.errors + sum(failures.values()))}


# -- scenarios -------------------------------------------------------------------------------


def measure_pools(
    pools: dict[K, Any],
    rounds: int,
    measure: Callable[[Any], Metrics],
    before_round: Callable[[], None] | None = None,
) -> dict[K, list[Metrics] | Failed]:
    """``interleaved`` over the pools that opened; the others keep their ``Failed``."""
    ready = [variant for variant, pool in pools.items() if not isinstance(pool, Failed)]
    results = interleaved(ready, rounds, lambda variant: measure(pools[variant]), before_round)
    return {v: pool if isinstance(pool, Failed) else results[v] for v, pool in pools.items()}


def side_by_side(
    scenario: str,
    latency_ms: float,
    pool: str,
    official: float | Failed,
    ours: float | Failed,
    fmt: Callable[[float], str],
    goal: Goal | None = None,
    *,
    absolute: bool = False,
    official_prefix: str = "",
) -> Row:
    """A row comparing two measurements. The goal applies to spanpool/official, or with
    ``absolute`` to spanpool's own value (and no ratio is shown)."""
    relative = None if absolute else ratio(ours, official)
    return Row(
        scenario,
        f"{latency_ms:g} ms",
        pool,
        official_prefix + cell(official, fmt),
        cell(ours, fmt),
        relative,
        goal,
        value(ours) if absolute else relative,
        isinstance(ours, Failed),
        value(official),
        value(ours),
    )


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
    fixed, bare = ns[("official", "FixedSizePool")], ns[("bare", "deque")]
    rows = [
        side_by_side(
            "warm get+put, 1 thread",
            latency_ms,
            kind,
            ns[("official", kind)],
            ns[("spanpool", kind)],
            duration,
            Goal("<=", 0.30) if kind == "FixedSizePool" else None,
        )
        for kind in KINDS
    ]
    rows += [
        side_by_side(
            "get+put vs official Fixed",
            latency_ms,
            kind,
            fixed,
            ns[("spanpool", kind)],
            duration,
            Goal("<=", 0.30),
            official_prefix="Fixed ",
        )
        for kind in KINDS
        if kind != "FixedSizePool"
    ]
    rows += [
        side_by_side(
            "get+put vs bare deque+Lock",
            latency_ms,
            kind,
            bare,
            ns[("spanpool", kind)],
            duration,
            Goal("<=", 2.5),
            official_prefix="bare ",
        )
        for kind in KINDS
    ]
    return rows


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
            lambda pool: fairness(pool, settings.contention_seconds),
        )
    rows = []
    title = f"{CONTENTION_THREADS} threads, {CONTENTION_SIZE} sessions:"
    for kind in kinds:
        official, ours = results[("official", kind)], results[("spanpool", kind)]
        # BurstyPool grows past CONTENTION_SIZE when empty: no goals, and sessions instead of
        # throughput against a ceiling of CONTENTION_SIZE sessions.
        fixed = kind != "BurstyPool"
        pool = kind if fixed else f"{kind} (grows)"
        measures: list[tuple[str, str, Callable[[float], str], Goal | None]] = [
            ("min/max cycles", "min/max", "{:.2f}".format, Goal(">=", 0.8)),
            ("worst get() wait", "worst ms", "{:,.1f} ms".format, Goal("<=", 50)),
            ("throughput / ideal", "throughput", "{:.1%}".format, Goal(">=", 0.95, "95%"))
            if fixed
            else ("sessions used", "sessions", "{:.0f}".format, None),
        ]
        for name, key, fmt, goal in measures:
            rows.append(
                side_by_side(
                    f"{title} {name}",
                    latency_ms,
                    pool,
                    median_of(official, key),
                    median_of(ours, key),
                    fmt,
                    goal if fixed else None,
                    absolute=True,
                )
            )
        rows.append(
            side_by_side(
                f"{title} get()/put() errors",
                latency_ms,
                pool,
                total_of(official, "errors"),
                total_of(ours, "errors"),
                "{:.0f}".format,
                Goal("==", 0),
                absolute=True,
            )
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
        pool = make_pool(*variant, size=BIND_SIZE)
        began = time.perf_counter_ns()
        try:
            pool.bind(timing_databases[variant])
            return {"ms": (time.perf_counter_ns() - began) / 1e6}
        finally:
            dispose(pool, delete_sessions=False)

    def counted(variant: tuple[str, str]) -> Metrics:
        database = bench.counted_database(names[variant])
        pool = make_pool(*variant, size=BIND_SIZE)

        def bind() -> int:
            bound = attempt(functools.partial(pool.bind, database))
            if isinstance(bound, Failed):
                bind_errors[variant] = f"bind {bound}"
            return 1

        try:
            metrics = count_requests(server, bind)
            metrics["sessions"] = server.session_count(server.database_path(names[variant]))
            return metrics
        finally:
            dispose(pool, delete_sessions=False)

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
    for kind in kinds:
        rows.append(
            side_by_side(
                f"bind of {BIND_SIZE}, {BATCH_LIMIT} per batch",
                latency_ms,
                kind,
                median_of(timings[("official", kind)], "ms"),
                median_of(timings[("spanpool", kind)], "ms"),
                "{:,.1f} ms".format,
                Goal("<=", 0.5),
            )
        )
        row = side_by_side(
            f"sessions after bind of {BIND_SIZE}",
            latency_ms,
            kind,
            median_of(counts[("official", kind)], "sessions"),
            median_of(counts[("spanpool", kind)], "sessions"),
            "{:.0f}".format,
            Goal("==", BIND_SIZE),
            absolute=True,
        )
        row.official, row.spanpool = sessions(("official", kind)), sessions(("spanpool", kind))
        if ("spanpool", kind) in bind_errors:
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
    rows.append(
        side_by_side(
            "get()/put()/ping() errors",
            latency_ms,
            label,
            total_of(results[("official", "PingingPool")], "errors"),
            total_of(results[("spanpool", "PingingPool")], "errors"),
            "{:.0f}".format,
            Goal("==", 0),
            absolute=True,
        )
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


# -- report ----------------------------------------------------------------------------------

HEADER = ("scenario", "latency", "pool", "official", "spanpool", "ratio", "goal", "")
RIGHT_ALIGNED = {3, 4, 5}


def print_table(rows: Sequence[Row]) -> None:
    lines = [
        (
            row.scenario,
            row.latency,
            row.pool,
            row.official,
            row.spanpool,
            "-" if row.ratio is None else f"{row.ratio:.2f}" if row.ratio >= 0.01 else "<0.01",
            str(row.goal) if row.goal else "-",
            row.verdict,
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [HEADER, *lines]) for i in range(len(HEADER))]

    def render(line: Sequence[str]) -> str:
        return "  ".join(
            text.rjust(width) if i in RIGHT_ALIGNED else text.ljust(width)
            for i, (text, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()

    print(render(HEADER))
    print("  ".join("-" * width for width in widths))
    for line in lines:
        print(render(line))
    verdicts = collections.Counter(row.verdict for row in rows if row.goal is not None)
    judged = verdicts["ok"] + verdicts["miss"]
    unjudged = f", {verdicts['n/a']} not judged (official reference failed)"
    print(f"{verdicts['ok']} of {judged} goals met" + (unjudged if verdicts["n/a"] else ""))


def chart_bars(rows: Sequence[Row]) -> list[Bar]:
    bars = []
    for row in rows:
        if row.goal is None or row.goal.op == "==":
            continue
        if row.verdict == "n/a":
            continue
        score = math.inf if row.checked is None else row.goal.score(row.checked)
        if score is None:
            continue
        shown = "error" if row.checked is None else f"{row.checked:.3g}"
        bars.append(
            Bar(
                f"{row.scenario} | {row.pool} | {row.latency}",
                score,
                f"{shown} (goal {row.goal})",
                row.verdict == "ok",
            )
        )
    return bars


def fallback_warning() -> str | None:
    if SPANPOOL_MISSING is None:
        return None
    rule = "!" * 100
    return (
        f"{rule}\n"
        f"!! WARNING: spanpool's pools could not be imported ({SPANPOOL_MISSING}).\n"
        "!! The 'spanpool' column measures the OFFICIAL pools a second time: its numbers and\n"
        "!! ratios say nothing about spanpool.\n"
        f"{rule}"
    )


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


def settings_for(args: argparse.Namespace) -> Settings:
    if args.seconds is not None and args.seconds <= 0:
        raise SystemExit("--seconds must be > 0")
    seconds = args.seconds or (0.5 if args.quick else 2.0)
    return Settings(
        rounds=3 if args.quick else 7,
        slow_rounds=1 if args.quick else 3,
        ping_rounds=1 if args.quick else 15,
        cycles=2_000 if args.quick else 20_000,
        cycle_seconds=seconds / 8,
        contention_seconds=seconds,
        steady_seconds=max(0.1, seconds / 4),
    )


def measure(args: argparse.Namespace) -> list[Row]:
    """Measure the chosen scenarios (``--scenario``, all by default) and return the rows."""
    settings = settings_for(args)
    os.environ.update(REGULAR_SESSIONS_ENV)  # the official Database then uses its pool
    endpoint = getattr(args, "endpoint", None)
    chosen = getattr(args, "scenario", None)
    wanted = tuple(getattr(args, "latency", None) or LATENCIES_MS)
    began = time.monotonic()
    rows: list[Row] = []
    with ExitStack() as servers:
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
