"""How the blocking pools are driven and timed: warm cycles in one thread, the requests a server
receives meanwhile, and threads contending for a pool's sessions (while ``ping()`` runs, for
scenario 5)."""

from __future__ import annotations

import bisect
import collections
import functools
import gc
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from spanpool.testing import LocalSpanner

from .harness import JOIN_SECONDS
from .table import Metrics, fairness

CONTENTION_THREADS = 32
CONTENTION_SIZE = 10
HOLD_SECONDS = 0.001
PING_WORKERS = 4


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


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


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


def contention(pool: Any, seconds: float) -> Metrics:
    """Scenario 3's run: CONTENTION_THREADS threads on ``pool`` for ``seconds``."""
    run = contend(pool, CONTENTION_THREADS, HOLD_SECONDS, functools.partial(time.sleep, seconds))
    return {
        **fairness(
            [log.cycles for log in run.logs],
            sum(log.hold_ns for log in run.logs),
            max((wait for _, wait in run.gets), default=0),
            run.elapsed_ns,
            CONTENTION_SIZE,
        ),
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
