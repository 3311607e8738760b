"""Checking out and in through the store: what ``CacheSessionPool.acquire()`` and
``release()`` do when no parked session serves (``_leases.py`` is the warm road).

An acquire is a loop of store steps with RPCs between them, never during one: the store hands
out an idle session, a creation permit (the session is created, then recorded), or nothing
(the pool is full: take back the claims of dead holders, else wait for a release). A release
is one store step, or none when the session is parked in this process.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from .. import stats
from ..bridge import client
from ..errors import PoolTimeout, StoreError
from . import _creating, _held, _reconcile
from ._held import Held
from ._steps import Unsettled
from .maintain import RETIRE_AGE, SERVER_IDLE_EXPIRY, VERIFY_AFTER
from .store import Checkout, SessionRecord

if TYPE_CHECKING:
    from .pool import CacheSessionPool

log = logging.getLogger("spanpool")


def acquire(pool: CacheSessionPool, wait: float, timeout: float | None) -> client.PooledSession:
    """Check a session out, waiting up to ``wait`` seconds for a release when full
    (``timeout``: the caller's, when it gave one)."""
    key = pool._ready()
    steps, store, leases = pool._steps, pool._store, pool._leases
    pool._count(stats.REQUESTS_NUM)
    if leases.parked and (session := _take_leased(pool)) is not None:
        return session
    started = time.monotonic()
    waited = False
    try:
        while True:
            now = pool._clock()
            got = steps.run("acquire", store.acquire, key, _checkout(pool, now))
            if got.reset:
                # The store lost the pool's state (or a reconciler died): settle it with
                # the server before anything is created. Another process may be on it.
                if _reconcile.reconcile(pool, key, force=False) is None:
                    _wait_for_reconciler(pool, key, started + wait, got.releases)
                continue
            leases.acquired(got.spare, got.wants)
            if got.dropped:
                # Expired ones are gone from the server already; retired ones are deleted.
                pool._upkeep.delete_records(
                    [r for r in got.dropped if r.created_at < now - RETIRE_AGE]
                )
            if got.record is not None and got.token is not None:
                if got.reclaimed:
                    pool._count(stats.SESSIONS_RECLAIMED)
                session = _hold(pool, got.record, got.token, now)
                if got.record.last_used < now - VERIFY_AFTER and not _still_exists(pool, session):
                    continue
                return session
            if got.token is not None:
                created = _creating.create_checked_out(pool, key, got.token)
                if created is not None:
                    return created
                continue
            # The pool is full.
            if pool._upkeep.reclaim_dead(key, rate_limited=True):
                continue
            remaining = started + wait - time.monotonic()
            if remaining <= 0:
                pool._count(stats.REQUESTS_TIMEOUTS)
                raise PoolTimeout(
                    f"CacheSessionPool {key}: all {pool.max_sessions} sessions (max_sessions) "
                    f"are in use or being created; gave up after waiting "
                    f"{time.monotonic() - started:.2f}s ({_why(pool, timeout)})"
                )
            if not waited:
                waited = True
                pool._count(stats.REQUESTS_WAITING_TOTAL)
                leases.wait_began()
            if leases.parked and (session := _take_leased(pool)) is not None:
                return session
            steps.run(
                "wait_for_release",
                store.wait_for_release,
                key,
                min(remaining, pool.sleep_interval_seconds),
                got.releases,
                locked=False,
            )
    finally:
        if waited:
            leases.wait_ended()
            pool._count(stats.REQUESTS_WAIT_MS, round((time.monotonic() - started) * 1000))


def _checkout(pool: CacheSessionPool, now: float) -> Checkout:
    return Checkout(
        holder=pool._holder,
        now=now,
        max_sessions=pool.max_sessions,
        reclaim_before=now - pool.reclaim_after_seconds,
        expired_before=now - SERVER_IDLE_EXPIRY,
        retire_before=now - RETIRE_AGE,
    )


def _why(pool: CacheSessionPool, timeout: float | None) -> str:
    """What set the waiting time, for the PoolTimeout message."""
    if timeout is not None:
        return f"timeout={timeout:g}"
    if not pool.should_wait_for_session:
        return "should_wait_for_session is False"
    return (
        f"max_cycles_to_wait_for_session={pool.max_cycles_to_wait_for_session} x "
        f"sleep_interval_seconds={pool.sleep_interval_seconds:g}"
    )


def _wait_for_reconciler(pool: CacheSessionPool, key: str, deadline: float, releases: int) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        pool._count(stats.REQUESTS_TIMEOUTS)
        raise PoolTimeout(
            f"CacheSessionPool {key}: the pool's state is being reconciled with the server "
            "by another process; gave up waiting"
        )
    pool._steps.run(
        "wait_for_release",
        pool._store.wait_for_release,
        key,
        min(remaining, pool.sleep_interval_seconds),
        releases,
        locked=False,
    )


def _hold(
    pool: CacheSessionPool, record: SessionRecord, token: str, now: float
) -> client.PooledSession:
    session = pool._session(record.name, pool)
    session._spanpool_pooled = True
    pool._holdings.add(Held(token, session, record.created_at, now))
    return session


def _take_leased(pool: CacheSessionPool) -> client.PooledSession | None:
    """A session parked in this process, renewed when its claim is old, if there is one."""
    held = pool._leases.take(pool, pool._clock())
    return None if held is None else held.session


def _still_exists(pool: CacheSessionPool, session: client.PooledSession) -> bool:
    """Check a session idle long enough to be in doubt; drop it when the server lost it."""
    try:
        found = client.exists(session)
    except BaseException:
        pool.release(session)
        raise
    if not found:
        pool._count(stats.SESSIONS_REPLACED)
        session._spanpool_gone = True
        _held.drop(pool, session)
    return found


def release(pool: CacheSessionPool, session: Any) -> None:
    """Return a checked-out session to the store (one step), or refuse it."""
    key = pool._ready()
    held = pool._holdings.take(session)
    if held is None:
        if isinstance(session, client.PooledSession) and session._spanpool_gone:
            return  # dropped from the pool when the server said it was gone
        _creating.adopt_or_refuse(pool, session)
        return
    if session._spanpool_gone:
        _held.discard(pool, key, session.name, held.token)
        return
    now = pool._clock()
    name = session.name
    try:
        released = pool._steps.run("release", pool._store.release, key, name, held.token, now=now)
    except StoreError:
        pool._steps.unsettle(Unsettled("release", name, held.token))
        raise
    if not released:
        pool._count(stats.CLAIMS_LOST)
        log.warning(
            "CacheSessionPool %s: %s was reclaimed while checked out (not kept alive for "
            "%ss); call keep_alive() during long work",
            key,
            name,
            pool.reclaim_after_seconds,
        )
