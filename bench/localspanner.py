"""How fast LocalSpanner answers the official client: GetSession/s and ``SELECT 1``/s.

LocalSpanner (as a ``spanpool serve`` process) must not be the bottleneck of pool benchmarks; the goal on a 2-core machine is at
least 2000 GetSession/s and 1000 ``SELECT 1``/s from 8 client threads. Run with
``./dev run python bench/localspanner.py [--threads 8] [--seconds 3]``.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("GOOGLE_CLOUD_SPANNER_MULTIPLEXED_SESSIONS", "false")

from spanpool.testing import connect, serve_in_process


def rate(threads: int, seconds: float, work: Callable[[int], None]) -> float:
    """Calls per second of ``work`` from ``threads`` threads over ``seconds``."""
    counts = [0] * threads
    start = threading.Barrier(threads + 1)
    stop = threading.Event()

    def loop(n: int) -> None:
        start.wait()
        while not stop.is_set():
            work(n)
            counts[n] += 1

    workers = [threading.Thread(target=loop, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    start.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    return sum(counts) / (time.perf_counter() - began)


def measure(threads: int = 8, seconds: float = 3.0) -> dict[str, float]:
    # The server runs in its own process, as it would beside a real application.
    with serve_in_process() as endpoint:
        database = connect(endpoint, "bench")
        sessions: list[Any] = []
        for _ in range(threads):
            session = database.session()
            session.create()
            sessions.append(session)
        # Warm up the channel and the server's caches.
        for session in sessions:
            session.exists()
            session.ping()
        results = {
            "GetSession/s": rate(threads, seconds, lambda n: sessions[n].exists()),
            "SELECT 1/s (ExecuteSql)": rate(threads, seconds, lambda n: sessions[n].ping()),
        }
        for session in sessions:
            session.delete()
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    goals = {"GetSession/s": 2000.0, "SELECT 1/s (ExecuteSql)": 1000.0}
    print(f"LocalSpanner, official client, {args.threads} threads, {os.cpu_count()} cores")
    for name, value in measure(args.threads, args.seconds).items():
        verdict = "ok" if value >= goals[name] else "BELOW GOAL"
        print(f"  {name:26s} {value:8.0f}   goal >= {goals[name]:.0f}  {verdict}")


if __name__ == "__main__":
    main()
