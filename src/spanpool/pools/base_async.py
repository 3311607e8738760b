"""What every spanpool pool does, over the shared core and the bridge to the client.

A pool here is a *policy*: its size, the order it hands sessions out in, whether it creates
on demand or waits, how old an idle session may get before it is checked or pinged. The
mechanics are in this class, once: bind and fill, check out and in, replace dead sessions,
ping, clear, close, statistics, leak warnings, and behaviour across ``fork`` and exit; with
the RPCs that create and delete sessions in ``sessions_async.py``, and pings, replacements
and maintenance rounds in ``upkeep_async.py``.

No RPC is ever made while the core's lock is held: the core hands out sessions or *creation
permits*, and RPCs happen outside it.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable
from typing import Any, TypedDict, TypeVar

from .. import _lifecycle, _validate
from ..bridge import client_async
from ..core import Clock, CreationPermit, IdleOrder, PoolCore
from ..errors import (
    NotCheckedOut,
    PoolClosed,
    PoolForked,
    PoolUsageError,
)
from ..metrics import track as _track_metrics
from ..stats import (
    PINGS,
    PINGS_FAILED,
    POOL_AVAILABLE,
    POOL_IN_USE,
    SESSIONS_DELETED,
    SESSIONS_REPLACED,
    CheckoutTracker,
    Counters,
    warn_checked_out,
)
from . import _flavour_async
from .abstract_async import AsyncAbstractSessionPool
from .sessions_async import AsyncSessions
from .upkeep_async import AsyncUpkeep

R = TypeVar("R")


class PoolOptions(TypedDict, total=False):
    """What every pool takes beyond the official pool's arguments, by keyword."""

    clock: Clock | None
    """Monotonic seconds, for idle ages, pings and leak reports (tests pass a fake one)."""
    leak_threshold: float | None
    """Seconds a session may stay checked out before a ``SessionLeakWarning`` names where."""
    maintenance: bool
    """Run the pool's maintenance worker from ``bind`` on (a thread, or a task)."""


class AsyncManagedPool(AsyncAbstractSessionPool):
    """Shared machinery of spanpool's pools; subclasses set the policy."""

    #: Hand out the most (``"lifo"``) or least (``"lru"``) recently used idle session.
    order: IdleOrder = "lifo"
    #: Most idle sessions kept; a session returned beyond that is deleted (None: no limit).
    _max_idle: int | None = None

    def __init__(
        self,
        *,
        size: int | None,
        fill: bool,
        default_timeout: float | None,
        max_age: float | None,
        keepalive_interval: float | None,
        labels: dict[str, str] | None,
        database_role: str | None,
        clock: Clock | None = None,
        leak_threshold: float | None = None,
        maintenance: bool = False,
        name: str | None = None,
    ) -> None:
        # The policies check their own parameters (size, ages, intervals) by the user's names
        # and units, and pass them here in seconds.
        super().__init__(labels=labels, database_role=database_role)
        self.size = size
        self._fill_on_bind = fill
        self.default_timeout = _validate.timeout("default_timeout", default_timeout)
        self._max_age = max_age
        self._keepalive_interval = keepalive_interval
        self._clock: Clock = (
            time.monotonic
            if clock is None
            else _validate.callable_("clock", clock, "a callable returning monotonic seconds")
        )
        self._leak_threshold = (
            None if leak_threshold is None else _validate.number("leak_threshold", leak_threshold)
        )
        self._name = name or type(self).__name__
        self._rpcs = AsyncSessions(self)
        self._core: PoolCore[Any] = PoolCore(
            name=self._name,
            max_size=size,
            order=self.order,
            clock=self._clock,
            on_orphan=functools.partial(_flavour_async.spawn, self._rpcs.delete),
        )
        self._upkeep = AsyncUpkeep(self)
        self._counters = Counters((SESSIONS_DELETED, SESSIONS_REPLACED, PINGS, PINGS_FAILED))
        # Where sessions were checked out, for leak warnings: only when asked for (a stack walk
        # per checkout).
        self._checkouts: CheckoutTracker[Any] | None = (
            None if self._leak_threshold is None else CheckoutTracker(self._clock)
        )
        # Sessions last used before this time are checked before they are handed out: set
        # when the server reported a session lost, since it may have lost others too.
        self._verify_before = -math.inf
        self._want_maintenance = maintenance
        self._worker: Any = None
        self._exit_hook: _lifecycle.ExitHook | None = None
        self._pid = os.getpid()
        self._forked = False  # set in a child process forked after the pool was made
        _lifecycle.watch_fork(self)
        _track_metrics(self)

    # -- binding ----------------------------------------------------------------------------

    async def bind(self, database: Any) -> None:
        """Associate the pool with ``database`` and create its sessions (concurrently, at most
        100 per call). A session creation that fails raises, and keeps those created."""
        # An asyncio caller cancelled meanwhile does not stop the creations  # async only
        # in flight: their sessions still join the pool.  # async only
        self._check_usable()
        if self._database is not None and self._database.name != database.name:
            raise PoolUsageError(
                f"{self._name} is already bound to {self._database.name}; use one pool per database"
            )
        self._database = database
        client_async.install(database, self)
        if self._exit_hook is None:
            self._exit_hook = _lifecycle.ExitHook(self, _flavour_async.close_at_exit)
        if self._want_maintenance:
            self.start_maintenance()
        if self._fill_on_bind:
            await self.fill()

    async def fill(self) -> int:
        """Create sessions until the pool holds ``size`` of them; returns how many."""
        self._check_usable()
        if self.size is None:
            return 0
        permits = self._core.reserve(self.size)
        return await self._rpcs.create_idle(permits)

    # -- checking out and in -----------------------------------------------------------------

    async def get(self, timeout: float | None = None, **_: Any) -> Any:
        """Check a session out, waiting up to ``timeout`` seconds (the pool's default when
        None). Raises :class:`~spanpool.errors.PoolTimeout` (a ``queue.Empty``)."""
        if self._forked or self._database is None:
            self._check_usable(bound=True)  # before the accounting is touched
        if timeout is not None:
            timeout = _validate.timeout("timeout", timeout)
        if timeout is None:
            timeout = self.default_timeout
        core = self._core
        while True:
            got: Any = await core.acquire_async(timeout)
            if type(got) is CreationPermit:
                got = await self._rpcs.create_for(got)
            else:
                last_used = got._spanpool_last_used
                max_age = self._max_age
                if (
                    (max_age is not None and self._clock() - last_used >= max_age)
                    or last_used < self._verify_before
                ) and not await self._still_exists(got):
                    continue
            if self._checkouts is not None:
                self._checkouts.checked_out(got)
            return got

    async def _still_exists(self, session: Any) -> bool:
        """Ask the server about a session old enough to be in doubt; drop it if gone."""
        try:
            found = await client_async.exists(session)
        except BaseException:
            self._core.release(session)
            raise
        if found:
            session._spanpool_last_used = self._clock()
            return True
        self._core.discard(session)
        self._count_replaced()
        return False

    async def put(self, session: Any) -> None:
        """Return a checked-out session. A session of another pool or database, or one
        returned twice, raises :class:`~spanpool.errors.NotCheckedOut`."""
        if self._forked:
            self._refuse_if_forked()
        if getattr(session, "_spanpool_owner", None) is not self or not session._spanpool_pooled:
            self._upkeep.adopt_or_refuse(session)
            return
        if self._checkouts is not None:
            self._checkouts.returned(session)
        if session._spanpool_gone:
            self._session_gone(session)
            return
        if session._spanpool_interrupted:  # async only
            await self._upkeep.retire(session)  # async only
            return  # async only
        # A pre-begun transaction serves only the checkout it came with: whatever ran on the
        # session since may have begun another transaction, which ends that one on the server.
        session._spanpool_transaction = None
        session._spanpool_last_used = now = self._clock()
        if not self._core.release(session, self._max_idle, now):
            await self._rpcs.delete(session)

    async def _check_in(self, session: Any, error: BaseException | None) -> None:
        if error is not None and client_async.is_session_not_found(error):
            self._session_gone(session)
        else:
            await self.put(session)

    def _session_lost(self, name: str) -> None:
        """The server lost the checked-out session ``name`` (the bridge saw it fail)."""
        for session in self._core.in_use():
            if session.name == name:
                session._spanpool_gone = True
                self._session_gone(session)

    # begin async only
    def _interrupted(self, name: str) -> None:
        """A request on the checked-out session ``name`` was cut short by the cancellation of
        its task: the server may still run it, so the session is not handed to another task
        when it comes back: it is retired (``AsyncUpkeep.retire``)."""
        for session in self._core.in_use():
            if session.name == name:
                session._spanpool_interrupted = True

    # end async only

    async def _run_in_fresh_transaction(
        self, func: Callable[..., R], args: Any, kwargs: dict[str, Any]
    ) -> R:
        """``func`` in a transaction on a fresh session, once: the server lost the session of
        the first attempt (see ``PooledSession.run_in_transaction``)."""
        session = await self.get()
        try:
            result: R = await session.run_in_transaction_here(func, *args, **kwargs)
        except BaseException as exc:
            await self._check_in(session, exc)
            raise
        await self.put(session)
        return result

    def _session_gone(self, session: Any) -> None:
        """A checked-out session was deleted or lost on the server: forget it."""
        self._refuse_if_forked()
        self._verify_before = self._clock()
        if self._checkouts is not None:
            self._checkouts.returned(session)
        try:
            self._core.discard(session)
        except NotCheckedOut:
            return
        client_async.detach(session)
        self._count_replaced()

    def _new_session(self) -> Any:
        session = super()._new_session()
        session._spanpool_last_used = self._clock()
        return session

    # -- running work on a session ---------------------------------------------------------------

    async def run_in_transaction(self, func: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """``session.run_in_transaction(func, ...)`` on a pooled session, retried on a fresh
        session when the server no longer has the first one."""
        attempts = 3
        for attempt in range(attempts):
            session = await self.get()
            try:
                result: R = await session.run_in_transaction(func, *args, **kwargs)
            except BaseException as exc:
                if client_async.is_session_not_found(exc) and attempt < attempts - 1:
                    self._session_gone(session)
                    continue
                await self._check_in(session, exc)
                raise
            await self.put(session)
            return result
        raise AssertionError("unreachable")

    # -- keeping sessions fresh -------------------------------------------------------------------

    async def ping(self) -> None:
        """Refresh (``SELECT 1``) idle sessions unused for the ping interval, concurrently,
        and replace those the server no longer has.

        Never blocks ``get()``: sessions are pinged in rounds of half the pool at most, and a
        quarter of the idle sessions stays available to callers throughout.
        """
        self._check_usable()
        await self._upkeep.ping()

    def maintenance_interval(self) -> float:
        """How long the maintenance worker sleeps between rounds."""
        return self._upkeep.interval()

    async def maintain(self) -> None:
        """One round of maintenance: ping the sessions that are due, a few at a time so that
        pings spread over the interval; replace lost ones; report leaks."""
        self._refuse_if_forked()
        if self._core.closed:
            return
        await self._upkeep.round()
        self.check_leaks()

    def _count_replaced(self) -> None:
        self._counters.add(SESSIONS_REPLACED)

    # -- clearing and closing ---------------------------------------------------------------------

    async def clear(self) -> None:
        """Delete the idle sessions (concurrently). Sessions in use are not touched."""
        self._check_usable()
        idle = self._core.take_idle(1_000_000, keep=0)
        for session in idle:
            self._core.discard(session)
        await self._rpcs.delete_all(idle)

    async def close(self) -> None:
        """Stop maintenance and delete the pool's sessions; sessions still checked out are
        deleted when they are returned. Further ``get()`` raise
        :class:`~spanpool.errors.PoolClosed`. In a forked child it does nothing: the sessions
        are the parent's."""
        if self._forked:
            return
        worker, self._worker = self._worker, None
        if worker is not None:
            await worker.stop()
        if self._exit_hook is not None:
            self._exit_hook.cancel()
            self._exit_hook = None
        await self._rpcs.delete_all(self._close_core())

    def _close_core(self) -> list[Any]:
        """Close the core and return its idle sessions for deletion, warning about the sessions
        still checked out (deleted when returned, or left to the server if never returned)."""
        closing = not self._core.closed
        idle = self._core.close()
        if closing:
            warn_checked_out(self._name, self._core.get_stats()[POOL_IN_USE], self._checkouts)
        return idle

    async def __aenter__(self) -> AsyncManagedPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- maintenance, stats, leaks -----------------------------------------------------------------

    def start_maintenance(self) -> None:
        """Run background maintenance that keeps sessions alive (pings spread over the
        interval), replaces dropped ones and reports leaks. ``close()`` stops it."""
        # An asyncio task of the running loop (the blocking pools run a thread).  # async only
        from ._flavour_async import MaintenanceWorker

        self._check_usable()
        if self._worker is None:
            worker = MaintenanceWorker(self)
            worker.start()  # kept only once started (it may need a running loop)
            self._worker = worker

    def check_leaks(self) -> int:
        """Warn about sessions held longer than ``leak_threshold``, naming where each was
        checked out; returns how many are overdue."""
        self._refuse_if_forked()
        if self._checkouts is None or self._leak_threshold is None:
            return 0
        return self._checkouts.warn_overdue(self._name, self._leak_threshold)

    def get_stats(self) -> dict[str, int]:
        """Gauges and counters in psycopg_pool's style (times in ms); the keys are named in
        :mod:`spanpool.stats`."""
        self._refuse_if_forked()
        stats = self._core.get_stats()
        stats.update(self._counters.snapshot())
        return stats

    def pop_stats(self) -> dict[str, int]:
        """:meth:`get_stats`, then reset the counters."""
        self._refuse_if_forked()
        stats = self._core.pop_stats()
        stats.update(self._counters.pop())
        return stats

    # -- fork -----------------------------------------------------------------------------------

    def _after_fork(self) -> None:
        # In a child process: its parent's threads, tasks and locks are not here, and the
        # sessions are the parent's. Every method refuses from now on; nothing is touched.
        self._forked = True
        self._worker = None

    def _refuse_if_forked(self) -> None:
        if self._forked:
            raise PoolForked(
                f"{self._name} was created in process {self._pid}, and this is process "
                f"{os.getpid()} (a fork): its sessions and gRPC channel belong to the parent. "
                "Create the client and the pool in the child process."
            )

    def _check_usable(self, *, bound: bool = False) -> None:
        self._refuse_if_forked()
        if self._core.closed:
            raise PoolClosed(f"{self._name} is closed")
        if bound and self._database is None:
            raise PoolUsageError(
                f"{self._name} is not bound to a database: pass it to instance.database(..., "
                "pool=pool), or call pool.bind(database), before get()"
            )

    def __repr__(self) -> str:
        if self._forked:
            return f"<{self._name} of process {self._pid} (this process is a fork of it)>"
        stats = self._core.get_stats()
        return (
            f"<{self._name} size={self.size} idle={stats[POOL_AVAILABLE]} "
            f"in_use={stats[POOL_IN_USE]}>"
        )
