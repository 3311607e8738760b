"""What only the blocking pools face: many threads at once. Hand-written (the other pool
tests are asyncio sources of generated blocking tests)."""

from __future__ import annotations

import threading

from spanpool import PingingPool
from spanpool.testing import LocalSpanner

from ._support import Pools, assert_books_match, select_one


def test_ping_loop_concurrent_with_eight_threads_of_checkouts(
    server: LocalSpanner,
) -> None:
    pools = Pools(server)
    pool = PingingPool(size=5, ping_interval=0.001)
    database = pools.bind(pool, "stress")
    stop = threading.Event()
    errors: list[BaseException] = []
    holders: dict[str, str] = {}
    holders_lock = threading.Lock()
    start = threading.Barrier(9)

    def pinger() -> None:
        try:
            start.wait(10)
            while not stop.is_set():
                pool.ping()
                stop.wait(0.002)
        except BaseException as exc:
            errors.append(exc)

    def worker() -> None:
        me = threading.current_thread().name
        try:
            start.wait(10)
            for _ in range(50):
                with pool.session() as session:
                    with holders_lock:
                        other = holders.setdefault(session.name, me)
                    assert other == me, f"{session.name} handed to {me} while {other} held it"
                    try:
                        assert select_one(session) == [[1]]
                    finally:
                        with holders_lock:
                            del holders[session.name]
        except BaseException as exc:
            errors.append(exc)

    ping_thread = threading.Thread(target=pinger, name="pinger", daemon=True)
    workers = [threading.Thread(target=worker, name=f"worker-{i}") for i in range(8)]
    ping_thread.start()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(60)
    pings_meanwhile = pool.get_stats()["pings"]
    stop.set()
    ping_thread.join(30)

    assert not ping_thread.is_alive()
    assert not any(thread.is_alive() for thread in workers)
    assert errors == []
    # Sessions in constant use need no ping; once the load stops they are due again.
    pool.ping()
    assert pool.get_stats()["pings"] > pings_meanwhile
    stats = pool.get_stats()
    assert (stats["pool_available"], stats["pool_in_use"], stats["pool_in_maintenance"]) == (
        5,
        0,
        0,
    )
    assert server.session_count(database.name) == 5
    assert_books_match(pool, server, database.name)
    pool.close()
