"""How fast LocalSpanner answers the official client: GetSession/s and ``SELECT 1``/s.

LocalSpanner (as a ``spanpool serve`` process) must not be the bottleneck of pool benchmarks;
the goal on a 2-core machine is at least 2000 GetSession/s and 1000 ``SELECT 1``/s from 8
client threads. The official client spends about as much CPU per call as the server, and one
client process cannot use more than one core, so the 8 threads are measured both in one
process and spread over two; the server's own CPU per call is reported too.

Run with ``./dev run python -m spanpool.bench.localspanner [--seconds 3]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from spanpool.testing import REGULAR_SESSIONS_ENV, connect, serve_in_process

GOALS = {"GetSession": 2000.0, "SELECT 1": 1000.0}


def _count_calls(threads: int, seconds: float, work: Callable[[int], None]) -> int:
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
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    return sum(counts)


def _client(
    endpoint: str, threads: int, seconds: float, kind: str, ready: Any, go: Any, out: Any
) -> None:
    os.environ.update(REGULAR_SESSIONS_ENV)
    database = connect(endpoint, "bench")
    sessions = []
    for _ in range(threads):
        session = database.session()
        session.create()
        session.exists()
        session.ping()
        sessions.append(session)
    ready.wait()
    go.wait()
    if kind == "GetSession":
        done = _count_calls(threads, seconds, lambda n: sessions[n].exists())
    else:
        done = _count_calls(threads, seconds, lambda n: sessions[n].ping())
    for session in sessions:
        session.delete()
    out.put(done)


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    endpoint: str, server_pid: int, kind: str, processes: int, threads: int, seconds: float
) -> tuple[float, float]:
    """Calls per second, and server CPU microseconds per call."""
    context = multiprocessing.get_context("spawn")
    ready = context.Barrier(processes + 1)
    go = context.Event()
    out = context.Queue()
    clients = [
        context.Process(
            target=_client,
            args=(endpoint, threads // processes, seconds, kind, ready, go, out),
        )
        for _ in range(processes)
    ]
    for client in clients:
        client.start()
    ready.wait()
    cpu_before = _cpu_seconds(server_pid)
    go.set()
    total = sum(out.get() for _ in clients)
    cpu_after = _cpu_seconds(server_pid)
    for client in clients:
        client.join()
    return total / seconds, (cpu_after - cpu_before) / total * 1e6 if total else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    print(f"LocalSpanner ('spanpool serve' process), official client, {os.cpu_count()} cores")
    print(f"{'RPC':12s} {'client processes':>17s} {'calls/s':>9s} {'server us/call':>15s}  goal")
    with serve_in_process() as server:
        for kind in ("GetSession", "SELECT 1"):
            for processes in (1, 2):
                rate, server_us = measure(
                    server.endpoint, server.pid, kind, processes, args.threads, args.seconds
                )
                verdict = "ok" if rate >= GOALS[kind] else "below"
                print(
                    f"{kind:12s} {processes:>8d} x {args.threads // processes} threads "
                    f"{rate:9.0f} {server_us:15.0f}  >= {GOALS[kind]:.0f} {verdict}"
                )


if __name__ == "__main__":
    main()
