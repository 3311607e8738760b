"""RedisStore against a real redis-server: round trips, waking waiters, isolation of pools,
failures of the server, exact times, processes sharing one pool, and the same answers as
MemoryStore on random sequences of steps."""

from __future__ import annotations

import importlib
import math
import multiprocessing
import os
import random
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from spanpool.cache.redis import RedisStore
from spanpool.errors import StoreError
from spanpool.stores import Checkout, Holder, MemoryStore, SessionRecord, TakeIdle

from ..redis_server import redis_server
from ._epochs import NEVER, acquire, begin

HOLDER = Holder("host-a", 101)
FORK = multiprocessing.get_context("fork")


@pytest.fixture
def prefix() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def store(redis_url: str, prefix: str) -> Iterator[RedisStore]:
    with_store = RedisStore(redis_url, prefix=prefix)
    yield with_store
    with_store.close()


@pytest.fixture
def client(redis_url: str) -> Iterator[Any]:
    raw = redis.Redis.from_url(redis_url, decode_responses=True)
    yield raw
    raw.close()


def check_out(store: Any, key: str, name: str, now: float = 1000.0) -> str:
    """A new session `name`, checked out; returns its token."""
    got = acquire(store, key, now)
    assert got.record is None and got.token is not None
    record = SessionRecord(name, now, now)
    assert store.created(key, got.token, record, now=now, check_out=True)
    token: str = got.token
    return token


def commandstats(client: Any) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name: stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("evalsha", "eval")}


def test_acquire_and_release_take_two_round_trips(store: RedisStore, client: Any) -> None:
    token = check_out(store, "k", "s1")
    assert store.release("k", "s1", token, now=1001.0)  # both scripts are now cached
    before, trips = commandstats(client), store.round_trips
    for i in range(20):
        got = acquire(store, "k", now=1002.0 + i)
        assert got.record is not None and got.record.name == "s1"
        assert store.release("k", "s1", got.token, now=1002.5 + i)
    after = commandstats(client)
    assert store.round_trips - trips == 40
    assert after["evalsha"] - before["evalsha"] == 40
    assert after["eval"] == before["eval"]


def test_a_flushed_script_cache_costs_one_more_round_trip(store: RedisStore, client: Any) -> None:
    store.stats("k")
    client.script_flush()
    trips = store.round_trips
    assert store.stats("k").idle == 0
    assert store.round_trips - trips == 2  # EVALSHA answered NOSCRIPT, then EVAL
    trips = store.round_trips
    store.stats("k")
    assert store.round_trips - trips == 1


def blocked_clients(url: str) -> int:
    """How many clients the Redis server at ``url`` holds blocked (BLPOP, XREAD BLOCK)."""
    with redis.Redis.from_url(url) as client:
        return int(client.info("clients")["blocked_clients"])


def until_blocked(url: str, count: int) -> None:
    """Wait (a bounded time) until the server holds ``count`` blocked clients."""
    deadline = time.monotonic() + 30
    while blocked_clients(url) < count:
        assert time.monotonic() < deadline, f"fewer than {count} clients blocked"
        time.sleep(0.005)


def _release_later(url: str, prefix: str, name: str, token: str, delay: float) -> None:
    time.sleep(delay)
    other = RedisStore(url, prefix=prefix)
    ok = other.release("k", name, token, now=2000.0)
    other.close()
    os._exit(0 if ok else 1)


def test_wait_wakes_when_another_thread_releases(
    store: RedisStore, redis_url: str, prefix: str
) -> None:
    token = check_out(store, "k", "s1")
    full = acquire(store, "k", max_sessions=1)
    assert full.record is None and full.token is None
    outcome: list[bool] = []
    already = blocked_clients(redis_url)

    def release() -> None:
        until_blocked(redis_url, already + 1)  # the wait below is in its blocking pop
        releaser = RedisStore(redis_url, prefix=prefix)
        outcome.append(releaser.release("k", "s1", token, now=1001.0))
        releaser.close()

    thread = threading.Thread(target=release)
    thread.start()
    trips = store.round_trips
    assert store.wait_for_release("k", 30.0, full.releases)
    thread.join()
    assert outcome == [True]
    assert store.round_trips - trips == 2  # one check, one blocking pop: no polling
    got = acquire(store, "k", max_sessions=1)
    assert got.record is not None and got.record.name == "s1"


def test_wait_wakes_when_another_process_releases(
    store: RedisStore, redis_url: str, prefix: str
) -> None:
    token = check_out(store, "k", "s1")
    full = acquire(store, "k", max_sessions=1)
    child = FORK.Process(target=_release_later, args=(redis_url, prefix, "s1", token, 0.2))
    child.start()
    assert store.wait_for_release("k", 30.0, full.releases)
    child.join(10)
    assert child.exitcode == 0
    assert store.stats("k").idle == 1


def test_wait_returns_at_once_after_a_release_it_did_not_see(store: RedisStore) -> None:
    token = check_out(store, "k", "s1")
    full = acquire(store, "k", max_sessions=1)
    assert store.release("k", "s1", token, now=1001.0)
    trips = store.round_trips
    assert store.wait_for_release("k", 30.0, full.releases)
    assert store.round_trips - trips == 1  # the counter answered; no blocking pop


def test_wait_ignores_markers_of_releases_already_seen(store: RedisStore) -> None:
    for round_ in range(3):  # leaves release markers in the signal list
        token = check_out(store, "k", f"s{round_}") if round_ == 0 else acquire(store, "k").token
        assert store.release("k", "s0", token, now=1001.0 + round_)
    assert acquire(store, "k").record is not None
    full = acquire(store, "k", max_sessions=1)
    assert full.record is None and full.token is None
    assert not store.wait_for_release("k", 0.2, full.releases)
    assert not store.wait_for_release("k", 0.0, full.releases)


def test_reclaim_wakes_a_waiter_per_claim_taken_back(
    store: RedisStore, redis_url: str, prefix: str
) -> None:
    tokens = [check_out(store, "k", name) for name in ("s1", "s2")]
    full = acquire(store, "k", max_sessions=2)
    waiting = [RedisStore(redis_url, prefix=prefix) for _ in range(2)]
    results: list[bool] = []
    threads = [
        threading.Thread(
            target=lambda w=w: results.append(w.wait_for_release("k", 5.0, full.releases))
        )
        for w in waiting
    ]
    already = blocked_clients(redis_url)
    for thread in threads:
        thread.start()
    until_blocked(redis_url, already + 2)  # both block in BLPOP
    assert store.reclaim("k", tokens, now=1001.0) == 2
    for thread in threads:
        thread.join(10)
    assert results == [True, True]
    for w in waiting:
        w.close()


def test_wait_returns_when_the_store_is_closed(redis_url: str, prefix: str) -> None:
    store = RedisStore(redis_url, prefix=prefix)
    check_out(store, "k", "s1")
    full = acquire(store, "k", max_sessions=1)
    result: list[bool] = []
    thread = threading.Thread(
        target=lambda: result.append(store.wait_for_release("k", 30.0, full.releases))
    )
    already = blocked_clients(redis_url)
    thread.start()
    until_blocked(redis_url, already + 1)
    store.close()
    thread.join(10)
    assert result == [True]
    with pytest.raises(StoreError, match="closed"):
        store.stats("k")


def test_pools_of_other_prefixes_and_keys_are_apart(
    redis_url: str, prefix: str, store: RedisStore
) -> None:
    other = RedisStore(redis_url, prefix=prefix + "-other")
    check_out(store, "k", "mine")
    check_out(store, "k2", "second")
    assert other.stats("k").in_use == 0
    assert other.claims("k") == []
    assert [claim.name for claim in store.claims("k")] == ["mine"]
    assert other.clear("k") == []
    assert store.clear("k2") == [SessionRecord("second", 1000.0, 1000.0)]
    assert store.stats("k").in_use == 1
    other.close()


def test_clear_touches_only_the_pools_keys(store: RedisStore, client: Any, prefix: str) -> None:
    unrelated = {
        "plain": "1",
        f"{prefix}:other": "2",
        f"{prefix}:{{k}}": "3",
        f"{prefix}:{{k2}}:meta": "4",
        f"{prefix}:{{k}}:idle:x": "5",
    }
    for name, value in unrelated.items():
        client.set(name, value)
    token = check_out(store, "k", "s1")
    check_out(store, "k", "s2", now=1002.0)
    assert store.release("k", "s1", token, now=1001.0)
    assert client.keys(f"{prefix}:{{k}}:*")
    assert store.clear("k") == [
        SessionRecord("s1", 1000.0, 1001.0),
        SessionRecord("s2", 1002.0, 1002.0),
    ]
    assert not (set(client.keys(f"{prefix}:{{k}}:*")) - set(unrelated))
    assert {name: client.get(name) for name in unrelated} == unrelated
    client.delete(*unrelated)


def test_a_client_passed_in_is_used_and_left_open(redis_url: str, prefix: str) -> None:
    raw = redis.Redis.from_url(redis_url, decode_responses=True)
    store = RedisStore(raw, prefix=prefix)
    check_out(store, "k", "s1")
    assert [claim.name for claim in store.claims("k")] == ["s1"]
    store.close()
    assert raw.ping()
    raw.close()
    assert "127.0.0.1" in repr(store) and prefix in repr(store)


def test_foreign_data_under_the_pools_keys_is_a_store_error(
    store: RedisStore, client: Any, prefix: str
) -> None:
    client.set(f"{prefix}:{{k}}:meta", "not a hash")
    with pytest.raises(StoreError, match="WRONGTYPE"):
        acquire(store, "k")
    client.delete(f"{prefix}:{{k}}:meta")


def test_an_unreachable_server_fails_fast() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = RedisStore(f"redis://127.0.0.1:{port}/0", socket_timeout=1.0)
    started = time.monotonic()
    with pytest.raises(StoreError, match=f"127.0.0.1:{port}") as info:
        store.stats("k")
    assert time.monotonic() - started < 5  # no retries with back-off, no hang
    assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError)
    with pytest.raises(StoreError):
        store.wait_for_release("k", 0.1, 0)
    store.close()


def test_a_server_that_stops_mid_use_is_a_store_error() -> None:
    with redis_server() as url:
        store = RedisStore(url, socket_timeout=1.0)
        token = check_out(store, "k", "s1")
    with pytest.raises(StoreError, match="release failed"):
        store.release("k", "s1", token, now=1001.0)
    with pytest.raises(StoreError):
        store.wait_for_release("k", 0.1, 0)
    store.close()


def test_times_come_back_exactly(store: RedisStore) -> None:
    now = 1763800000.123456
    begin(store, "k", now)
    got = store.acquire(
        "k",
        Checkout(
            holder=HOLDER,
            now=now,
            max_sessions=2,
            reclaim_before=now - 1e-6,
            expired_before=now - 3600,
            retire_before=now - 86400,
        ),
    )
    record = SessionRecord("s1", now - 0.1 - 0.2, now)
    assert store.created("k", got.token, record, now=now, check_out=True)
    assert [claim.since for claim in store.claims("k")] == [now]
    assert store.keep_alive("k", "s1", got.token, now=now + 1e-6)
    assert [claim.since for claim in store.claims("k")] == [now + 1e-6]
    assert store.release("k", "s1", got.token, now=now + 0.000001)
    assert store.stats("k").window_start == now
    taken = store.take_idle("k", TakeIdle(limit=1, keep=0, now=now, last_used_before=now + 2e-6))
    assert taken == [(SessionRecord("s1", now - 0.1 - 0.2, now + 0.000001), None)]
    # Bounds are exclusive at the last bit: a session last used exactly at the bound stays.
    token = store.reserve("k", holder=HOLDER, now=now, target=1, max_sessions=1)[0]
    assert store.created("k", token, SessionRecord("s2", now, now), now=now, check_out=False)
    assert store.take_idle("k", TakeIdle(limit=1, keep=0, now=now, last_used_before=now)) == []
    just_after = math.nextafter(now, math.inf)
    assert store.take_idle("k", TakeIdle(limit=1, keep=0, now=now, last_used_before=just_after))


def _hammer(
    store: RedisStore, url: str, held: str, created: str, rounds: int
) -> None:  # pragma: no cover - runs in a child process
    violations = 0
    try:
        raw = redis.Redis.from_url(url)
        begin(store, "k")
        pid, made, done = os.getpid(), 0, 0
        holder = Holder.current()
        while done < rounds:
            now = time.time()
            got = store.acquire(
                "k",
                Checkout(
                    holder=holder,
                    now=now,
                    max_sessions=4,
                    reclaim_before=NEVER,
                    expired_before=NEVER,
                    retire_before=NEVER,
                ),
            )
            if got.record is None and got.token is None:
                store.wait_for_release("k", 1.0, got.releases)
                continue
            if got.record is None:
                made += 1
                name = f"s-{pid}-{made}"
                raw.sadd(created, name)
                if not store.created(
                    "k", got.token, SessionRecord(name, now, now), now=now, check_out=True
                ):
                    violations += 1
            else:
                name = got.record.name
            if raw.sadd(held, name) != 1:
                violations += 1  # someone else holds it
            stats = store.stats("k")
            if stats.idle + stats.in_use + stats.creating > 4:
                violations += 1
            raw.srem(held, name)
            if not store.release("k", name, got.token, now=time.time()):
                violations += 1
            done += 1
    except BaseException:
        os._exit(99)
    os._exit(min(violations, 98))


def test_processes_never_hold_one_session_at_once(
    store: RedisStore, redis_url: str, prefix: str, client: Any
) -> None:
    store.stats("k")  # the parent's connection, which the children must not share
    held, created = f"{prefix}:test:held", f"{prefix}:test:created"
    children = [
        FORK.Process(target=_hammer, args=(store, redis_url, held, created, 80)) for _ in range(6)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(30)
    assert [child.exitcode for child in children] == [0] * 6
    stats = store.stats("k")  # the parent's store still works after the forks
    assert (stats.in_use, stats.creating) == (0, 0)
    assert stats.idle == client.scard(created) <= 4
    assert stats.high_water <= 4
    assert client.scard(held) == 0
    client.delete(held, created)


def test_the_same_answers_as_memory_store(redis_url: str, prefix: str) -> None:
    for seed in range(4):
        _compare_with_memory(RedisStore(redis_url, prefix=f"{prefix}-{seed}"), seed, steps=250)


def _compare_with_memory(red: RedisStore, seed: int, steps: int) -> None:
    """Random steps on both stores, with times that often tie; every answer, the claims and
    the stats must match (tokens differ, and are matched up as they are handed out)."""
    rnd = random.Random(seed)
    mem = MemoryStore()
    begin(mem, "k")
    begin(red, "k")
    holders = [Holder("h1", 1), Holder("h/2 \u00e9", 22)]
    names = [f"s{i}" for i in range(8)]
    tokens: dict[str, str] = {}  # MemoryStore's token -> RedisStore's
    now = 1000.0

    def pair(mine: str | None, theirs: str | None) -> None:
        assert (mine is None) == (theirs is None)
        if mine is not None and theirs is not None:
            assert tokens.setdefault(mine, theirs) == theirs

    for step in range(steps):
        if rnd.random() < 0.4:
            now += rnd.choice([0.5, 1.0, 3.0, 0.1 + 0.2])
        known = [claim.token for claim in mem.claims("k")] + ["unknown"]
        checked_out = [claim for claim in mem.claims("k") if claim.name]
        op = rnd.choice(
            ["acquire"] * 4
            + ["created"] * 2
            + ["release"] * 2
            + ["create_failed", "reserve", "keep_alive", "discard", "take_idle"]
            + ["roll_window", "reclaim", "clear"]
        )
        what = (step, op)
        if op == "acquire":
            kw: dict[str, Any] = {
                "holder": rnd.choice(holders),
                "now": now,
                "max_sessions": rnd.randint(1, 5),
                "reclaim_before": now - rnd.choice([0, 2, 10, 1000]),
                "expired_before": now - rnd.choice([3, 10, 1000, math.inf]),
                "retire_before": now - rnd.choice([5, 20, 1000]),
            }
            a, b = mem.acquire("k", Checkout(**kw)), red.acquire("k", Checkout(**kw))
            pair(a.token, b.token)
            assert (a.record, a.dropped, a.reclaimed, a.releases) == (
                b.record,
                b.dropped,
                b.reclaimed,
                b.releases,
            ), what
        elif op == "created":
            token = rnd.choice(known)
            record = SessionRecord(rnd.choice(names), now - rnd.choice([0, 1, 7]), now)
            kw = {"now": now, "check_out": rnd.random() < 0.5}
            assert mem.created("k", token, record, **kw) == red.created(
                "k", tokens.get(token, token), record, **kw
            ), what
        elif op == "create_failed":
            token = rnd.choice(known)
            mem.create_failed("k", token)
            red.create_failed("k", tokens.get(token, token))
        elif op == "reserve":
            kw = {
                "holder": rnd.choice(holders),
                "now": now,
                "target": rnd.randint(0, 5),
                "max_sessions": rnd.randint(1, 5),
            }
            mine, theirs = mem.reserve("k", **kw), red.reserve("k", **kw)
            assert len(mine) == len(theirs), what
            for x, y in zip(mine, theirs, strict=True):
                pair(x, y)
        elif op in ("release", "keep_alive", "discard"):
            if checked_out and rnd.random() < 0.85:
                claim = rnd.choice(checked_out)
                name, token = str(claim.name), claim.token
            else:
                name, token = rnd.choice(names), rnd.choice(known)
            extra = {} if op == "discard" else {"now": now}
            assert getattr(mem, op)("k", name, token, **extra) == getattr(red, op)(
                "k", name, tokens.get(token, token), **extra
            ), what
        elif op == "take_idle":
            kw = {
                "limit": rnd.randint(0, 4),
                "keep": rnd.randint(0, 3),
                "now": now,
                "last_used_before": rnd.choice([None, now, now - 1, now - 5]),
                "created_before": rnd.choice([None, now, now - 2, now - 6]),
                "holder": rnd.choice([None, *holders]),
            }
            mine_taken, theirs_taken = (
                mem.take_idle("k", TakeIdle(**kw)),
                red.take_idle("k", TakeIdle(**kw)),
            )
            assert [r for r, _ in mine_taken] == [r for r, _ in theirs_taken], what
            for (_, x), (_, y) in zip(mine_taken, theirs_taken, strict=True):
                pair(x, y)
        elif op == "roll_window":
            kw = {"now": now, "length": rnd.choice([0.5, 2.0, 5.0])}
            assert mem.roll_window("k", **kw) == red.roll_window("k", **kw), what
        elif op == "reclaim":
            chosen = rnd.sample(known, k=rnd.randint(0, len(known)))
            assert mem.reclaim("k", chosen, now=now) == red.reclaim(
                "k", [tokens.get(t, t) for t in chosen], now=now
            ), what
        elif op == "clear" and rnd.random() < 0.3:
            assert mem.clear("k") == red.clear("k"), what
            begin(mem, "k")
            begin(red, "k")
        mine_claims = [(tokens.get(c.token), c.holder, c.since, c.name) for c in mem.claims("k")]
        theirs_claims = [(c.token, c.holder, c.since, c.name) for c in red.claims("k")]
        assert mine_claims == theirs_claims, what
        assert mem.stats("k") == red.stats("k"), what
    assert mem.clear("k") == red.clear("k")
    red.close()


def test_without_the_redis_package_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    monkeypatch.delitem(sys.modules, "spanpool.cache.redis")
    with pytest.raises(ImportError, match=r"pip install 'spanpool\[redis\]'"):
        importlib.import_module("spanpool.cache.redis")
