"""MultiplexedPool sharing one session between processes through a store (SQLite file, Redis),
and carrying on when the store fails."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from spanpool import MultiplexedPool
from spanpool.cache.store import Holder
from spanpool.errors import StoreError
from spanpool.stores import MemoryStore
from spanpool.testing import LocalSpanner

from ..conftest import ACCOUNTS_DDL, FakeClock, worker_processes
from . import _multiplexed_workers as workers


@pytest.fixture(scope="module")
def mp() -> Any:
    return worker_processes("tests.pools._multiplexed_workers")


@pytest.fixture(scope="module")
def server() -> Iterator[LocalSpanner]:
    with LocalSpanner(ddl=ACCOUNTS_DDL) as srv:
        yield srv


def _db_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def _creates(server: LocalSpanner, database: str) -> int:
    return sum(
        1 for r in server.request_log() if r.method == "CreateSession" and r.target == database
    )


def test_new_workers_with_a_warm_store_send_no_create_session(
    mp: Any, server: LocalSpanner, store_address: tuple[str, str]
) -> None:
    db_id = _db_id("warm")
    name = server.database_path(db_id)
    with mp.Pool(2, maxtasksperchild=1) as processes:  # a new process for each worker
        first = processes.apply(workers.first_result, (server.endpoint, db_id, *store_address))
        later = processes.starmap(
            workers.first_result, [(server.endpoint, db_id, *store_address)] * 3
        )
    assert first["rows"] == [[1]] and first["sessions_created"] == 1
    for result in later:
        assert result["rows"] == [[1]]
        assert result["session"] == first["session"]
        assert result["sessions_created"] == 0
    assert _creates(server, name) == 1
    assert server.multiplexed_sessions(name) == [first["session"]]


def test_a_lost_session_is_replaced_once_for_every_process(
    mp: Any, server: LocalSpanner, store_address: tuple[str, str]
) -> None:
    db_id = _db_id("lost")
    name = server.database_path(db_id)
    between, report = mp.Event(), mp.Queue()
    children = [
        mp.Process(
            target=workers.query_twice,
            args=(server.endpoint, db_id, *store_address, between, report),
        )
        for _ in range(4)
    ]
    for child in children:
        child.start()
    try:
        firsts = [report.get(timeout=60) for _ in children]
        assert {kind for kind, *_ in firsts} == {"first"}
        assert len({session for _, session in firsts}) == 1
        assert server.lose_multiplexed_sessions(name) == [firsts[0][1]]
        between.set()
        seconds = [report.get(timeout=60) for _ in children]
    finally:
        for child in children:
            child.join(30)
            if child.is_alive():
                child.kill()
    assert all(kind == "second" and ok for kind, _, ok in seconds), seconds
    assert len({session for _, session, _ in seconds}) == 1
    assert _creates(server, name) == 2
    assert server.multiplexed_sessions(name) == [seconds[0][1]]


class FlakyStore:
    """A MemoryStore whose steps fail while ``broken`` is set."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.broken = False

    def __getattr__(self, name: str) -> Any:
        step = getattr(self.inner, name)

        def run(*args: Any, **kwargs: Any) -> Any:
            if self.broken:
                raise StoreError("the store is down")
            return step(*args, **kwargs)

        return run


def test_a_failing_store_falls_back_to_a_local_session_and_recovers(
    server: LocalSpanner, clock: FakeClock
) -> None:
    store = FlakyStore()
    store.broken = True
    pool = MultiplexedPool(store=store, clock=clock)
    database = server.database(_db_id("flaky"), pool=pool)
    with database.snapshot() as snapshot:
        assert list(snapshot.execute_sql("SELECT 1")) == [[1]]
    assert pool.get_stats()["store_errors"] >= 1
    local = pool.session_name
    store.broken = False
    clock.advance(120)
    pool.maintain()
    assert store.multiplexed_get(pool._entry.key).name == local  # published once it works
    # Another process (here: another pool on the same store) now finds it.
    other = MultiplexedPool(store=store, clock=clock)
    again = server.database(database.database_id, pool=other)
    with again.snapshot() as snapshot:
        assert list(snapshot.execute_sql("SELECT 1")) == [[1]]
    assert other.session_name == local
    assert _creates(server, database.name) == 1


def test_a_successor_published_elsewhere_is_picked_up_by_maintenance(
    server: LocalSpanner, clock: FakeClock
) -> None:
    store = MemoryStore()
    pool = MultiplexedPool(store=store, clock=clock)
    database = server.database(_db_id("pick"), pool=pool)
    with database.snapshot() as snapshot:
        assert list(snapshot.execute_sql("SELECT 1")) == [[1]]
    old = pool.session_name
    key = pool._entry.key
    # Another host rotates: it makes a session and publishes it under the lease.
    lease = store.multiplexed_claim(
        key, holder=Holder("another-host", 1), now=clock(), lease=30, replacing=old
    )
    made = database.spanner_api.create_session(
        request={"database": database.name, "session": {"multiplexed": True}}
    )
    store.multiplexed_publish(key, lease.token, name=made.name, created_at=clock())
    assert pool.session_name == old  # nothing read on the request path
    clock.advance(120)
    pool.maintain()
    assert pool.session_name == made.name
    with database.snapshot() as snapshot:
        assert list(snapshot.execute_sql("SELECT 1")) == [[1]]
    assert pool.get_stats()["generation"] == 2
