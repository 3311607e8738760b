"""A ``MultiplexedPool``'s steps in its shared store: read the session another process made,
claim the lease to make one, publish it; and what a failing store changes (the process goes
on with a session of its own, and publishes it once the store works again).

Each function takes the pool (its store, clock, name and deadline) and the
:class:`~spanpool.pools._multiplexed_shared.SharedSession` of its key.
"""

from __future__ import annotations

import logging
import math
import random
from typing import Any

from ..cache.store import Holder, MultiplexedClaim, MultiplexedRecord, MultiplexedStore
from . import _maintenance_async
from ._multiplexed_shared import SharedSession, usable

log = logging.getLogger("spanpool")

POLL_INTERVAL = 60.0
"""How often maintenance reads the store, to pick up a successor made by another process."""
STORE_RETRY = 5.0
"""After a store failure the pool works on its own for this long, then tries the store again."""

STEPS = tuple(
    name for name, value in vars(MultiplexedStore).items() if name.startswith("multiplexed_")
)
"""The steps a store must have to share multiplexed sessions."""


def next_poll(now: float) -> float:
    """When the store is read again after a read at ``now`` (spread, so that processes
    started together do not read together)."""
    return now + POLL_INTERVAL * random.uniform(0.8, 1.2)


async def claim(pool: Any, entry: SharedSession, replacing: str | None) -> MultiplexedClaim:
    """Ask the store for the lease to create the key's session (see
    ``MultiplexedStore.multiplexed_claim``): long enough for one creation and its retry."""
    store: MultiplexedStore = pool._store
    return await _maintenance_async.store_step(
        store.multiplexed_claim,
        entry.key,
        holder=Holder.current(),
        now=pool._clock(),
        lease=2 * pool._create_timeout + 5.0,
        replacing=replacing,
    )


async def read(pool: Any, entry: SharedSession) -> None:
    """At bind: use the session the store holds, if any (no RPC)."""
    store: MultiplexedStore = pool._store
    try:
        record = await _maintenance_async.store_step(store.multiplexed_get, entry.key)
    except Exception as exc:
        failed(pool, entry, exc)
        return
    with entry.lock:
        # Just read: the maintenance need not read it again before its usual interval.
        entry.poll_at = next_poll(pool._clock())
        if record is not None and usable(record, pool._clock()):
            entry.adopt_locked(record, pool._rotate_after)


async def sync(pool: Any, entry: SharedSession) -> None:
    """Maintenance: pick up the successor another process made; put a session made while
    the store was failing into it, once it works again."""
    store: MultiplexedStore = pool._store
    try:
        stored = await _maintenance_async.store_step(store.multiplexed_get, entry.key)
        mine = entry.record
        if mine is not None and (stored is None or stored.name in entry.lost):
            lease = await claim(pool, entry, stored.name if stored is not None else None)
            if lease.token is not None:
                stored = await _maintenance_async.store_step(
                    store.multiplexed_publish,
                    entry.key,
                    lease.token,
                    name=mine.name,
                    created_at=mine.created_at,
                )
            else:
                stored = lease.record
    except Exception as exc:
        failed(pool, entry, exc)
        return
    entry.store_down_until = -math.inf
    if stored is None:
        return
    with entry.lock:
        if entry.record is not None and entry.record.name == stored.name:
            entry.record = stored  # the same session, with the store's generation
            entry.unpublished = False
            pool._session = None
        elif usable(stored, pool._clock()) and entry.adopt_locked(stored, pool._rotate_after):
            entry.unpublished = False


async def publish(
    pool: Any, entry: SharedSession, token: str, name: str, created_at: float
) -> MultiplexedRecord | None:
    """Put the session just created under the lease ``token`` into the store; the record to
    use (the store's, with its generation), or None when the store failed."""
    store: MultiplexedStore = pool._store
    try:
        published = await _maintenance_async.store_step(
            store.multiplexed_publish, entry.key, token, name=name, created_at=created_at
        )
        if published is None:  # the lease was taken over meanwhile: use theirs
            published = await _maintenance_async.store_step(store.multiplexed_get, entry.key)
    except Exception as exc:
        failed(pool, entry, exc)
        return None
    if published is not None:
        entry.unpublished = False
        entry.poll_at = next_poll(pool._clock())
    return published


async def abandon(pool: Any, entry: SharedSession, token: str) -> None:
    """Give the lease back after a failed creation (quietly: it expires anyway)."""
    try:
        await _maintenance_async.store_step(pool._store.multiplexed_abandon, entry.key, token)
    except Exception as exc:
        failed(pool, entry, exc)


def failed(pool: Any, entry: SharedSession, exc: BaseException) -> None:
    """A store step failed: the pool works without the store for ``STORE_RETRY`` seconds."""
    now = pool._clock()
    with entry.lock:
        entry.store_errors += 1
        first = entry.store_down_until < now
        entry.store_down_until = now + STORE_RETRY
        entry.poll_at = min(entry.poll_at, now + STORE_RETRY)
    if pool._maintenance is not None:
        pool._maintenance.poke()  # the store is tried again in STORE_RETRY seconds
    if first:
        log.warning(
            "%s: the store failed (%s); this process uses its own multiplexed session "
            "until the store works again",
            pool._name,
            exc,
        )
