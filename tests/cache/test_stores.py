"""The store contract (``spanpool.cache.store``), checked against every store.

``MemoryStore`` is the reference; ``SQLiteStore`` and ``RedisStore`` must behave the same. Each
test uses its own pool key, so the Redis tests can share one server.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import queue
import sqlite3
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spanpool.errors import StoreError
from spanpool.stores import (
    Acquired,
    Checkout,
    Claim,
    Holder,
    MemoryStore,
    SessionRecord,
    SQLiteStore,
    Store,
    StoreStats,
    TakeIdle,
)

from ..conftest import run_in_threads
from ._epochs import NEVER, A, B, acquire, begin


def make_store(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        return SQLiteStore(tmp_path / "pool.db")
    from spanpool.stores import RedisStore

    url = request.getfixturevalue("valkey_url" if kind == "valkey" else "redis_url")
    return RedisStore(url)


@pytest.fixture(params=["memory", "sqlite", "redis", "valkey"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = make_store(request.param, request, tmp_path)
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "pool.db")
    yield s
    s.close()


@pytest.fixture
def key(request: pytest.FixtureRequest) -> str:
    """A pool key of its own, with its epoch in the test's store."""
    new = f"test-pool-{uuid.uuid4().hex}"
    for name in ("store", "sqlite_store"):
        if name in request.fixturenames:
            begin(request.getfixturevalue(name), new)
    return new


def add(
    store: Store,
    key: str,
    name: str,
    *,
    now: float = 10.0,
    created_at: float | None = None,
    last_used: float | None = None,
    check_out: bool = False,
    holder: Holder = A,
) -> str:
    """Record a new session through a permit from ``reserve``; returns the permit's token."""
    stats = store.stats(key)
    total = stats.idle + stats.in_use + stats.creating
    begin(store, key, now)
    [token] = store.reserve(key, holder=holder, now=now, target=total + 1, max_sessions=total + 1)
    record = SessionRecord(
        name, now if created_at is None else created_at, now if last_used is None else last_used
    )
    assert store.created(key, token, record, now=now, check_out=check_out)
    return token


def check_out(store: Store, key: str, name: str, now: float, holder: Holder = A) -> str:
    """Create a session checked out to ``holder``, through ``acquire``; returns its token."""
    acquired = acquire(store, key, now, holder=holder, max_sessions=100)
    assert acquired.record is None and acquired.token is not None
    record = SessionRecord(name, now, now)
    assert store.created(key, acquired.token, record, now=now, check_out=True)
    return acquired.token


def snapshot(store: Store, key: str) -> tuple[StoreStats, list[Claim]]:
    return store.stats(key), sorted(store.claims(key), key=lambda c: c.token)


def names(records: Any) -> list[str]:
    return [r.name for r in records]


# -- acquire, created, create_failed --------------------------------------------------------


def test_a_fresh_key_has_nothing(store: Store, key: str) -> None:
    assert store.stats(key) == StoreStats(0, 0, 0, 0, None)
    assert store.claims(key) == []
    assert store.clear(key) == []


def test_acquire_on_an_empty_pool_grants_a_permit_and_starts_the_window(
    store: Store, key: str
) -> None:
    acquired = acquire(store, key, 100.0)
    assert acquired.record is None and acquired.token is not None
    assert acquired.dropped == () and not acquired.reclaimed
    assert store.stats(key) == StoreStats(0, 0, 1, 0, 100.0)
    assert store.claims(key) == [Claim(acquired.token, A, 100.0)]
    # The window is started only once.
    acquire(store, key, 150.0)
    assert store.stats(key).window_start == 100.0


def test_created_checked_out_keeps_the_permit_token_and_holder(store: Store, key: str) -> None:
    acquired = acquire(store, key, 100.0, holder=B)
    assert acquired.token is not None
    record = SessionRecord("s1", 99.0, 99.5)
    assert store.created(key, acquired.token, record, now=105.0, check_out=True)
    assert store.stats(key) == StoreStats(0, 1, 0, 1, 100.0)
    assert store.claims(key) == [Claim(acquired.token, B, 105.0, "s1")]
    assert store.release(key, "s1", acquired.token, now=110.0)
    again = acquire(store, key, 120.0)
    assert again.record == SessionRecord("s1", 99.0, 110.0)


def test_created_idle_counts_as_a_release(store: Store, key: str) -> None:
    first = acquire(store, key, 100.0)
    assert first.token is not None
    record = SessionRecord("s1", 100.0, 101.0)
    assert store.created(key, first.token, record, now=101.0, check_out=False)
    assert store.stats(key) == StoreStats(1, 0, 0, 0, 100.0)
    assert store.claims(key) == []
    assert store.wait_for_release(key, 0.0, first.releases)
    second = acquire(store, key, 102.0)
    assert second.record == record
    assert second.releases > first.releases


def test_created_with_an_unknown_or_given_back_permit_records_nothing(
    store: Store, key: str
) -> None:
    record = SessionRecord("s1", 100.0, 100.0)
    assert not store.created(key, "no-such-token", record, now=100.0, check_out=True)
    acquired = acquire(store, key, 100.0)
    assert acquired.token is not None
    store.create_failed(key, acquired.token)
    assert not store.created(key, acquired.token, record, now=101.0, check_out=False)
    assert not store.created(key, acquired.token, record, now=101.0, check_out=True)
    assert store.stats(key) == StoreStats(0, 0, 0, 0, 100.0)
    assert store.claims(key) == []


def test_create_failed_gives_the_permit_back_and_ignores_unknown_tokens(
    store: Store, key: str
) -> None:
    first = acquire(store, key, 100.0, max_sessions=1)
    assert first.token is not None
    full = acquire(store, key, 101.0, max_sessions=1)
    assert full.record is None and full.token is None
    store.create_failed(key, "no-such-token")
    assert store.stats(key).creating == 1
    store.create_failed(key, first.token)
    assert store.stats(key).creating == 0
    assert store.wait_for_release(key, 1.0, full.releases)  # the place is free again
    store.create_failed(key, first.token)
    again = acquire(store, key, 102.0, max_sessions=1)
    assert again.record is None and again.token is not None


def test_acquire_hands_out_the_most_recently_used_idle_session(store: Store, key: str) -> None:
    add(store, key, "s1", last_used=10.0)
    add(store, key, "s2", last_used=30.0)
    add(store, key, "s3", last_used=20.0)
    taken = [acquire(store, key, 100.0 + i).record for i in range(3)]
    assert names(taken) == ["s2", "s3", "s1"]
    assert taken[0] == SessionRecord("s2", 10.0, 30.0)
    assert store.stats(key) == StoreStats(0, 3, 0, 3, 100.0)
    # Released sessions come back most recently released first.
    tokens = {c.name: c.token for c in store.claims(key)}
    assert store.release(key, "s2", tokens["s2"], now=200.0)
    assert store.release(key, "s1", tokens["s1"], now=300.0)
    again = acquire(store, key, 400.0)
    assert again.record == SessionRecord("s1", 10.0, 300.0)
    assert not again.reclaimed


def test_permits_count_toward_max_sessions(store: Store, key: str) -> None:
    add(store, key, "s1", check_out=True)
    first = acquire(store, key, 100.0, max_sessions=3)
    second = acquire(store, key, 101.0, max_sessions=3)
    assert first.token is not None and second.token is not None and first.record is None
    full = acquire(store, key, 102.0, max_sessions=3)
    assert full == Acquired(releases=full.releases, wants=1)
    assert store.stats(key) == StoreStats(0, 1, 2, 1, 100.0)


def test_a_full_pool_reclaims_the_claim_idle_for_longest(store: Store, key: str) -> None:
    old1 = check_out(store, key, "s1", 100.0)
    old2 = check_out(store, key, "s2", 110.0)
    assert store.keep_alive(key, "s1", old1, now=120.0)  # s2 is now the oldest claim
    # Nothing is old enough: full.
    full = acquire(store, key, 130.0, max_sessions=2, reclaim_before=105.0)
    assert full.record is None and full.token is None and not full.reclaimed
    # s2 (since 110) is reclaimed, s1 (since 120) is not.
    taken = acquire(store, key, 200.0, holder=B, max_sessions=2, reclaim_before=115.0)
    assert taken.reclaimed and taken.record == SessionRecord("s2", 110.0, 110.0)
    assert taken.token is not None and taken.token not in (old1, old2)
    assert sorted(store.claims(key), key=lambda c: c.since) == [
        Claim(old1, A, 120.0, "s1"),
        Claim(taken.token, B, 200.0, "s2"),
    ]
    assert store.stats(key) == StoreStats(0, 2, 0, 2, 100.0)
    # The old holder's token is dead.
    assert not store.release(key, "s2", old2, now=210.0)
    assert not store.keep_alive(key, "s2", old2, now=210.0)
    assert not store.discard(key, "s2", old2)
    assert store.keep_alive(key, "s2", taken.token, now=220.0)
    assert store.release(key, "s2", taken.token, now=230.0)


def test_a_full_pool_reclaims_the_oldest_claims_first(store: Store, key: str) -> None:
    token1 = check_out(store, key, "s1", 100.0)
    check_out(store, key, "s2", 50.0)
    check_out(store, key, "s3", 70.0)
    first = acquire(store, key, 200.0, max_sessions=3, reclaim_before=150.0)
    second = acquire(store, key, 201.0, max_sessions=3, reclaim_before=150.0)
    third = acquire(store, key, 202.0, max_sessions=3, reclaim_before=150.0)
    assert names([first.record, second.record, third.record]) == ["s2", "s3", "s1"]
    assert not store.release(key, "s1", token1, now=203.0)


def test_acquire_drops_permits_of_dead_creators(store: Store, key: str) -> None:
    stale = acquire(store, key, 100.0, max_sessions=1)
    assert stale.token is not None
    full = acquire(store, key, 110.0, max_sessions=1, reclaim_before=50.0)
    assert full.token is None
    fresh = acquire(store, key, 200.0, max_sessions=1, reclaim_before=150.0)
    assert fresh.record is None and fresh.token is not None and fresh.token != stale.token
    assert store.claims(key) == [Claim(fresh.token, A, 200.0)]
    assert not store.created(key, stale.token, SessionRecord("s1", 1, 1), now=201, check_out=True)
    assert store.stats(key).creating == 1


def test_acquire_drops_expired_and_retired_idle_sessions(store: Store, key: str) -> None:
    a = SessionRecord("a", 10.0, 20.0)  # expired and retired
    b = SessionRecord("b", 30.0, 60.0)  # retired
    c = SessionRecord("c", 50.0, 80.0)  # kept
    d = SessionRecord("d", 45.0, 40.0)  # expired
    check_out(store, key, "held", 1.0)  # checked-out sessions are never dropped
    for record in (a, b, c, d):
        add(store, key, record.name, created_at=record.created_at, last_used=record.last_used)
    acquired = acquire(store, key, 100.0, expired_before=50.0, retire_before=40.0)
    assert acquired.record == c
    assert sorted(acquired.dropped, key=lambda r: r.name) == [a, b, d]
    assert store.stats(key) == StoreStats(0, 2, 0, 2, 1.0)
    # Nothing left to drop: the next acquire gets a permit.
    after = acquire(store, key, 101.0, expired_before=50.0, retire_before=40.0)
    assert after.dropped == () and after.record is None and after.token is not None


def test_reserve_tops_up_to_min_of_target_and_max(store: Store, key: str) -> None:
    tokens = store.reserve(key, holder=B, now=100.0, target=3, max_sessions=5)
    assert len(tokens) == len(set(tokens)) == 3
    assert store.stats(key) == StoreStats(0, 0, 3, 0, None)
    assert sorted(store.claims(key), key=lambda c: c.token) == sorted(
        (Claim(t, B, 100.0) for t in tokens), key=lambda c: c.token
    )
    assert store.reserve(key, holder=B, now=101.0, target=3, max_sessions=5) == []
    more = store.reserve(key, holder=B, now=102.0, target=10, max_sessions=5)
    assert len(more) == 2 and not set(more) & set(tokens)
    assert store.reserve(key, holder=B, now=103.0, target=10, max_sessions=5) == []
    # Sessions count too, idle or checked out.
    for i, token in enumerate(tokens + more):
        record = SessionRecord(f"s{i}", 104.0, 104.0)
        assert store.created(key, token, record, now=104.0, check_out=i % 2 == 0)
    assert len(store.reserve(key, holder=B, now=105.0, target=6, max_sessions=6)) == 1
    assert store.stats(key) == StoreStats(2, 3, 1, 3, None)


# -- release, keep_alive, discard -----------------------------------------------------------


def test_wrong_token_or_name_changes_nothing(store: Store, key: str) -> None:
    token = check_out(store, key, "held", 100.0)
    spent = add(store, key, "idle", now=101.0)  # the permit that became "idle"
    [permit] = store.reserve(key, holder=A, now=102.0, target=3, max_sessions=3)
    before = snapshot(store, key)
    for name, tok in [
        ("held", "wrong"),
        ("held", ""),
        ("held", spent),
        ("held", permit),
        ("nope", token),
        ("idle", token),
        ("idle", spent),
        ("idle", permit),
    ]:
        assert not store.release(key, name, tok, now=200.0), (name, tok)
        assert not store.keep_alive(key, name, tok, now=200.0), (name, tok)
        assert not store.discard(key, name, tok), (name, tok)
    assert snapshot(store, key) == before
    assert not store.release(f"{key}-other", "held", token, now=200.0)
    assert snapshot(store, key) == before


def test_release_returns_a_session_once(store: Store, key: str) -> None:
    token = check_out(store, key, "s1", 100.0)
    assert store.release(key, "s1", token, now=110.0)
    assert not store.release(key, "s1", token, now=120.0)
    assert not store.keep_alive(key, "s1", token, now=120.0)
    assert not store.discard(key, "s1", token)
    assert store.stats(key) == StoreStats(1, 0, 0, 1, 100.0)


def test_keep_alive_moves_since(store: Store, key: str) -> None:
    token = check_out(store, key, "s1", 100.0, holder=B)
    assert store.keep_alive(key, "s1", token, now=150.0)
    assert store.claims(key) == [Claim(token, B, 150.0, "s1")]
    # A claim kept alive is not reclaimed.
    assert acquire(store, key, 200.0, max_sessions=1, reclaim_before=140.0).record is None
    assert store.release(key, "s1", token, now=210.0)


def test_discard_frees_a_place(store: Store, key: str) -> None:
    token = check_out(store, key, "s1", 100.0)
    full = acquire(store, key, 101.0, max_sessions=1)
    assert full.token is None
    assert store.discard(key, "s1", token)
    assert store.wait_for_release(key, 1.0, full.releases)  # the place is free again
    assert not store.discard(key, "s1", token)
    assert store.stats(key) == StoreStats(0, 0, 0, 1, 100.0)
    assert store.claims(key) == []
    again = acquire(store, key, 102.0, max_sessions=1)
    assert again.record is None and again.token is not None


def test_acquire_tells_what_others_could_get_and_counts_wants(store: Store, key: str) -> None:
    wants = store.wait_for_want  # type: ignore[attr-defined]
    assert wants(key, 0.0, -1) == 0
    first = acquire(store, key, 100.0, max_sessions=2)
    assert (first.token is not None, first.spare, first.wants) == (True, 1, 0)  # a free place
    assert acquire(store, key, 101.0, max_sessions=2).spare == 0
    full = acquire(store, key, 102.0, max_sessions=2)
    assert (full.token, full.wants) == (None, 1)  # full: a want
    assert wants(key, 0.0, -1) == 1
    assert acquire(store, key, 103.0, max_sessions=2).token is None
    assert wants(key, 0.01, 1) == 2  # differs already: at once
    assert wants(key, 0.01, 2) == 2  # no change within the timeout
    assert first.token is not None
    store.create_failed(key, first.token)
    again = acquire(store, key, 104.0, max_sessions=3)
    assert (again.spare, again.wants) == (1, 2)  # two permits, one free place


# -- take_idle ------------------------------------------------------------------------------


def add_four_idle(store: Store, key: str) -> None:
    for name, created_at, last_used in [
        ("s1", 5.0, 40.0),
        ("s2", 25.0, 10.0),
        ("s3", 15.0, 30.0),
        ("s4", 35.0, 20.0),
    ]:
        add(store, key, name, created_at=created_at, last_used=last_used)


def test_take_idle_least_recently_used_first_within_limit_and_keep(store: Store, key: str) -> None:
    check_out(store, key, "held", 50.0)
    add_four_idle(store, key)  # least recently used first: s2, s4, s3, s1
    store.reserve(key, holder=A, now=60.0, target=6, max_sessions=6)
    assert store.stats(key) == StoreStats(4, 1, 1, 1, 50.0)
    taken = store.take_idle(key, TakeIdle(limit=2, keep=0, now=100.0))
    assert taken == [
        (SessionRecord("s2", 25.0, 10.0), None),
        (SessionRecord("s4", 35.0, 20.0), None),
    ]
    assert store.stats(key) == StoreStats(2, 1, 1, 1, 50.0)
    # ``keep`` counts idle, checked-out sessions and permits: 4 in the pool.
    assert store.take_idle(key, TakeIdle(limit=10, keep=4, now=101.0)) == []
    assert store.take_idle(key, TakeIdle(limit=10, keep=9, now=101.0)) == []
    assert store.take_idle(key, TakeIdle(limit=0, keep=0, now=101.0)) == []
    assert names(r for r, _ in store.take_idle(key, TakeIdle(limit=10, keep=3, now=102.0))) == [
        "s3"
    ]
    assert names(r for r, _ in store.take_idle(key, TakeIdle(limit=10, keep=0, now=103.0))) == [
        "s1"
    ]
    assert store.take_idle(key, TakeIdle(limit=10, keep=0, now=104.0)) == []
    assert store.stats(key) == StoreStats(0, 1, 1, 1, 50.0)


def test_take_idle_filters(store: Store, key: str) -> None:
    add_four_idle(store, key)
    taken = store.take_idle(key, TakeIdle(limit=10, keep=0, now=100.0, last_used_before=30.0))
    assert names(r for r, _ in taken) == ["s2", "s4"]  # s3 was last used at 30: not before
    add(store, key, "s2", created_at=25.0, last_used=10.0)
    add(store, key, "s4", created_at=35.0, last_used=20.0)
    taken = store.take_idle(key, TakeIdle(limit=1, keep=0, now=100.0, created_before=20.0))
    assert taken == [(SessionRecord("s3", 15.0, 30.0), None)]  # s1 matches too, but limit 1
    taken = store.take_idle(
        key, TakeIdle(limit=10, keep=0, now=100.0, created_before=30.0, last_used_before=45.0)
    )
    assert names(r for r, _ in taken) == ["s2", "s1"]
    assert names(r for r, _ in store.take_idle(key, TakeIdle(limit=10, keep=0, now=100.0))) == [
        "s4"
    ]
    assert store.stats(key) == StoreStats(0, 0, 0, 0, None)


def test_take_idle_with_a_holder_checks_sessions_out(store: Store, key: str) -> None:
    add_four_idle(store, key)
    taken = store.take_idle(key, TakeIdle(limit=2, keep=0, now=100.0, holder=B))
    assert names(r for r, _ in taken) == ["s2", "s4"]
    tokens = [t for _, t in taken]
    assert None not in tokens and len(set(tokens)) == 2
    assert store.stats(key).idle == 2 and store.stats(key).in_use == 2
    claims = sorted(store.claims(key), key=lambda c: str(c.name))
    assert claims == [Claim(str(tokens[0]), B, 100.0, "s2"), Claim(str(tokens[1]), B, 100.0, "s4")]
    # keep counts checked-out sessions: 4 in the pool, keep 3 -> one more.
    assert names(
        r for r, _ in store.take_idle(key, TakeIdle(limit=5, keep=3, now=101.0, holder=B))
    ) == ["s3"]
    assert store.release(key, "s2", str(tokens[0]), now=150.0)
    assert acquire(store, key, 160.0).record == SessionRecord("s2", 25.0, 150.0)


# -- the window -------------------------------------------------------------------------------


def test_roll_window(store: Store, key: str) -> None:
    assert store.roll_window(key, now=100.0, length=10.0) is None  # starts the window
    assert store.stats(key) == StoreStats(0, 0, 0, 0, 100.0)
    assert store.roll_window(key, now=105.0, length=10.0) is None
    t1 = check_out(store, key, "s1", 106.0)
    t2 = check_out(store, key, "s2", 107.0)
    assert store.release(key, "s1", t1, now=108.0)
    assert store.stats(key).high_water == 2
    assert acquire(store, key, 108.5).record is not None
    assert store.release(key, "s2", t2, now=109.0)
    assert store.roll_window(key, now=109.9, length=10.0) is None
    assert store.roll_window(key, now=110.0, length=10.0) == 2
    # The new window starts with the sessions checked out now (s1).
    assert store.stats(key) == StoreStats(1, 1, 0, 1, 110.0)
    assert store.roll_window(key, now=115.0, length=10.0) is None
    assert store.roll_window(key, now=125.0, length=10.0) == 1


def test_roll_window_starts_with_what_is_checked_out(store: Store, key: str) -> None:
    add(store, key, "s1", check_out=True)
    add(store, key, "s2", check_out=True)
    assert store.stats(key).window_start is None
    assert store.roll_window(key, now=100.0, length=10.0) is None
    assert store.stats(key) == StoreStats(0, 2, 0, 2, 100.0)
    assert store.roll_window(key, now=110.0, length=10.0) == 2


def test_acquire_raises_the_high_water_mark(store: Store, key: str) -> None:
    for name in ("s1", "s2", "s3"):
        add(store, key, name)
    taken = [acquire(store, key, 100.0 + i) for i in range(3)]
    assert store.stats(key).high_water == 3
    for i, acquired in enumerate(taken):
        assert acquired.record is not None and acquired.token is not None
        assert store.release(key, acquired.record.name, acquired.token, now=110.0 + i)
    assert store.stats(key).high_water == 3
    assert store.roll_window(key, now=200.0, length=50.0) == 3
    acquire(store, key, 201.0)
    assert store.stats(key).high_water == 1


def test_a_reclaim_raises_the_high_water_mark(store: Store, key: str) -> None:
    add(store, key, "s1")
    add(store, key, "s2")
    assert len(store.take_idle(key, TakeIdle(limit=2, keep=0, now=10.0, holder=B))) == 2
    taken = acquire(store, key, 100.0, max_sessions=2, reclaim_before=50.0)
    assert taken.reclaimed
    assert store.stats(key).high_water == 2


# -- claims, reclaim, clear -------------------------------------------------------------------


def test_claims_and_reclaim(store: Store, key: str) -> None:
    t1 = check_out(store, key, "s1", 50.0, holder=A)
    t2 = check_out(store, key, "s2", 60.0, holder=B)
    add(store, key, "s3", now=65.0, last_used=40.0)
    [permit] = store.reserve(key, holder=A, now=70.0, target=4, max_sessions=4)
    assert sorted(store.claims(key), key=lambda c: c.token) == sorted(
        [Claim(t1, A, 50.0, "s1"), Claim(t2, B, 60.0, "s2"), Claim(permit, A, 70.0)],
        key=lambda c: c.token,
    )
    assert store.reclaim(key, [t1, permit, "unknown"], now=100.0) == 2
    assert store.stats(key) == StoreStats(2, 1, 0, 2, 50.0)
    assert store.claims(key) == [Claim(t2, B, 60.0, "s2")]
    assert not store.release(key, "s1", t1, now=101.0)
    assert not store.created(key, permit, SessionRecord("x", 1, 1), now=1, check_out=True)
    # s1 keeps its last_used (50), so it comes before s3 (40).
    assert acquire(store, key, 102.0).record == SessionRecord("s1", 50.0, 50.0)
    assert store.reclaim(key, [], now=103.0) == 0
    assert store.reclaim(key, [t1, "unknown"], now=103.0) == 0
    assert store.reclaim(key, [t2, t2], now=104.0) == 1
    assert store.stats(key) == StoreStats(2, 1, 0, 2, 50.0)


def test_reclaim_wakes_waiters(store: Store, key: str) -> None:
    token = check_out(store, key, "s1", 50.0)
    full = acquire(store, key, 60.0, max_sessions=1)
    assert full.token is None
    assert not store.wait_for_release(key, 0.0, full.releases)
    assert store.reclaim(key, [token], now=70.0) == 1
    assert store.wait_for_release(key, 1.0, full.releases)


def test_clear_removes_only_its_own_pool(store: Store, key: str) -> None:
    other = f"{key}-other"
    held = check_out(store, key, "s2", 20.0)
    add(store, key, "s1", created_at=10.0, last_used=31.0)
    permit = store.reserve(key, holder=A, now=32.0, target=3, max_sessions=10)
    other_token = check_out(store, other, "o2", 6.0)
    add(store, other, "o1", now=5.0)
    other_before = snapshot(store, other)

    cleared = store.clear(key)
    assert sorted(cleared, key=lambda r: r.name) == [
        SessionRecord("s1", 10.0, 31.0),
        SessionRecord("s2", 20.0, 20.0),
    ]
    assert store.stats(key) == StoreStats(0, 0, 0, 0, None)
    assert store.claims(key) == []
    assert store.clear(key) == []
    assert not store.release(key, "s2", held, now=40.0)
    assert not store.created(key, permit[0], SessionRecord("x", 1, 1), now=41.0, check_out=True)
    assert snapshot(store, other) == other_before
    assert store.release(other, "o2", other_token, now=42.0)
    # The cleared pool lost its epoch too: it starts afresh after a reconciliation.
    checkout = Checkout(A, 50.0, 4, NEVER, NEVER, NEVER)
    assert store.acquire(key, checkout) == Acquired(reset=True)
    assert store.reserve(key, holder=A, now=50.0, target=2, max_sessions=2) == []
    assert not store.acquire(other, checkout).reset
    fresh = acquire(store, key, 50.0)
    assert fresh.record is None and fresh.token is not None
    assert store.stats(key) == StoreStats(0, 0, 1, 0, 50.0)


# -- wait_for_release ---------------------------------------------------------------------------


def test_wait_for_release_wakes_on_a_release_from_another_thread(store: Store, key: str) -> None:
    token = check_out(store, key, "s1", 100.0)
    full = acquire(store, key, 101.0, max_sessions=1)
    assert full.token is None

    def release_soon() -> None:
        time.sleep(0.05)
        assert store.release(key, "s1", token, now=102.0)

    thread = threading.Thread(target=release_soon)
    start = time.monotonic()
    thread.start()
    try:
        assert store.wait_for_release(key, 10.0, full.releases)
        assert time.monotonic() - start < 5.0  # woken, not timed out
    finally:
        thread.join()
    assert acquire(store, key, 103.0, max_sessions=1).record is not None


def test_wait_for_release_times_out(store: Store, key: str) -> None:
    check_out(store, key, "s1", 100.0)
    full = acquire(store, key, 101.0, max_sessions=1)
    start = time.monotonic()
    assert not store.wait_for_release(key, 0.1, full.releases)
    assert time.monotonic() - start >= 0.09


def test_wait_for_release_sees_a_release_made_before_the_call(store: Store, key: str) -> None:
    token = check_out(store, key, "s1", 100.0)
    full = acquire(store, key, 101.0, max_sessions=1)
    assert store.release(key, "s1", token, now=102.0)
    start = time.monotonic()
    assert store.wait_for_release(key, 10.0, full.releases)
    assert time.monotonic() - start < 5.0


# -- SQLite only -------------------------------------------------------------------------------


def test_sqlite_two_stores_on_one_file_share_the_pool(tmp_path: Path, key: str) -> None:
    first = SQLiteStore(tmp_path / "shared.db")
    second = SQLiteStore(str(tmp_path / "shared.db"))
    try:
        token = check_out(first, key, "s1", 100.0)
        assert second.stats(key) == StoreStats(0, 1, 0, 1, 100.0)
        assert second.claims(key) == first.claims(key)
        assert second.release(key, "s1", token, now=110.0)
        assert first.stats(key) == StoreStats(1, 0, 0, 1, 100.0)
        assert acquire(first, key, 120.0).record == SessionRecord("s1", 100.0, 110.0)
    finally:
        first.close()
        second.close()


def test_sqlite_breaks_ties_as_the_reference(sqlite_store: SQLiteStore, key: str) -> None:
    """Equal times: sessions are handed out in the order they became idle or were checked
    out, reclaimed by name, and listed in MemoryStore's order."""

    def play(store: Store) -> list[Any]:
        seen: list[Any] = []
        for name in ("c", "a", "b", "d"):
            add(store, key, name, now=10.0)
        [permit] = store.reserve(key, holder=A, now=10.0, target=5, max_sessions=5)
        seen.append(acquire(store, key, 20.0, max_sessions=5).record)  # c: idle first
        seen.append(store.take_idle(key, TakeIdle(limit=1, keep=0, now=20.0)))  # a
        taken = store.take_idle(key, TakeIdle(limit=2, keep=0, now=20.0, holder=B))  # b, d
        seen.append([record for record, _ in taken])
        seen.append([(c.name, c.since) for c in store.claims(key)])
        store.create_failed(key, permit)
        seen.append(acquire(store, key, 100.0, max_sessions=3, reclaim_before=50.0).record)
        seen.append(acquire(store, key, 101.0, max_sessions=3, reclaim_before=50.0).record)
        seen.append([(c.name, c.since) for c in store.claims(key)])
        seen.append(store.reclaim(key, [c.token for c in store.claims(key)], now=102.0))
        seen.append(store.clear(key))
        return seen

    assert play(sqlite_store) == play(MemoryStore())


def test_sqlite_counts_one_transaction_per_step(sqlite_store: SQLiteStore, key: str) -> None:
    add(sqlite_store, key, "s1")
    before = sqlite_store.transactions
    acquired = acquire(sqlite_store, key, 100.0)
    assert acquired.record is not None and acquired.token is not None
    assert sqlite_store.keep_alive(key, "s1", acquired.token, now=100.5)
    assert sqlite_store.release(key, "s1", acquired.token, now=101.0)
    sqlite_store.stats(key)
    sqlite_store.claims(key)
    assert sqlite_store.transactions - before == 3


def test_sqlite_steps_take_few_statements(sqlite_store: SQLiteStore, key: str) -> None:
    add(sqlite_store, key, "s1")
    statements: list[str] = []
    sqlite_store._file.connection().set_trace_callback(statements.append)

    def counted(step: Any) -> list[str]:
        statements.clear()
        step()
        return [statement.split()[0] for statement in statements]

    got: list[Acquired] = []
    # An idle session: the checkout, then the pool's counters.
    assert counted(lambda: got.append(acquire(sqlite_store, key, 100.0))) == [
        "BEGIN",
        "UPDATE",
        "UPDATE",
        "COMMIT",
    ]
    token = got[0].token
    assert token is not None
    # One statement is a transaction of its own.
    assert counted(lambda: sqlite_store.keep_alive(key, "s1", token, now=100.5)) == ["UPDATE"]
    assert counted(lambda: sqlite_store.release(key, "s1", token, now=101.0)) == [
        "BEGIN",
        "UPDATE",
        "UPDATE",
        "COMMIT",
    ]
    # Reads take no write lock.
    assert counted(lambda: sqlite_store.stats(key)) == ["SELECT"]
    assert counted(lambda: sqlite_store.wait_for_want(key, 0.0, -1)) == ["SELECT"]


def test_sqlite_repr_and_close(tmp_path: Path, key: str) -> None:
    path = tmp_path / "pool.db"
    store = SQLiteStore(path)
    assert str(path) in repr(store)
    store.close()
    assert "closed" in repr(store)
    with pytest.raises(StoreError, match="closed"):
        acquire(store, key, 1.0)
    with pytest.raises(StoreError, match="closed"):
        store.stats(key)
    with pytest.raises(StoreError, match="closed"):
        store.wait_for_release(key, 0.1, 0)
    store.close()


def test_sqlite_close_wakes_waiters(tmp_path: Path, key: str) -> None:
    store = SQLiteStore(tmp_path / "pool.db")
    check_out(store, key, "s1", 1.0)
    full = acquire(store, key, 2.0, max_sessions=1)
    result: list[bool] = []
    releases = full.releases  # the reconciliation that wrote the epoch counts as one
    thread = threading.Thread(
        target=lambda: result.append(store.wait_for_release(key, 10, releases))
    )
    thread.start()
    time.sleep(0.05)
    store.close()
    thread.join(5.0)
    assert result == [True]  # woken by close(), not by a release


def test_sqlite_unusable_paths_raise_store_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "pool.db"
    with pytest.raises(StoreError, match="no-such-dir") as info:
        SQLiteStore(missing)
    assert isinstance(info.value.__cause__, sqlite3.Error)

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=r"garbage\.db") as info:
        SQLiteStore(garbage)
    assert isinstance(info.value.__cause__, sqlite3.Error)


def test_sqlite_refuses_files_of_another_shape(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE accounts (id INTEGER)")
    conn.close()
    with pytest.raises(StoreError, match="another application"):
        SQLiteStore(foreign)
    with sqlite3.connect(foreign) as conn:  # untouched: still not in WAL mode
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal"
    conn.close()

    newer = tmp_path / "newer.db"
    SQLiteStore(newer).close()
    conn = sqlite3.connect(newer)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreError, match="schema version 99"):
        SQLiteStore(newer)


def test_sqlite_store_opened_by_many_threads_at_once(tmp_path: Path, key: str) -> None:
    path = tmp_path / "pool.db"
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def first_reconciliation() -> None:
        # As a pool's first reconciliation does, once: begun by every thread at once, all
        # but one would find another's under way and be told to wait (as a pool would).
        with contextlib.closing(SQLiteStore(path)) as store:
            begin(store, key)

    opened = threading.Barrier(8, action=first_reconciliation)

    def open_and_use(i: int) -> None:
        try:
            barrier.wait()
            store = SQLiteStore(path)
            opened.wait()
            check_out(store, key, f"s{i}", 1.0)
            store.close()
        except BaseException as exc:
            errors.append(exc)

    run_in_threads(8, open_and_use)
    assert errors == []
    store = SQLiteStore(path)
    assert store.stats(key).in_use == 8
    store.close()


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"timeout": -1}, ValueError, "timeout must be a number of seconds >= 0, not -1"),
        ({"timeout": float("nan")}, ValueError, "timeout .* not nan"),
        ({"timeout": float("inf")}, ValueError, "timeout .* not inf"),
        ({"timeout": True}, TypeError, "timeout .* not True"),
        ({"timeout": "5"}, TypeError, "timeout .* not '5' \\(str\\)"),
    ],
)
def test_sqlite_store_refuses_bad_arguments_and_makes_no_file(
    tmp_path: Path, arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    path = tmp_path / "pool.db"
    with pytest.raises(error, match=message):
        SQLiteStore(path, **arguments)
    assert not path.exists()


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"socket_timeout": 0}, ValueError, "socket_timeout must be a number of seconds > 0"),
        ({"socket_timeout": float("nan")}, ValueError, "socket_timeout .* not nan"),
        ({"socket_timeout": None}, TypeError, "socket_timeout .* not None"),
        ({"prefix": ""}, ValueError, "prefix must be a non-empty string, not ''"),
        ({"prefix": 7}, TypeError, "prefix must be a non-empty string, not 7"),
    ],
)
def test_redis_store_refuses_bad_arguments_before_connecting(
    arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    from spanpool.stores import RedisStore

    with pytest.raises(error, match=message):
        RedisStore("redis://127.0.0.1:1/0", **arguments)  # nothing listens there


def test_sqlite_locked_past_the_timeout(tmp_path: Path, key: str) -> None:
    path = tmp_path / "pool.db"
    store = SQLiteStore(path, timeout=0.05)
    add(store, key, "s1")
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match="locked") as info:
            acquire(store, key, 100.0)
        assert str(path) in str(info.value)
        assert store.stats(key) == StoreStats(1, 0, 0, 0, None)  # readers are not blocked
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert acquire(store, key, 101.0).record is not None
    store.close()


def test_sqlite_failed_transaction_changes_nothing(tmp_path: Path, key: str) -> None:
    path = tmp_path / "pool.db"
    store = SQLiteStore(path)
    add(store, key, "s1")
    before = snapshot(store, key)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(
        "CREATE TRIGGER fail BEFORE UPDATE OF high_water ON pools "
        "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
    )
    try:
        # The failure comes after the session was checked out and the window started.
        with pytest.raises(StoreError, match="injected failure"):
            acquire(store, key, 100.0)
        assert snapshot(store, key) == before
    finally:
        conn.execute("DROP TRIGGER fail")
        conn.close()
    assert acquire(store, key, 101.0).record is not None
    assert store.stats(key) == StoreStats(0, 1, 0, 1, 101.0)
    store.close()


def test_sqlite_threads_never_share_a_session(sqlite_store: SQLiteStore, key: str) -> None:
    lock = threading.Lock()
    held: set[str] = set()
    problems: list[str] = []
    counter = iter(range(10**6))

    def work() -> None:
        for _ in range(60):
            acquired = acquire(sqlite_store, key, time.monotonic(), max_sessions=3)
            if acquired.token is None:
                sqlite_store.wait_for_release(key, 0.05, acquired.releases)
                continue
            record = acquired.record
            if record is None:
                record = SessionRecord(f"t{next(counter)}", 1.0, 1.0)
                assert sqlite_store.created(key, acquired.token, record, now=1.0, check_out=True)
            with lock:
                if record.name in held:
                    problems.append(record.name)
                held.add(record.name)
            time.sleep(0)
            with lock:
                held.discard(record.name)
            assert sqlite_store.release(key, record.name, acquired.token, now=time.monotonic())

    run_in_threads(6, lambda _: work())
    assert problems == []
    stats = sqlite_store.stats(key)
    assert stats.in_use == 0 and stats.creating == 0 and 1 <= stats.idle <= 3


def test_sqlite_forked_child_opens_its_own_connection(sqlite_store: SQLiteStore, key: str) -> None:
    from spanpool.cache import _sqlite_file as sqlite_module

    token = check_out(sqlite_store, key, "s1", 100.0)
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            assert sqlite_store.release(key, "s1", token, now=110.0)
            assert len(sqlite_module._INHERITED) == 1  # the parent's connection, left alone
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert sqlite_store.stats(key) == StoreStats(1, 0, 0, 1, 100.0)
    assert acquire(sqlite_store, key, 120.0).record == SessionRecord("s1", 100.0, 110.0)


# -- SQLite across processes --------------------------------------------------------------------


def mp_context() -> Any:
    context = multiprocessing.get_context("forkserver")
    # Children fork from a server that imported spanpool once, instead of importing it each.
    context.set_forkserver_preload(["spanpool.cache.sqlite", __name__])
    return context


def _release_later(path: str, key: str, name: str, token: str, ready: Any) -> None:
    store = SQLiteStore(path)
    ready.set()
    time.sleep(0.1)
    store.release(key, name, token, now=200.0)
    store.close()


def test_sqlite_wait_for_release_wakes_on_a_release_from_another_process(
    sqlite_store: SQLiteStore, key: str
) -> None:
    token = check_out(sqlite_store, key, "s1", 100.0)
    full = acquire(sqlite_store, key, 101.0, max_sessions=1)
    context = mp_context()
    ready = context.Event()
    process = context.Process(
        target=_release_later, args=(sqlite_store.path, key, "s1", token, ready)
    )
    process.start()
    try:
        assert ready.wait(30)
        start = time.monotonic()
        assert sqlite_store.wait_for_release(key, 10.0, full.releases)
        assert time.monotonic() - start < 5.0
    finally:
        process.join(30)
    assert process.exitcode == 0
    assert sqlite_store.stats(key).idle == 1


HAMMER_MAX = 4


def _hammer(path: str, key: str, barrier: Any, results: Any, seconds: float) -> None:
    """Acquire, create when given a permit, hold briefly, release (or discard) in a loop, and
    report when this process held what."""
    try:
        pid = os.getpid()
        barrier.wait(30)
        store = SQLiteStore(path)  # every process opens the new file at once
        begin(store, key)  # one of them writes the epoch
        holder = Holder.current()
        holds: list[tuple[str, float, float]] = []  # name, held from, held until
        births: list[tuple[str, float]] = []  # name (or a failed permit), permit granted
        deaths: list[tuple[str, float]] = []  # name (or a failed permit), gone from
        most = 0
        n = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            n += 1
            acquired = store.acquire(
                key,
                Checkout(
                    holder=holder,
                    now=time.monotonic(),
                    max_sessions=HAMMER_MAX,
                    reclaim_before=-1e18,
                    expired_before=-1e18,
                    retire_before=-1e18,
                ),
            )
            got = time.monotonic()
            if acquired.token is None:
                store.wait_for_release(key, 0.05, acquired.releases)
                continue
            record = acquired.record
            if record is None:
                name = f"s-{pid}-{n}"
                births.append((name, got))
                if n % 7 == 0:
                    deaths.append((name, time.monotonic()))
                    store.create_failed(key, acquired.token)
                    continue
                record = SessionRecord(name, got, got)
                assert store.created(key, acquired.token, record, now=got, check_out=True)
                got = time.monotonic()
            stats = store.stats(key)
            most = max(most, stats.idle + stats.in_use + stats.creating)
            until = time.monotonic()
            holds.append((record.name, got, until))
            if n % 5 == 0:
                deaths.append((record.name, until))
                assert store.discard(key, record.name, acquired.token)
            else:
                assert store.release(key, record.name, acquired.token, now=until)
        store.close()
        results.put({"pid": pid, "holds": holds, "births": births, "deaths": deaths, "most": most})
    except BaseException:
        results.put({"pid": os.getpid(), "error": traceback.format_exc()})


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = current = 0
    for _, step in events:  # at equal times, ends (-1) sort first
        current += step
        most = max(most, current)
    return most


def test_sqlite_processes_never_share_a_session(tmp_path: Path, key: str) -> None:
    path = str(tmp_path / "pool.db")  # created by the workers, all at once
    workers = 6
    context = mp_context()
    barrier = context.Barrier(workers)
    results = context.Queue()
    processes = [
        context.Process(target=_hammer, args=(path, key, barrier, results, 1.0))
        for _ in range(workers)
    ]
    for process in processes:
        process.start()
    reports = []
    try:
        for _ in processes:
            reports.append(results.get(timeout=60))
    except queue.Empty:
        pytest.fail(f"only {len(reports)} of {workers} workers reported")
    finally:
        for process in processes:
            process.join(30)
    errors = [r["error"] for r in reports if "error" in r]
    assert errors == []
    assert all(process.exitcode == 0 for process in processes)

    # No name was held by two processes at once (each interval lies within a real hold).
    by_name: dict[str, list[tuple[float, float, int]]] = {}
    for report in reports:
        assert report["holds"], "every process held a session at least once"
        for name, start, end in report["holds"]:
            by_name.setdefault(name, []).append((start, end, report["pid"]))
    for name, holds in by_name.items():
        holds.sort()
        for (_, end, pid), (start, _, other) in itertools.pairwise(holds):
            assert end < start, f"{name} held by {pid} and {other} at once"
    all_holds = [(start, end) for holds in by_name.values() for start, end, _ in holds]
    assert most_at_once(all_holds) <= HAMMER_MAX

    # Sessions and permits alive at once never exceeded max_sessions.
    births = {name: t for r in reports for name, t in r["births"]}
    deaths = {name: t for r in reports for name, t in r["deaths"]}
    lives = [(t, deaths.get(name, float("inf"))) for name, t in births.items()]
    assert most_at_once(lives) <= HAMMER_MAX
    assert max(r["most"] for r in reports) <= HAMMER_MAX

    store = SQLiteStore(path)
    try:
        stats = store.stats(key)
        assert stats.in_use == 0 and stats.creating == 0 and stats.high_water <= HAMMER_MAX
        assert store.claims(key) == []
        idle = {r.name for r, _ in store.take_idle(key, TakeIdle(limit=100, keep=0, now=0.0))}
        assert idle == set(births) - set(deaths)
    finally:
        store.close()
