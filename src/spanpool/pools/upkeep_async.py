"""Keeping a pool's sessions in order: pings that never block ``get()``, replacing the
sessions the server dropped (and taking in the replacements the client makes itself), topping
a fixed-size pool up, and the rounds of the maintenance worker (spread over the ping
interval). The pool calls it; it works on the pool's core.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..bridge import client_async
from ..errors import NotCheckedOut, PoolFull
from ..stats import PINGS, PINGS_FAILED, POOL_CREATING, POOL_SIZE, SESSIONS_REPLACED
from . import _flavour_async

if TYPE_CHECKING:
    from .base_async import AsyncManagedPool


class AsyncUpkeep:
    """The upkeep of one pool's sessions."""

    def __init__(self, pool: AsyncManagedPool) -> None:
        self._pool = pool

    def adopt_or_refuse(self, session: Any) -> None:
        """Take in a session the pool did not check out (see ``AsyncManagedPool.put``), or
        refuse it."""
        pool = self._pool
        # The official Database replaces a session the server lost with one it creates from
        # `pool._new_session()` and puts that one back: take it in if there is room.
        if getattr(session, "_spanpool_gone", False) and client_async.owner_of(session) is None:
            return  # already forgotten: the server lost it
        if (
            session is not None
            and client_async.session_database(session) is pool._database
            and getattr(session, "session_id", None) is not None
            and isinstance(session, client_async.PooledSession)
            and client_async.owner_of(session) in (None, pool)
            and not session._spanpool_pooled
        ):
            permits = [] if pool._core.closed else pool._core.reserve(1)
            if permits and pool._core.created_idle(permits[0], session):
                session._spanpool_owner = pool
                session._spanpool_pooled = True
                session._spanpool_last_used = pool._clock()
                return
            # No room (a waiter took the place meanwhile) or closed: the session is deleted
            # rather than left on the server, as any session returned to a closed pool. When
            # this runs while an error is on its way up (the client puts its replacement back
            # from a `with` block that failed), that error is the caller's news: it is not
            # replaced by a pool error.
            _flavour_async.spawn(pool._rpcs.delete, session)
            if not pool._core.closed and sys.exc_info()[1] is None:
                raise PoolFull(f"{pool._name} is full: it cannot take {session.name} in")
            return
        where = getattr(client_async.session_database(session), "name", None)
        raise NotCheckedOut(
            f"{pool._name}: {getattr(session, 'name', session)!r} was not checked out from this "
            f"pool (it belongs to {where or 'another pool'})"
        )

    async def ping(self) -> None:
        """See ``AsyncManagedPool.ping``."""
        pool = self._pool
        interval = pool._keepalive_interval
        if interval is None:
            return
        size = pool.size or 8
        per_round, keep = max(1, size // 2), max(1, size // 4)
        for _ in range(4 * size):  # bounded: each round refreshes at least one session
            due = pool._core.take_idle_older_than(interval, per_round, keep=keep)
            if not due:
                return
            await self.refresh(due)

    def interval(self) -> float:
        """How long the worker sleeps between rounds: a share of the ping interval, so the
        pings of a full pool are spread over it rather than sent all at once."""
        pool = self._pool
        interval = pool._keepalive_interval or 600.0
        share = interval / max(pool.size or 10, 1)
        return min(max(share, 0.05), 60.0)

    async def round(self) -> None:
        """Ping the sessions that are due, a few at a time; top the pool up."""
        pool = self._pool
        interval = pool._keepalive_interval
        if interval is not None:
            per_round = max(1, math.ceil((pool.size or 10) * self.interval() / interval))
            await self.refresh(pool._core.take_idle_older_than(interval, per_round, keep=1))
        if pool._fill_on_bind and pool.size is not None and pool._database is not None:
            stats = pool._core.get_stats()
            missing = pool.size - stats[POOL_SIZE] - stats[POOL_CREATING]
            if missing > 0:
                await pool._rpcs.create_idle(pool._core.reserve(missing))

    async def refresh(self, sessions: list[Any]) -> None:
        """Ping sessions taken into maintenance; put back those that answered, replace the
        others."""
        if not sessions:
            return
        pool, core = self._pool, self._pool._core
        outcomes = await self.run_on_taken(client_async.ping, sessions)
        lost = 0
        doomed = []
        for session, outcome in zip(sessions, outcomes, strict=True):
            if outcome is True:
                session._spanpool_transaction = None  # the ping ended it, if it had one
                if not core.return_checked(session):
                    doomed.append(session)
            else:
                core.discard(session)
                if isinstance(outcome, BaseException):
                    # Unknown state: delete it rather than hand out a session in doubt.
                    doomed.append(session)
                lost += 1
        counters = pool._counters
        counters.add(PINGS, len(sessions))
        if lost:
            counters.add(PINGS_FAILED, lost)
            counters.add(SESSIONS_REPLACED, lost)
        await pool._rpcs.delete_all(doomed)
        if lost and pool._fill_on_bind and not core.closed:
            await pool._rpcs.create_idle(core.reserve(lost))

    async def run_on_taken(self, rpc: Callable[[Any], Any], sessions: list[Any]) -> list[Any]:
        """``rpc(session)`` for sessions taken into maintenance, concurrently: the outcomes
        (results or errors). The caller then settles every session before it awaits anything
        else, so that a cancellation meanwhile leaves none in maintenance."""
        try:
            return await _flavour_async.run_all(rpc, sessions)
        except BaseException:
            # Cancelled (or interrupted) while the sessions were out for the RPC: they go back
            # as they were, so that none stays checked out for ever.
            for session in sessions:
                if not self._pool._core.return_checked(session, refreshed=False):
                    _flavour_async.spawn(self._pool._rpcs.delete, session)
            raise

    # begin async only
    async def retire(self, session: Any) -> None:
        """Delete a session returned with a request of its cancelled holder perhaps still
        running on the server, and create its replacement (a fixed-size pool)."""
        pool = self._pool
        pool._core.discard(session)
        pool._count_replaced()
        await _flavour_async.run_to_end(self._replace(session))

    async def _replace(self, session: Any) -> None:
        pool = self._pool
        await pool._rpcs.delete_now([session])
        if pool._fill_on_bind and not pool._core.closed:
            await pool._rpcs.create_batches(pool._core.reserve(1))

    # end async only
