"""The MultiplexedStore steps, the same for every store (memory, SQLite file, Redis server)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spanpool.cache.store import Holder, MultiplexedRecord
from spanpool.stores import SQLiteStore

from ..conftest import run_in_threads
from ._epochs import A, B
from .test_stores import make_store

LEASE = 30.0


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    s = make_store(request.param, request, tmp_path)
    yield s
    s.close()


@pytest.fixture
def key() -> str:
    return f"multiplexed:test-{uuid.uuid4().hex}"


def claim(store: Any, key: str, holder: Holder, now: float, replacing: str | None = None) -> Any:
    return store.multiplexed_claim(key, holder=holder, now=now, lease=LEASE, replacing=replacing)


def test_first_claim_gets_the_lease_and_others_wait(store: Any, key: str) -> None:
    assert store.multiplexed_get(key) is None
    first = claim(store, key, A, 100.0)
    assert first.token is not None and first.record is None
    second = claim(store, key, B, 101.0)
    assert second.token is None and second.record is None  # A is creating it
    record = store.multiplexed_publish(key, first.token, name="s/1", created_at=102.5)
    assert record == MultiplexedRecord("s/1", 102.5, 1)
    assert store.multiplexed_get(key) == record
    third = claim(store, key, B, 103.0)
    assert third.token is None and third.record == record  # use it: no creation


def test_a_lease_expires_and_its_late_publish_changes_nothing(store: Any, key: str) -> None:
    first = claim(store, key, A, 100.0)
    assert claim(store, key, B, 100.0 + LEASE - 0.5).token is None
    second = claim(store, key, B, 100.0 + LEASE + 0.5)  # A died, or is very slow
    assert second.token is not None and second.token != first.token
    assert store.multiplexed_publish(key, first.token, name="s/a", created_at=1.0) is None
    assert store.multiplexed_publish(key, second.token, name="s/b", created_at=2.0) == (
        MultiplexedRecord("s/b", 2.0, 1)
    )
    assert store.multiplexed_get(key) == MultiplexedRecord("s/b", 2.0, 1)


def test_replacing_is_generation_checked(store: Any, key: str) -> None:
    token = claim(store, key, A, 1.0).token
    store.multiplexed_publish(key, token, name="s/1", created_at=1.0)
    # Two holders find s/1 lost: one replaces it; the other, late, gets the successor.
    lease = claim(store, key, A, 10.0, replacing="s/1")
    assert lease.token is not None and lease.record == MultiplexedRecord("s/1", 1.0, 1)
    assert claim(store, key, B, 10.5, replacing="s/1").token is None
    successor = store.multiplexed_publish(key, lease.token, name="s/2", created_at=11.0)
    assert successor == MultiplexedRecord("s/2", 11.0, 2)
    late = claim(store, key, B, 12.0, replacing="s/1")
    assert late.token is None and late.record == successor
    # Nothing to replace, nothing lost: no lease.
    assert claim(store, key, B, 12.0).token is None


def test_abandon_frees_the_lease_at_once(store: Any, key: str) -> None:
    lease = claim(store, key, A, 1.0)
    store.multiplexed_abandon(key, "not-the-token")
    assert claim(store, key, B, 2.0).token is None
    store.multiplexed_abandon(key, lease.token)
    assert claim(store, key, B, 2.0).token is not None
    assert store.multiplexed_publish(key, lease.token, name="s/1", created_at=2.0) is None


def test_keys_are_independent(store: Any, key: str) -> None:
    lease = claim(store, key, A, 1.0)
    other = claim(store, key + "-other", A, 1.0)
    assert lease.token and other.token
    store.multiplexed_publish(key, lease.token, name="s/1", created_at=1.0)
    assert store.multiplexed_get(key + "-other") is None


def test_one_lease_among_racing_threads(store: Any, key: str) -> None:
    granted: list[str] = []
    start = threading.Barrier(8)

    def race(i: int) -> None:
        start.wait()
        got = claim(store, key, Holder("h", i), 5.0)
        if got.token is not None:
            granted.append(got.token)

    run_in_threads(8, race)
    assert len(granted) == 1


def test_a_sqlite_file_made_before_the_multiplexed_table_works(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = SQLiteStore(path)
    old.stats("cache-pool")  # a file in use by CacheSessionPool only
    old.close()
    store = SQLiteStore(path)
    assert store.multiplexed_get("multiplexed:k") is None
    token = claim(store, "multiplexed:k", A, 1.0).token
    assert store.multiplexed_publish("multiplexed:k", token, name="s", created_at=1.0)
    store.close()
