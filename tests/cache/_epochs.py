"""Giving a pool's state in a store its epoch, as a pool's first reconciliation does (with a
server that lists no session), for tests of the store steps themselves; and a checkout that
does so first where the pool has no epoch yet."""

from __future__ import annotations

from typing import Any

from spanpool.stores import Acquired, Adoption, Checkout, Holder

A = Holder("host-a", 101)
B = Holder("host-b", 202)
NEVER = 0.0  # a time before every `now` of these tests: nothing expires, retires or is reclaimed


def begin(store: Any, key: str, now: float = 0.0) -> None:
    """Write the epoch of ``key`` (when it has none) and end the reconciliation at once."""
    lease = store.start_reconcile(key, now=now, lease_seconds=30.0, force=False)
    if lease is not None:
        adoption = Adoption(lease=lease, records=(), now=now, max_sessions=1, idle_before=now)
        assert store.adopt(key, adoption) == []
        if hasattr(store, "_pool_keys"):
            # A RedisStore: ending the lease left a release marker for waiters; tests that
            # count round trips start without it.
            store._client.delete(store._pool_keys(key)[8])


def acquire(
    store: Any,
    key: str,
    now: float = 1000.0,
    *,
    holder: Holder = A,
    max_sessions: int = 4,
    reclaim_before: float = NEVER,
    expired_before: float = NEVER,
    retire_before: float = NEVER,
) -> Acquired:
    """``store.acquire``; a pool without an epoch (a store opened inside the test, or a
    cleared pool) gets one first, as a pool's reconciliation gives it."""
    checkout = Checkout(
        holder=holder,
        now=now,
        max_sessions=max_sessions,
        reclaim_before=reclaim_before,
        expired_before=expired_before,
        retire_before=retire_before,
    )
    got = store.acquire(key, checkout)
    if got.reset:
        begin(store, key, now)
        got = store.acquire(key, checkout)
    return got
