"""Giving a pool's state in a store its epoch, as a pool's first reconciliation does (with a
server that lists no session), for tests of the store steps themselves."""

from __future__ import annotations

from typing import Any

from spanpool.stores import Adoption


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
