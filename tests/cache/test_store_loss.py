"""A shared pool whose store loses its state: a Redis without persistence that restarts, a
SQLite file deleted or replaced under the processes using it. The pool names its sessions on
the server with a label, notices the lost state (its epoch is gone) and reconciles from the
server, so that ``max_sessions`` holds, nothing leaks, and ``clear()`` tells the truth.

LocalSpanner and the pool share one fake clock (the pool's reads wall time, LocalSpanner's
reports it), so that the server's last-use times and the pool's rules line up.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions

from spanpool import CacheSessionPool, PoolTimeout
from spanpool.bridge import client as bridge
from spanpool.cache._reconcile import ORPHAN_GRACE, RECONCILE_LEASE
from spanpool.cache.pool import POOL_LABEL, ReconcileReport
from spanpool.stores import Holder, MemoryStore, SQLiteStore
from spanpool.testing import LocalSpanner
from spanpool.testing.redis_server import RedisProcess, redis_process, valkey_binary

from ..conftest import ACCOUNTS_DDL, FakeClock

_ids = itertools.count()


class Clocks:
    """LocalSpanner's clock, and the pool's: the same time, as wall-clock seconds."""

    def __init__(self) -> None:
        self.server = FakeClock(1000.0)
        self._wall0 = time.time() - 1000.0

    def pool(self) -> float:
        return self._wall0 + self.server()

    def advance(self, seconds: float) -> None:
        self.server.advance(seconds)


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture
def spanner(clocks: Clocks) -> Iterator[LocalSpanner]:
    with LocalSpanner(ddl=ACCOUNTS_DDL, clock=clocks.server) as server:
        yield server


class Lossy:
    """A store that can be made to lose everything it holds, as in production."""

    def __init__(self, kind: str, tmp_path: Path, redis: RedisProcess | None) -> None:
        self.kind = kind
        self.path = tmp_path / "pool.db"
        self.redis = redis
        self.store = self.open()

    def open(self) -> Any:
        if self.kind in ("redis", "valkey"):
            from spanpool.stores import RedisStore

            assert self.redis is not None
            return RedisStore(self.redis.url, socket_timeout=5.0)
        return SQLiteStore(self.path)

    def lose_everything(self) -> None:
        if self.kind in ("redis", "valkey"):
            assert self.redis is not None
            self.redis.restart()  # no RDB, no AOF: it comes back empty
        elif self.kind == "sqlite-deleted":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        else:  # "sqlite-replaced": another (empty) store file moved over it
            fresh = self.path.with_name("fresh.db")
            SQLiteStore(fresh).close()
            for suffix in ("-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            os.replace(fresh, self.path)


@pytest.fixture(params=["redis", "valkey", "sqlite-deleted", "sqlite-replaced"])
def lossy(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Lossy]:
    if request.param in ("redis", "valkey"):
        binary = None
        if request.param == "valkey":
            binary = valkey_binary()
            if binary is None:
                pytest.skip("no valkey-server for this platform")
        with redis_process(binary) as redis:
            made = Lossy(request.param, tmp_path, redis)
            yield made
            made.store.close()
    else:
        made = Lossy(request.param, tmp_path, None)
        yield made
        made.store.close()


def new_pool(
    store: Any, spanner: LocalSpanner, clocks: Clocks, db_id: str | None = None, **options: Any
) -> tuple[CacheSessionPool, Any]:
    options.setdefault("sleep_interval_seconds", 0.02)
    options.setdefault("max_cycles_to_wait_for_session", 2)
    pool = CacheSessionPool(store, clock=clocks.pool, **options)
    database = spanner.database(db_id or f"loss{next(_ids)}", pool=pool)
    return pool, database


def listed(pool: CacheSessionPool, database: Any) -> list[str]:
    """Names of the sessions the server lists with the pool's label."""
    found = bridge.list_sessions(database, {POOL_LABEL: pool.labels[POOL_LABEL]})
    return [session.name for session in found]


def use(session: Any) -> None:
    """A request on the session: the server's last-use time moves."""
    assert bridge.ping(session)


def test_a_store_that_loses_its_state_loses_no_session(
    lossy: Lossy, spanner: LocalSpanner, clocks: Clocks, caplog: pytest.LogCaptureFixture
) -> None:
    """The measured failure: a Redis without persistence restarted under a pool with
    max_sessions=6 left the server at 11 sessions, and 5 on it after a clear() that said True.

    ``elsewhere`` stands for the other hosts of the service; ``here`` for this one."""
    db_id = f"loss{next(_ids)}"
    options: dict[str, Any] = {"max_sessions": 6, "min_sessions": 0}
    elsewhere, database = new_pool(
        lossy.store, spanner, clocks, db_id, holder=Holder("other-host", 7), **options
    )
    here, _ = new_pool(lossy.store, spanner, clocks, db_id, **options)
    held = [elsewhere.acquire() for _ in range(6)]
    for session in held[3:]:
        elsewhere.release(session)  # three idle, three still checked out
    clocks.advance(2 * ORPHAN_GRACE)
    use(held[0])  # in use on the server right now; held[1] and held[2] are held but quiet
    before = {session.name for session in held}

    lossy.lose_everything()

    # The next step notices, and adopts what the server lists before creating anything.
    caplog.set_level(logging.INFO, logger="spanpool")
    again = [here.acquire() for _ in range(5)]
    assert {session.name for session in again} == before - {held[0].name}  # none new
    assert "reconciled with the server (6 sessions listed)" in caplog.text
    with pytest.raises(PoolTimeout):
        here.get(timeout=0)  # the sixth may still be in use by its holder: not handed out
    assert spanner.peak_session_count(database.name) == 6
    stats = here.get_stats()
    assert (stats["pool_in_use"], stats["pool_available"], stats["pool_creating"]) == (6, 0, 0)

    # The holders from before the loss return theirs: the store no longer knows their claims.
    for session in held[:3]:
        elsewhere.release(session)
    assert elsewhere.get_stats()["claims_lost"] == 3
    for session in again:
        here.release(session)
    # The one in use at the loss stays out of reach until unused for ORPHAN_GRACE.
    assert here.get_stats()["pool_available"] == 5
    clocks.advance(ORPHAN_GRACE + 1)
    assert here.maintain().reclaimed == 1
    assert here.get_stats()["pool_available"] == 6
    everything = [here.acquire() for _ in range(6)]
    assert {session.name for session in everything} == before
    for session in everything:
        here.release(session)

    assert spanner.peak_session_count(database.name) == 6
    lossy.lose_everything()
    assert here.clear() is True  # the store knew none of them: the server's list did
    assert listed(here, database) == []
    assert spanner.session_count(database.name) == 0


def test_processes_that_reopen_the_store_agree_after_the_loss(
    lossy: Lossy, spanner: LocalSpanner, clocks: Clocks
) -> None:
    """Two pools (as two processes would) over their own store objects: one notices the loss
    and reconciles; the other finds the reconciled state and creates nothing."""
    db_id = f"loss{next(_ids)}"
    first, database = new_pool(lossy.store, spanner, clocks, db_id, max_sessions=4)
    second_store = lossy.open()
    try:
        second, _ = new_pool(second_store, spanner, clocks, db_id, max_sessions=4)
        assert first.labels == second.labels  # the same pool, named alike on the server
        sessions = [first.acquire(), second.acquire(), second.acquire()]
        for session in sessions[:1]:
            first.release(session)
        for session in sessions[1:]:
            second.release(session)
        clocks.advance(2 * ORPHAN_GRACE)
        lossy.lose_everything()
        taken = [second.acquire() for _ in range(3)] + [first.acquire()]
        assert spanner.peak_session_count(database.name) == 4
        assert len({session.name for session in taken}) == 4
        for session in taken[:3]:
            second.release(session)
        first.release(taken[3])
        assert second.clear() is True
        assert spanner.session_count(database.name) == 0
    finally:
        second_store.close()


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    opened = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "p.db")
    yield opened
    opened.close()


def test_reconcile_adopts_what_the_store_forgot_and_deletes_the_surplus(
    store: Any, spanner: LocalSpanner, clocks: Clocks
) -> None:
    pool, database = new_pool(store, spanner, clocks, max_sessions=5, min_sessions=4)
    assert spanner.session_count(database.name) == 4
    store.clear(pool.key)  # the store forgets, the server keeps them
    pool.max_sessions = 3
    clocks.advance(2 * ORPHAN_GRACE)
    assert pool.reconcile() == ReconcileReport(listed=4, deleted=1)
    assert spanner.session_count(database.name) == 3
    assert pool.get_stats()["pool_available"] == 3
    # Known sessions are left alone: reconciling again changes nothing.
    assert pool.reconcile() == ReconcileReport(listed=3, deleted=0)
    assert pool.get_stats()["pool_available"] == 3
    assert pool.clear() is True


def test_only_this_pools_sessions_are_adopted(
    store: Any, spanner: LocalSpanner, clocks: Clocks, regular_sessions: None
) -> None:
    """Another pool of the same database (another store, or another pool_name) and plain
    sessions of the database are never touched."""
    db_id = f"loss{next(_ids)}"
    pool, database = new_pool(store, spanner, clocks, db_id, max_sessions=4, min_sessions=2)
    other, _ = new_pool(MemoryStore(), spanner, clocks, db_id, max_sessions=4, min_sessions=2)
    named, _ = new_pool(
        MemoryStore(),
        spanner,
        clocks,
        db_id,
        max_sessions=4,
        min_sessions=1,
        pool_name="batch-jobs",
    )
    database.session(labels={POOL_LABEL: "something-else"}).create()
    assert len({pool.labels[POOL_LABEL], other.labels[POOL_LABEL], "batch-jobs"}) == 3
    assert named.labels[POOL_LABEL] == "batch-jobs"
    assert spanner.session_count(database.name) == 6
    assert pool.reconcile() == ReconcileReport(listed=2, deleted=0)
    assert other.clear() is True
    assert pool.clear() is True
    assert spanner.session_count(database.name) == 2  # named's, and the plain one
    assert named.clear() is True


def test_a_reconciler_that_died_is_taken_over_after_its_lease(
    store: Any, spanner: LocalSpanner, clocks: Clocks
) -> None:
    pool, database = new_pool(store, spanner, clocks, max_sessions=2, min_sessions=0)
    # A process took a reconciliation lease, and died.
    assert store.start_reconcile(
        pool.key, now=clocks.pool(), lease_seconds=RECONCILE_LEASE, force=True
    )
    with pytest.raises(PoolTimeout):
        pool.get(timeout=0)  # nothing is created while the server is not reconciled
    assert spanner.session_count(database.name) == 0
    clocks.advance(RECONCILE_LEASE)
    session = pool.get(timeout=0)  # the lease ran out: this one reconciles, then creates
    pool.release(session)
    assert spanner.session_count(database.name) == 1


def test_a_failing_list_leaves_nothing_half_done(
    store: Any, spanner: LocalSpanner, clocks: Clocks
) -> None:
    pool, database = new_pool(store, spanner, clocks, max_sessions=2, min_sessions=1)
    store.clear(pool.key)
    spanner.inject_error("ListSessions", "INTERNAL", count=1)
    with pytest.raises(Exception, match="injected"):
        pool.acquire()
    spanner.clear_faults()
    clocks.advance(RECONCILE_LEASE + ORPHAN_GRACE)  # the lease ran out; the session is quiet
    session = pool.acquire()
    assert spanner.session_count(database.name) == 1  # adopted, not created anew
    pool.release(session)
    assert pool.clear() is True


def test_without_the_permission_to_list_the_pool_goes_on(
    store: Any, spanner: LocalSpanner, clocks: Clocks, caplog: pytest.LogCaptureFixture
) -> None:
    """A pool whose credentials may not list sessions cannot reconcile: it says so, works with
    the store's state as it is, and clear() trusts its deletes; reconcile() raises."""
    spanner.inject_error("ListSessions", "PERMISSION_DENIED", count=100)
    pool, database = new_pool(store, spanner, clocks, max_sessions=2, min_sessions=1)
    assert "cannot list the pool's sessions" in caplog.text
    session = pool.acquire()
    pool.release(session)
    with pytest.raises(exceptions.PermissionDenied):
        pool.reconcile()
    assert pool.clear() is True
    assert spanner.session_count(database.name) == 0
    spanner.clear_faults()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"labels": {POOL_LABEL: "mine"}}, "must not use the key 'spanpool-pool'"),
        ({"labels": {f"k{i}": "v" for i in range(64)}}, "labels must have at most 63"),
        ({"pool_name": "Upper"}, "pool_name must be"),
        ({"pool_name": "x" * 64}, "pool_name must be"),
        ({"pool_name": 7}, "pool_name must be"),
    ],
)
def test_labels_leave_room_for_the_pools_own(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CacheSessionPool(MemoryStore(), **options)


def test_pools_of_one_sqlite_file_share_their_label(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    first, second, elsewhere = SQLiteStore(path), SQLiteStore(str(path)), MemoryStore()
    try:
        assert first.identity == second.identity != elsewhere.identity
        assert str(path.resolve()) in first.identity
    finally:
        first.close()
        second.close()
