"""New sessions for ``CacheSessionPool``: each is created under a *creation permit* that the
store granted (so that ``max_sessions`` counts it while it is being made), then recorded in the
store under the permit's token. A session that cannot be recorded is deleted, never left on the
server unaccounted; a record whose answer was lost goes to the journal of unsettled steps.
"""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Any

from ..bridge import client
from ..errors import NotCheckedOut, StoreError
from ..stats import SESSIONS_CREATED
from ._held import Held
from ._steps import Unsettled
from .store import SessionRecord

if TYPE_CHECKING:
    from .pool import CacheSessionPool


def create_checked_out(pool: CacheSessionPool, key: str, token: str) -> client.PooledSession | None:
    """Create a session for the permit ``token`` and check it out; None when the permit was
    taken back meanwhile."""
    steps, store = pool._steps, pool._steps.store
    session: client.PooledSession = pool._new_session()
    session._spanpool_pooled = True
    with steps.in_flight([token]):
        try:
            client.create(session)
        except BaseException:
            steps.quietly(lambda: store.create_failed(key, token))
            raise
        pool._count(SESSIONS_CREATED)
        now = pool._clock()
        record = SessionRecord(session.name, now, now)
        try:
            recorded = steps.run(
                "created", store.created, key, token, record, now=now, check_out=True
            )
        except StoreError:
            steps.unsettle(Unsettled("created", record.name, token, record))
            raise
    if not recorded:
        # The permit was taken back (the pool was cleared, or this creation took longer than
        # reclaim_after_seconds): the session has no place in the pool.
        pool._upkeep.delete_sessions([session])
        return None
    pool._holdings.add(Held(token, session, record.created_at, now))
    return session


def record_idle(pool: CacheSessionPool, key: str, token: str, name: str, now: float) -> bool:
    """Record the new session ``name`` under the permit ``token`` as idle; False when the
    permit is unknown (the caller deletes the session).

    Recorded as checked out and then released, so that a step whose answer is lost can be
    settled later: the release tells whether the session was recorded.
    """
    steps, store = pool._steps, pool._steps.store
    record = SessionRecord(name, now, now)
    with steps.in_flight([token]):
        try:
            recorded: bool = steps.run(
                "created", store.created, key, token, record, now=now, check_out=True
            )
        except StoreError:
            steps.unsettle(Unsettled("created", name, token, record))
            raise
        if not recorded:
            return False
        try:
            steps.run("release", store.release, key, name, token, now=now)
        except StoreError:
            steps.unsettle(Unsettled("release", name, token))
            raise
        return True


def create_idle(pool: CacheSessionPool, key: str, tokens: list[str]) -> int:
    """Create a session for each permit of ``tokens`` (BatchCreateSessions, at most 100 per
    call) and record it idle; returns how many were recorded. Permits left unused are given
    back."""
    if not tokens:
        return 0
    steps = pool._steps
    pending = list(tokens)
    recorded = 0
    guard = threading.Lock()

    def arrived(batch: list[Any]) -> None:
        nonlocal recorded
        pool._count(SESSIONS_CREATED, len(batch))
        now = pool._clock()
        for index, session in enumerate(batch):
            with guard:
                token = pending.pop() if pending else None
            if token is None:
                pool._upkeep.delete_sessions([session])
                continue
            try:
                ok = record_idle(pool, key, token, session.name, now)
            except StoreError:
                # This one is settled later; the rest of the batch has no place in the
                # store: delete it rather than leave it on the server.
                pool._upkeep.delete_sessions(batch[index + 1 :])
                raise
            if ok:
                with guard:
                    recorded += 1
            else:
                pool._upkeep.delete_sessions([session])

    with steps.in_flight(tokens):
        try:
            client.batch_create(
                pool._database, len(tokens), pool._labels, pool._database_role, pool, arrived
            )
        finally:
            for token in pending:
                steps.quietly(functools.partial(steps.store.create_failed, key, token))
    return recorded


def adopt_or_refuse(pool: CacheSessionPool, session: Any) -> None:
    """Take in a session returned to ``pool`` that it did not hand out, when it is one the
    official ``Database`` made with ``pool._new_session()`` to replace one the server lost;
    else raise :class:`~spanpool.errors.NotCheckedOut`."""
    if (
        isinstance(session, client.PooledSession)
        and client.session_database(session) is pool._database
        and session.session_id is not None
        and client.owner_of(session) in (None, pool)
        and not session._spanpool_pooled
        and not session._spanpool_gone
    ):
        adopt(pool, session)
        return
    where = getattr(client.session_database(session), "name", None)
    raise NotCheckedOut(
        f"CacheSessionPool {pool._key}: {getattr(session, 'name', session)!r} is not "
        f"checked out from this pool by this process (returned twice, or it belongs to "
        f"{where or 'another pool'})"
    )


def adopt(pool: CacheSessionPool, session: client.PooledSession) -> None:
    """Take in a session that the official ``Database`` made with ``pool._new_session()``
    (to replace one the server lost) when there is room; else delete it."""
    steps, store = pool._steps, pool._steps.store
    key = pool.key
    now = pool._clock()
    try:
        stats = steps.run("stats", store.stats, key)
        permits = steps.run(
            "reserve",
            store.reserve,
            key,
            holder=pool._holder,
            now=now,
            target=stats.idle + stats.in_use + stats.creating + 1,
            max_sessions=pool.max_sessions,
        )
    except StoreError:
        pool._upkeep.delete_sessions([session])
        raise
    for extra in permits[1:]:
        steps.quietly(functools.partial(store.create_failed, key, extra))
    client.detach(session)
    session._spanpool_pooled = True
    if not permits or not record_idle(pool, key, permits[0], session.name, now):
        pool._upkeep.delete_sessions([session])
