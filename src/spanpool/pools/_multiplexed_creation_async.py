"""Making a ``MultiplexedPool``'s session: the first creation, the successor of a lost one,
the rotation after ``rotate_after``; and the maintenance round that starts the retries and
rotations that are due.

One creation at a time per key in the process (single flight: whoever asks while one is in
flight gets its future), and with a store one per key for everyone (under the store's lease:
the others use what the holder publishes). A failed creation is retried with backoff; a
failed rotation later.

Each function takes the pool (its database, role, store, clock, deadlines) and the
:class:`~spanpool.pools._multiplexed_shared.SharedSession` of its key.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import random
import time
from typing import Any

from google.api_core import exceptions

from ..bridge import multiplexed_async
from ..cache.store import MultiplexedRecord
from . import _maintenance_async
from . import _multiplexed_store_async as shared_store
from ._multiplexed_shared import SharedSession, usable

log = logging.getLogger("spanpool")

CREATE_TIMEOUT = 10.0
"""Default deadline of one CreateSession, and how long a request waits for a session."""
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 5.0
"""After a failed creation, the next may start this long after it, doubling up to the max."""
ROTATION_RETRY = 300.0
"""A failed rotation is tried again this long after."""

Attempt = concurrent.futures.Future[MultiplexedRecord | None]


def start(pool: Any, entry: SharedSession, kind: str) -> Attempt | None:
    """The creation in flight for ``entry``, or a new one (``kind``: ``create`` when there is
    no session, ``rotate`` for a successor while the session is fine); None while backing off
    after a failed creation, or when there is nothing to rotate."""
    with entry.lock:
        if entry.attempt is not None:
            return entry.attempt
        if kind == "create" and pool._clock() < entry.retry_at:
            return None
        replacing = entry.lost[-1] if kind == "create" and entry.lost else None
        if kind == "rotate":
            if entry.record is None:
                return None
            replacing = entry.record.name
        future: Attempt = concurrent.futures.Future()
        entry.attempt = future
    _maintenance_async.start(_attempt, pool, entry, kind, replacing, future)
    return future


async def _attempt(
    pool: Any, entry: SharedSession, kind: str, replacing: str | None, future: Attempt
) -> None:
    """One creation (or rotation) in the background; its outcome goes to ``future``, which
    requests wait on."""
    try:
        record = await _obtain(pool, entry, kind, replacing)
    except BaseException as exc:
        now = pool._clock()
        with entry.lock:
            entry.attempt = None
            if kind == "rotate":
                entry.rotate_at = now + ROTATION_RETRY
            else:
                entry.failures += 1
                entry.last_error = exc
                delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (entry.failures - 1))
                entry.retry_at = now + delay * random.uniform(0.8, 1.2)
        # The first failure of a streak is worth a warning; the retries that follow are not.
        quiet = kind != "rotate" and entry.failures > 1 and entry.failures % 20
        (log.debug if quiet else log.warning)(
            "%s: %s of the multiplexed session of %s failed: %s",
            pool._name,
            "rotation" if kind == "rotate" else "creation",
            entry.key,
            exc,
        )
        future.set_exception(exc)
        if pool._maintenance is not None:
            pool._maintenance.poke()  # a retry is due soon
        if not isinstance(exc, Exception):
            raise
        return
    with entry.lock:
        entry.attempt = None
        if record is not None:
            replaced = kind == "create" and replacing is not None
            if entry.adopt_locked(record, pool._rotate_after):
                if kind == "rotate":
                    entry.rotations += 1
                elif replaced:
                    entry.replaced += 1
            entry.failures = 0
            entry.last_error = None
            entry.retry_at = -math.inf
        elif kind == "rotate":
            entry.rotate_at = pool._clock() + ROTATION_RETRY
    # Nothing is due soon after a success (the next rotation is days away, the next store
    # read a minute): the maintenance, asleep for at most IDLE_WAIT, is not woken, so that
    # the requests that waited for the session have the interpreter to themselves.
    future.set_result(record)


async def _obtain(
    pool: Any, entry: SharedSession, kind: str, replacing: str | None
) -> MultiplexedRecord | None:
    """The session to use from now on: the store's when another holder made it (no RPC),
    else one created here (under the store's lease when there is a store). None when
    rotating and another holder is at it."""
    deadline = time.monotonic() + pool._create_timeout
    pause = 0.02
    while True:
        token: str | None = None
        if pool._store is not None and pool._clock() >= entry.store_down_until:
            try:
                lease = await shared_store.claim(pool, entry, replacing)
            except Exception as exc:
                shared_store.failed(pool, entry, exc)
            else:
                token = lease.token
                theirs = lease.record
                if token is None:
                    if (
                        theirs is not None
                        and theirs.name != replacing
                        and theirs.name not in entry.lost
                        and usable(theirs, pool._clock())
                    ):
                        return theirs
                    if kind == "rotate":
                        return None
                    if time.monotonic() >= deadline:
                        raise exceptions.DeadlineExceeded(
                            f"{pool._name}: another process holds the lease to create the "
                            f"multiplexed session of {entry.key} and has not published it "
                            f"within {pool._create_timeout:g}s"
                        )
                    await _maintenance_async.sleep(pause)  # another holder is creating it
                    pause = min(pause * 2, 0.5)
                    continue
        return await _create(pool, entry, token)


async def _create(pool: Any, entry: SharedSession, token: str | None) -> MultiplexedRecord:
    """One CreateSession, published to the store when this process holds its lease."""
    try:
        name = await multiplexed_async.create_multiplexed(
            pool._database, pool._role, pool._create_timeout
        )
    except BaseException:
        if token is not None:
            await shared_store.abandon(pool, entry, token)
        raise
    created_at = pool._clock()
    with entry.lock:
        entry.created += 1
        generation = entry.generation + 1
    if token is not None:
        published = await shared_store.publish(pool, entry, token, name, created_at)
        if published is not None:
            return published
    entry.unpublished = pool._store is not None
    return MultiplexedRecord(name, created_at, generation)


async def maintain(pool: Any, entry: SharedSession) -> float:
    """One round of maintenance for ``entry``: read the store when due, retry a failed
    creation, start a rotation that is due. Returns the seconds until the next round is
    due."""
    now = pool._clock()
    if pool._store is not None and now >= entry.poll_at:
        entry.poll_at = shared_store.next_poll(now)
        if now >= entry.store_down_until and entry.attempt is None:
            await shared_store.sync(pool, entry)
    record = entry.record
    if record is None:
        if entry.attempt is None and now >= entry.retry_at:
            start(pool, entry, "create")
    elif entry.attempt is None and now >= entry.rotate_at:
        if usable(record, now):
            start(pool, entry, "rotate")
        else:
            pool._lost(record.name)  # the server is about to drop it: replace it now
    # While a creation or rotation is in flight nothing else is due: its end pokes the
    # maintenance.
    due = [entry.poll_at] if pool._store is not None else []
    if entry.attempt is None:
        due.append(entry.retry_at if entry.record is None else entry.rotate_at)
    if not due:
        return _maintenance_async.IDLE_WAIT
    return max(min(due) - float(pool._clock()), 0.0)
