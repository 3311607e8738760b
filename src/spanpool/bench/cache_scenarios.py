"""The shared pool seen from outside, for ``bench/cache.py``: snapshot queries through the
official ``Database`` at 5 ms per RPC against the same with ``BurstyPool``, and the hand-back
of a session leased by one process to another that found the pool full."""

from __future__ import annotations

import queue
import statistics
import time
from typing import Any

from spanpool import BurstyPool, CacheSessionPool
from spanpool.testing import connect

from .cache import DATABASE
from .harness import open_store

RPC_MS = 5.0
QUERY_GOALS = {"sqlite": 1.02, "redis": 1.05}
"""Per-query time through the official Database at RPC_MS, against the same with BurstyPool."""


def database_scenario(endpoint: str, stores: list[tuple[str, str]], rounds: int) -> None:
    """Snapshot queries through the official Database with RPC_MS per RPC: BurstyPool and
    CacheSessionPool over each store take turns query by query (the first one changing every
    round), ``rounds`` rounds of 20 queries each; the median time per query is compared, so
    that the load of other processes on the machine falls on every pool alike. Run it under
    ``harness.session_routing(regular=True)``: the official Database then uses these pools."""
    pools: dict[str, Any] = {"bursty": BurstyPool(target_size=4)}
    opened = []
    for kind, address in stores:
        store = open_store(kind, address)
        opened.append(store)
        pools[kind] = CacheSessionPool(store, max_sessions=8, min_sessions=1)
    databases = {
        kind: connect(endpoint, f"{DATABASE}query{kind}", pool=pool) for kind, pool in pools.items()
    }

    def query(database: Any) -> None:
        with database.snapshot() as snapshot:
            list(snapshot.execute_sql("SELECT 1"))

    for database in databases.values():
        for _ in range(5):
            query(database)
    times: dict[str, list[float]] = {kind: [] for kind in databases}
    order = list(databases.items())
    for round_number in range(rounds):
        turns = order[round_number % len(order) :] + order[: round_number % len(order)]
        for _ in range(20):
            for kind, database in turns:
                started = time.perf_counter()
                query(database)
                times[kind].append((time.perf_counter() - started) * 1000)
    base = statistics.median(times["bursty"])
    print(
        f"Per query through the official Database (snapshot, SELECT 1), {RPC_MS:g} ms per RPC, "
        f"median of {rounds} rounds of 20 queries, pools taking turns query by query"
    )
    for kind, values in times.items():
        per_query = statistics.median(values)
        line = f"  {kind:7} {per_query:.3f} ms"
        if kind in QUERY_GOALS:
            ratio = per_query / base
            verdict = "ok" if ratio <= QUERY_GOALS[kind] else "MISSED"
            line += f"  {ratio:.3f}x BurstyPool (goal <= {QUERY_GOALS[kind]:g}x) {verdict}"
        print(line)
    pools["bursty"].clear()  # while the server still answers
    for store in opened:
        store.close()


def waiter(kind: str, address: str, endpoint: str, database_id: str, go: Any, results: Any) -> None:
    """Each time ``go`` says so: take the pool's last free session, then one more (the pool
    is then full: the leasing process must give one back); report how long that took."""
    store = open_store(kind, address)
    pool = CacheSessionPool(store, max_sessions=2, min_sessions=0, sleep_interval_seconds=30.0)
    connect(endpoint, database_id, pool=pool)
    while go.get() == "go":
        first = pool.acquire()
        started = time.perf_counter()
        second = pool.acquire()
        results.put(time.perf_counter() - started)
        pool.release(first)
        pool.release(second)
    store.close()


def hand_back(context: Any, endpoint: str, stores: list[tuple[str, str]], rounds: int) -> None:
    """How soon a session leased by one process goes to a waiter in another: this process
    leases a session of a pool of 2, another takes the last free one and then waits for one
    more. ``rounds`` times per store (a process that saw a want leases again a second later)."""
    print(
        "Hand-back: a session leased by one process, wanted by another that found the pool "
        f"full (median and worst of {rounds})"
    )
    for kind, address in stores:
        store = open_store(kind, address)
        pool = CacheSessionPool(store, max_sessions=2, min_sessions=0)
        database_id = f"{DATABASE}handback{kind}"
        connect(endpoint, database_id, pool=pool)
        go, results = context.Queue(), context.Queue()
        child = context.Process(
            target=waiter, args=(kind, address, endpoint, database_id, go, results)
        )
        child.start()
        waits: list[float] = []
        try:
            for _ in range(rounds):
                time.sleep(1.2)  # a process that saw a want leases again a second later
                pool.release(pool.acquire())  # leased here
                go.put("go")
                waits.append(results.get(timeout=60) * 1000)
        except queue.Empty:
            print(f"  {kind:7} error: the waiting process did not report")
        finally:
            go.put("stop")
            child.join(30)
            if child.is_alive():
                child.kill()
            store.close()
        if waits:
            print(f"  {kind:7} {statistics.median(waits):.2f} ms (worst {max(waits):.2f} ms)")
