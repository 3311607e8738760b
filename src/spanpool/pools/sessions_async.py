"""Creating and deleting a pool's sessions on the server: in batches straight into the idle
set, one for a checkout that holds a creation permit, and the deletion of sessions the pool
has forgotten. A permit whose session was not made gives its place back, and a session that
was made is the pool's: none is left on the server unknown to it. The pool calls it; it works
on the pool's core.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from ..bridge import client_async
from ..core import CreationPermit
from ..stats import SESSIONS_DELETED
from . import _flavour_async

if TYPE_CHECKING:
    from .base_async import AsyncManagedPool

log = logging.getLogger("spanpool")


class AsyncSessions:
    """The sessions of one pool, as the server makes and deletes them."""

    def __init__(self, pool: AsyncManagedPool) -> None:
        self._pool = pool

    async def create_idle(self, permits: list[CreationPermit[Any]]) -> int:
        """Create one session per permit, in batches, straight into the idle set."""
        # begin async only
        # A cancelled asyncio caller does not stop them: the server would create the sessions
        # of the calls in flight anyway, and the pool would never learn their names.
        # end async only
        if not permits:
            return 0
        return await _flavour_async.run_to_end(self.create_batches(permits))

    async def create_batches(self, permits: list[CreationPermit[Any]]) -> int:
        pool = self._pool
        pending = list(permits)
        lock = threading.Lock()

        def arrived(batch: list[Any]) -> None:
            now = pool._clock()
            for session in batch:
                session._spanpool_last_used = now
                session._spanpool_pooled = True
            with lock:
                permits = [pending.pop() for _ in range(min(len(batch), len(pending)))]
            refused = pool._core.created_idle_many(permits, batch[: len(permits)])
            for session in refused + batch[len(permits) :]:
                _flavour_async.spawn(self.delete, session)

        try:
            return await client_async.batch_create(
                pool._database, len(permits), pool._labels, pool._database_role, pool, arrived
            )
        finally:
            # Whatever was not created gives its place back, to a waiter or to free capacity.
            for permit in pending:
                pool._core.create_failed(permit)

    async def create_for(self, permit: CreationPermit[Any]) -> Any:
        """Create a session for the checkout that holds ``permit``; it is checked out."""
        # begin async only
        # Runs to its end even if an asyncio caller is cancelled meanwhile: the session it
        # would have had is then put back, rather than left on the server unknown to the pool.
        # end async only
        return await _flavour_async.run_to_end(self._create_checked_out(permit), self._pool.put)

    async def _create_checked_out(self, permit: CreationPermit[Any]) -> Any:
        core = self._pool._core
        session = self._pool._new_session()
        session._spanpool_pooled = True
        try:
            await client_async.create(session)
        except BaseException:
            core.create_failed(permit)
            raise
        core.created(permit, session)
        return session

    async def delete(self, session: Any) -> None:
        await self.delete_all([session])

    async def delete_all(self, sessions: list[Any]) -> None:
        """Delete sessions the pool has forgotten."""
        # A cancelled asyncio caller does not stop it.  # async only
        if sessions:
            await _flavour_async.run_to_end(self.delete_now(sessions))

    async def delete_now(self, sessions: list[Any]) -> int:
        """Delete sessions the pool has forgotten, in the caller's task; how many went."""
        pool = self._pool
        for session in sessions:
            client_async.detach(session)
        outcomes = await _flavour_async.run_all(client_async.delete, sessions)
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        pool._counters.add(SESSIONS_DELETED, len(sessions) - len(failed))
        for error in failed[:3]:
            log.warning("%s: deleting a session failed: %s", pool._name, error)
        return len(sessions) - len(failed)
