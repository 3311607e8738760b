"""The bookkeeping shared by every spanpool session pool.

A :class:`PoolCore` manages opaque items (sessions) and knows nothing about Spanner: it never
creates, pings or deletes anything and never does I/O.  It answers "which session may this
caller use, or may it create one?", and keeps every item in exactly one place:

* ``idle``: ready to hand out, with the time it was last used;
* ``in_use``: checked out by a caller, with when (and optionally from where);
* ``in_maintenance``: taken out of ``idle`` by a maintenance task (a ping), not handed out;

or it is gone (discarded, or given back to the caller for deletion).  Items being created
count too: a *creation permit* reserves room for one.  While bounded,
``idle + in_use + in_maintenance + creating <= max_size``.  Items are dictionary keys, so
they must be hashable, and distinct items must compare unequal (sessions compare by identity).

All state sits under one short :class:`threading.Lock` that is never held while blocking.
A request that cannot be served at once becomes a :class:`Waiter` in a FIFO queue; how the
requester sleeps is up to the waiter (:class:`ThreadWaiter`, :class:`AsyncWaiter`), so
the threaded pools and their asyncio twins share this one core.
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from traceback import StackSummary
from typing import Any, Generic, Literal, TypeVar

from ..errors import NotCheckedOut, PoolClosed, PoolTimeout, PoolUsageError
from ..stats import (
    POOL_CREATING,
    POOL_IN_MAINTENANCE,
    REQUESTS_CANCELLED,
    REQUESTS_NUM,
    REQUESTS_TIMEOUTS,
    REQUESTS_WAIT_MAX_MS,
    REQUESTS_WAIT_MS,
    REQUESTS_WAITING_TOTAL,
    SESSIONS_CREATE_FAILED,
    SESSIONS_CREATED,
    SESSIONS_DISCARDED,
    USAGE_MS,
    gauges,
)

__all__ = [
    "AsyncWaiter",
    "Checkout",
    "Clock",
    "CreationPermit",
    "IdleOrder",
    "PoolCore",
    "ThreadWaiter",
    "Waiter",
]

T = TypeVar("T")

Clock = Callable[[], float]
"""Monotonic seconds, like :func:`time.monotonic`."""

IdleOrder = Literal["lifo", "lru"]
"""Which idle item goes out first: the most recently used ("lifo") or the least ("lru")."""

# Cores alive in this process: a forked child marks them, so `forked` is a plain attribute.
_live_cores: weakref.WeakSet[PoolCore[Any]] = weakref.WeakSet()


def _mark_cores_forked() -> None:
    for core in list(_live_cores):
        core.forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_mark_cores_forked)


def _checkout_site(depth: int) -> StackSummary:
    """Where the core's caller was called from, innermost frame last (source read lazily)."""
    frames = traceback.walk_stack(sys._getframe(2))
    site = StackSummary.extract(frames, limit=depth, lookup_lines=False)
    site.reverse()
    return site


class CreationPermit(Generic[T]):
    """The right to create one session and add it to the pool.

    Issued by :meth:`PoolCore.acquire` (and friends) or :meth:`PoolCore.reserve`; it holds a
    place within ``max_size``.  Create the session outside any lock, then settle the permit
    exactly once with :meth:`PoolCore.created`, :meth:`PoolCore.created_idle` or
    :meth:`PoolCore.create_failed`.
    """

    __slots__ = ("core", "site", "spent")

    def __init__(self, core: PoolCore[T], site: StackSummary | None) -> None:
        self.core = core
        self.site = site
        self.spent = False

    def __repr__(self) -> str:
        state = "spent" if self.spent else "open"
        return f"<CreationPermit {state} for pool {self.core.name!r}>"


class Waiter(Generic[T]):
    """A request that could not be served at once, queued first in, first out.

    The core serves it under its lock: it sets ``result`` (an item, already checked out to
    this request, or a creation permit) or ``error``, clears ``waiting`` and calls
    :meth:`wake`.  The requester, once woken or when its own timeout expires, calls
    :meth:`PoolCore.settle`; if it is cancelled instead, it calls :meth:`PoolCore.abandon`.
    """

    __slots__ = ("error", "result", "since", "site", "timeout", "waiting")

    def __init__(self, timeout: float | None = None, site: StackSummary | None = None) -> None:
        self.timeout = timeout
        self.site = site
        self.since = 0.0
        self.waiting = True
        self.result: T | CreationPermit[T] | None = None
        self.error: BaseException | None = None

    def wake(self) -> bool:
        """Wake the requester.  Called with the core lock held, so it must not block.

        Return False if the requester can never run again (its event loop is closed): the
        core then serves the next waiter instead.
        """
        raise NotImplementedError


class ThreadWaiter(Waiter[T]):
    """A waiter for a blocked thread; the signal is a lock created held, released by wake()."""

    __slots__ = ("_signal",)

    def __init__(self, timeout: float | None = None, site: StackSummary | None = None) -> None:
        super().__init__(timeout, site)
        self._signal = threading.Lock()
        self._signal.acquire()

    def wake(self) -> bool:
        self._signal.release()
        return True

    def block(self) -> bool:
        """Sleep until woken or the timeout expires; True if woken."""
        timeout = self.timeout
        if timeout is None:
            return self._signal.acquire()
        return self._signal.acquire(True, min(max(timeout, 0.0), threading.TIMEOUT_MAX))


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class AsyncWaiter(Waiter[T]):
    """A waiter for an asyncio task; create it on the task's running loop."""

    __slots__ = ("_loop", "_loop_thread", "deadline", "future")

    def __init__(self, timeout: float | None = None, site: StackSummary | None = None) -> None:
        # Waiter.__init__, inlined: this runs on every wait of every asyncio checkout.
        self.timeout = timeout
        self.site = site
        self.since = 0.0
        self.waiting = True
        self.result: T | CreationPermit[T] | None = None
        self.error: BaseException | None = None
        self._loop = loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.future: asyncio.Future[None] = loop.create_future()
        self.deadline: float | None = None  # on the loop's clock, while blocked

    def wake(self) -> bool:
        try:
            if threading.get_ident() == self._loop_thread:
                future = self.future
                if not future.done():
                    future.set_result(None)
            else:
                self._loop.call_soon_threadsafe(_resolve, self.future)
        except RuntimeError:  # the loop is closed: nobody will ever await this future
            return False
        return True

    async def block(self) -> None:
        """Sleep until woken or the timeout expires (either way, settle() tells which), with
        a timer of its own; :class:`AsyncDeadlines` shares one among waiters instead."""
        if self.timeout is None:
            await self.future
            return
        timer = self._loop.call_later(max(self.timeout, 0.0), _resolve, self.future)
        try:
            await self.future
        finally:
            timer.cancel()


class AsyncDeadlines:
    """One timer per core for the timeouts of the asyncio waiters of one event loop.

    A timer per waiter costs a heap push and a cancelled entry left in the loop's heap on
    every wait that is served in time, which is nearly all of them. Here one timer is armed
    for the earliest deadline; when it fires, the waiters past their deadline are woken (their
    settle() then finds them still waiting and times them out) and the timer is re-armed for
    the next deadline. Waiters served meanwhile need nothing: at worst the timer fires once
    with nobody due.
    """

    __slots__ = ("_handle", "_lock", "_loop", "_waiters", "_when")

    def __init__(self, waiters: deque[Waiter[Any]]) -> None:
        self._waiters = waiters  # the core's queue
        self._lock = threading.Lock()  # loops in two threads may share one pool
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._when = math.inf

    def watch(self, waiter: AsyncWaiter[Any]) -> bool:
        """Arrange for ``waiter`` (which has a timeout) to be woken at its deadline; False if
        it is on another loop than the waiters already watched (it must then arm its own
        timer, with :meth:`AsyncWaiter.block`)."""
        loop = waiter._loop
        waiter.deadline = deadline = loop.time() + max(waiter.timeout or 0.0, 0.0)
        if loop is self._loop and self._when <= deadline:
            return True  # the armed timer fires first; it re-arms for this deadline then
        with self._lock:
            return self._watch_locked(loop, deadline)

    def _watch_locked(self, loop: asyncio.AbstractEventLoop, deadline: float) -> bool:
        if self._loop is not loop:
            if self._handle is not None and not self._loop_closed():
                return False
            self._loop, self._handle, self._when = loop, None, math.inf
        if deadline < self._when:
            if self._handle is not None:
                self._handle.cancel()
            self._when = deadline
            self._handle = loop.call_at(deadline, self._expire)
        return True

    def _loop_closed(self) -> bool:
        return self._loop is None or self._loop.is_closed()

    def _expire(self) -> None:
        with self._lock:
            self._expire_locked()

    def _expire_locked(self) -> None:
        loop = self._loop
        if loop is None:
            return
        self._handle, self._when = None, math.inf
        now = loop.time()
        due: list[AsyncWaiter[Any]] = []
        following = math.inf
        for waiter in list(self._waiters):
            if not isinstance(waiter, AsyncWaiter) or waiter._loop is not loop:
                continue
            if waiter.deadline is None or not waiter.waiting:
                continue
            if waiter.deadline <= now:
                due.append(waiter)
            elif waiter.deadline < following:
                following = waiter.deadline
        for waiter in due:
            _resolve(waiter.future)
        if following < math.inf:
            self._when = following
            self._handle = loop.call_at(following, self._expire)


@dataclass(frozen=True, slots=True)
class Checkout(Generic[T]):
    """An item in use: since when, for how long so far, and where it was checked out."""

    item: T
    since: float
    held_for: float
    site: StackSummary | None


class PoolCore(Generic[T]):
    """Thread-safe accounting of a pool's sessions, shared by every pool flavour.

    :param max_size: most items alive at once (idle, in use, in maintenance or being
        created); None for no limit (a pool that creates on demand).
    :param order: "lifo" hands out the most recently used idle item (warm), "lru" the least
        recently used one.
    :param clock: monotonic seconds, for last-used times, checkout times and wait times.
    :param track_sites: remember the stack each item was checked out from (leak hunting);
        costs a stack walk per checkout, so it is off by default.
    :param on_orphan: called with an item handed to a request that was cancelled at that
        very instant after :meth:`close`; nobody else can take it, so the pool deletes it.
    """

    def __init__(
        self,
        *,
        name: str = "pool",
        max_size: int | None = None,
        order: IdleOrder = "lifo",
        clock: Clock = time.monotonic,
        track_sites: bool = False,
        site_depth: int = 12,
        on_orphan: Callable[[T], None] | None = None,
    ) -> None:
        if max_size is not None and max_size < 1:
            raise ValueError(f"max_size must be at least 1 (or None), not {max_size!r}")
        if order not in ("lifo", "lru"):
            raise ValueError(f"order must be 'lifo' or 'lru', not {order!r}")
        self.name = name
        self.max_size = max_size
        self.order: IdleOrder = order
        self.site_depth = site_depth
        self.on_orphan = on_orphan
        self.owner_pid = os.getpid()
        # True in a child process forked after this core was made.  The child must not touch
        # the core (a parent thread may have held its lock at the fork, and the sessions are
        # the parent's): the pool builds a new one.
        self.forked = False
        self._track_sites = track_sites
        self._clock = clock
        self._lock = threading.Lock()
        self._closed = False
        # Idle entries are (last used, item), oldest on the left; the deque is never replaced,
        # so the bound pop method stays valid.
        self._idle: deque[tuple[float, T]] = deque()
        self._pop_idle: Callable[[], tuple[float, T]] = (
            self._idle.pop if order == "lifo" else self._idle.popleft
        )
        self._in_use: dict[T, float] = {}  # item -> when it was checked out
        self._sites: dict[T, StackSummary] = {}  # item -> checkout stack, if track_sites
        self._in_maintenance: dict[T, float] = {}  # item -> when it was last used
        self._creating = 0
        self._waiters: deque[Waiter[T]] = deque()
        self._deadlines = AsyncDeadlines(self._waiters)
        self._reset_counters()
        _live_cores.add(self)

    def _reset_counters(self) -> None:
        self._requests = 0
        self._requests_waited = 0
        self._wait_total = 0.0
        self._wait_max = 0.0
        self._timeouts = 0
        self._cancelled = 0
        self._created = 0
        self._create_failed = 0
        self._discarded = 0
        self._usage = 0.0

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def track_sites(self) -> bool:
        return self._track_sites

    # -- checking out -----------------------------------------------------------------------

    def acquire(self, timeout: float | None = None) -> T | CreationPermit[T]:
        """Check out an idle item, or get a permit to create one; block (FIFO) if neither.

        ``timeout`` is in seconds, None to wait for ever, 0 not to wait.  Raises
        :class:`PoolTimeout` or :class:`PoolClosed`.
        """
        site = _checkout_site(self.site_depth) if self._track_sites else None
        now = self._clock()
        # The hot path: explicit acquire/release is much cheaper than `with` on CPython.
        self._lock.acquire()
        try:
            if self._idle:  # never while requests wait: they would have been handed the item
                item = self._pop_idle()[1]
                self._in_use[item] = now
                if site is not None:
                    self._sites[item] = site
                self._requests += 1
                return item
        finally:
            self._lock.release()
        waiter: ThreadWaiter[T] = ThreadWaiter(timeout, site)
        got = self.enqueue(waiter)
        if got is not None:
            return got
        try:
            waiter.block()
        except BaseException:  # e.g. KeyboardInterrupt while blocked
            self._abandon_and_drop(waiter)
            raise
        return self.settle(waiter)

    async def acquire_async(self, timeout: float | None = None) -> T | CreationPermit[T]:
        """:meth:`acquire` for asyncio tasks; cancelling the task withdraws the request."""
        site = _checkout_site(self.site_depth) if self._track_sites else None
        now = self._clock()
        # One pass under the lock: the idle fast path, else the request is queued at once.
        self._lock.acquire()
        try:
            if self._idle:
                item = self._pop_idle()[1]
                self._in_use[item] = now
                if site is not None:
                    self._sites[item] = site
                self._requests += 1
                return item
            waiter: AsyncWaiter[T] = AsyncWaiter(timeout, site)
            got = self._enqueue_locked(waiter, now)
        finally:
            self._lock.release()
        if got is not None:
            return got
        try:
            if timeout is None or self._deadlines.watch(waiter):
                await waiter.future
            else:
                await waiter.block()
        except BaseException:  # CancelledError
            self._abandon_and_drop(waiter)
            raise
        return self.settle(waiter)

    def enqueue(self, waiter: Waiter[T]) -> T | CreationPermit[T] | None:
        """Serve a request at once if possible, else queue it; the core of :meth:`acquire`.

        Returns an idle item (now in use) or a creation permit, or None once ``waiter`` is
        queued: its requester must then sleep until :meth:`Waiter.wake` is called or its
        timeout expires, and call :meth:`settle` (or :meth:`abandon` if cancelled).
        Raises :class:`PoolClosed`, or :class:`PoolTimeout` if nothing is at hand and
        ``waiter.timeout <= 0``.
        """
        now = self._clock()
        with self._lock:
            return self._enqueue_locked(waiter, now)

    def _enqueue_locked(self, waiter: Waiter[T], now: float) -> T | CreationPermit[T] | None:
        self._requests += 1
        if self._idle:
            item = self._pop_idle()[1]
            self._check_out_locked(item, now, waiter.site)
            return item
        if self._closed:
            raise self._closed_error()
        max_size = self.max_size
        if (
            max_size is None
            or len(self._in_use) + len(self._in_maintenance) + self._creating < max_size
        ):  # (no idle item here, so this is _size_locked() + creating)
            self._creating += 1
            return CreationPermit(self, waiter.site)
        if waiter.timeout is not None and waiter.timeout <= 0:
            self._timeouts += 1
            raise self._timeout_error(waiter.timeout)
        waiter.since = now
        self._waiters.append(waiter)
        self._requests_waited += 1
        return None

    def settle(self, waiter: Waiter[T]) -> T | CreationPermit[T]:
        """Finish a queued request, once woken or once its timeout expired.

        Returns what it was served, raises the error it was served (:class:`PoolClosed`),
        or, if it is still waiting, withdraws it and raises :class:`PoolTimeout`.
        """
        if waiter.waiting:
            now = self._clock()
            with self._lock:
                if waiter.waiting:
                    waiter.waiting = False
                    self._waiters.remove(waiter)
                    self._timeouts += 1
                    self._count_wait_locked(now - waiter.since)
                    raise self._timeout_error(waiter.timeout)
                # The timer fired in the same instant the request was served, after wake()
                # but before this point.  The request still wants what it got, so it is kept
                # rather than reported as a timeout: nothing to hand back, nothing lost.
        # Served: whoever served it set the result (or error) and counted the wait under the
        # lock before clearing `waiting`, so nothing here needs the lock.
        if waiter.error is not None:
            raise waiter.error
        result = waiter.result
        if result is None:
            raise PoolUsageError("settle() called twice, or after abandon(), for one request")
        waiter.result = None
        return result

    def _count_wait_locked(self, waited: float) -> None:
        self._wait_total += waited
        if waited > self._wait_max:
            self._wait_max = waited

    def abandon(self, waiter: Waiter[T]) -> T | None:
        """Withdraw a queued request whose requester was cancelled or interrupted.

        Whatever it had already been served goes on as if returned: an item to the next
        waiter or to idle, a permit to the next waiter or back to capacity.  Returns an item
        only if the pool was closed meanwhile: the caller must then delete it.
        """
        now = self._clock()
        with self._lock:
            self._cancelled += 1
            if waiter.waiting:
                waiter.waiting = False
                self._waiters.remove(waiter)
                return None
            # The requester was cancelled in the same instant it was served: the core had
            # already checked the item out to it (or issued it a permit) and called wake(),
            # but the task will never see it, because the cancellation is delivered first.
            # Were the result dropped here, the item would stay "in use" for ever (or the
            # permit would hold capacity for ever).  So it goes on exactly as if the holder
            # had returned it at once: the item to the next waiter still waiting, else to
            # idle; the permit's place to the next waiter, else back to free capacity.
            result, waiter.result = waiter.result, None
            if isinstance(result, CreationPermit):
                result.spent = True
                self._creating -= 1
                self._grant_permit_locked(now)
                return None
            if result is None:  # served an error (closed), or already settled
                return None
            del self._in_use[result]
            if self._put_locked(result, now, now):
                return None
            self._forget_locked(result)
            return result

    def _abandon_and_drop(self, waiter: Waiter[T]) -> None:
        orphan = self.abandon(waiter)
        if orphan is not None and self.on_orphan is not None:
            self.on_orphan(orphan)

    def reserve(self, count: int) -> list[CreationPermit[T]]:
        """Up to ``count`` creation permits within free capacity, e.g. to fill a fixed pool.

        Settle them with :meth:`created_idle` (or :meth:`created`, :meth:`create_failed`).
        """
        with self._lock:
            if self._closed:
                raise self._closed_error()
            if self.max_size is not None:
                count = min(count, self.max_size - self._size_locked() - self._creating)
            permits = [CreationPermit(self, None) for _ in range(max(count, 0))]
            self._creating += len(permits)
        return permits

    # -- creation results ---------------------------------------------------------------------

    def created(self, permit: CreationPermit[T], item: T) -> None:
        """The permit's holder created ``item``, which is now in use by that holder."""
        now = self._clock()
        with self._lock:
            problem = self._check_new_locked(permit, item)
            if problem is None:
                permit.spent = True
                self._creating -= 1
                self._created += 1
                self._check_out_locked(item, now, permit.site)
                return
        raise PoolUsageError(problem)

    def created_idle(self, permit: CreationPermit[T], item: T) -> bool:
        """``item`` was created for the pool, not for a caller: serve a waiter or keep it idle.

        Returns False if the pool is closed: the caller must delete the item.
        """
        now = self._clock()
        with self._lock:
            problem = self._check_new_locked(permit, item)
            if problem is None:
                permit.spent = True
                self._creating -= 1
                self._created += 1
                if self._put_locked(item, now, now):
                    return True
                self._discarded += 1
                return False
        raise PoolUsageError(problem)

    def created_idle_many(self, permits: list[CreationPermit[T]], items: list[T]) -> list[T]:
        """:meth:`created_idle` for a batch, under one lock; returns the items the pool could
        not take (it is closed): the caller must delete them."""
        now = self._clock()
        refused: list[T] = []
        with self._lock:
            idle = {id(entry[1]) for entry in self._idle}  # the duplicate check, in one pass
            for permit, item in zip(permits, items, strict=True):
                problem = self._check_permit_locked(permit)
                if problem is None and (
                    item in self._in_use or item in self._in_maintenance or id(item) in idle
                ):
                    problem = f"pool {self.name!r}: {item!r} is already in this pool"
                if problem is not None:
                    raise PoolUsageError(problem)
                permit.spent = True
                self._creating -= 1
                self._created += 1
                if self._put_locked(item, now, now):
                    idle.add(id(item))
                else:
                    self._discarded += 1
                    refused.append(item)
        return refused

    def create_failed(self, permit: CreationPermit[T]) -> None:
        """Creating failed: the place goes to the oldest waiter (as a permit) or back to free."""
        now = self._clock()
        with self._lock:
            problem = self._check_permit_locked(permit)
            if problem is None:
                permit.spent = True
                self._creating -= 1
                self._create_failed += 1
                self._grant_permit_locked(now)
                return
        raise PoolUsageError(problem)

    # -- returning ------------------------------------------------------------------------------

    def release(self, item: T, max_idle: int | None = None, now: float | None = None) -> bool:
        """Return an item in use: hand it to the oldest waiter, else keep it idle.

        Returns False, and forgets the item, when the pool is closed or already holds
        ``max_idle`` idle items: the caller must then delete it.  Raises
        :class:`NotCheckedOut` (changing nothing) if the item is not in use from this pool.
        ``now`` is the core's clock, when the caller has just read it.
        """
        if now is None:
            now = self._clock()
        self._lock.acquire()
        try:
            since = self._in_use.pop(item, None)
            if since is not None:
                self._usage += now - since
                if self._waiters or self._closed:
                    if self._put_locked(item, now, now):
                        return True
                elif max_idle is None or len(self._idle) < max_idle:
                    self._idle.append((now, item))
                    return True
                self._forget_locked(item)
                return False
        finally:
            self._lock.release()
        raise NotCheckedOut(f"pool {self.name!r}: {item!r} is not checked out from this pool")

    def discard(self, item: T) -> None:
        """Forget an item in use or in maintenance (deleted, or found dead).

        Its place is given, as a creation permit, to the oldest waiter if any; so a dead
        session is replaced when someone needs one, and never lost.
        """
        now = self._clock()
        with self._lock:
            since = self._in_use.pop(item, None)
            if since is not None:
                self._usage += now - since
            if since is not None or self._in_maintenance.pop(item, None) is not None:
                self._forget_locked(item)
                self._grant_permit_locked(now)
                return
        raise NotCheckedOut(
            f"pool {self.name!r}: {item!r} is neither in use nor in maintenance in this pool"
        )

    # -- maintenance ----------------------------------------------------------------------------

    def take_idle(
        self,
        limit: int,
        predicate: Callable[[T, float], bool] | None = None,
        *,
        keep: int = 1,
    ) -> list[T]:
        """Move up to ``limit`` idle items, oldest first, into maintenance (e.g. to ping them).

        ``predicate(item, last_used)`` selects items; it runs under the core lock, so it must
        be quick and must not block.  At least ``keep`` idle items are left for acquirers.
        Settle each taken item with :meth:`return_checked` or :meth:`discard`.
        """
        with self._lock:
            limit = min(limit, len(self._idle) - keep)
            taken: list[tuple[float, T]] = []
            if limit > 0:
                kept: list[tuple[float, T]] = []
                for entry in self._idle:
                    if len(taken) < limit and (predicate is None or predicate(entry[1], entry[0])):
                        taken.append(entry)
                    else:
                        kept.append(entry)
                if taken:
                    self._idle.clear()
                    self._idle.extend(kept)
                    for last_used, item in taken:
                        self._in_maintenance[item] = last_used
        return [item for _, item in taken]

    def take_idle_older_than(self, age: float, limit: int, *, keep: int = 1) -> list[T]:
        """:meth:`take_idle` for items last used at least ``age`` seconds ago."""
        cutoff = self._clock() - age
        with self._lock:
            idle = self._idle
            taken: list[T] = []
            while idle and len(taken) < limit and len(idle) > keep and idle[0][0] <= cutoff:
                last_used, item = idle.popleft()
                self._in_maintenance[item] = last_used
                taken.append(item)
        return taken

    def oldest_last_used(self) -> float | None:
        """When the least recently used idle item was last used; None if nothing is idle.

        A maintenance task can sleep until this plus its refresh interval.
        """
        with self._lock:
            return self._idle[0][0] if self._idle else None

    def return_checked(self, item: T, *, refreshed: bool = True) -> bool:
        """Give back an item from maintenance: to the oldest waiter, else to idle.

        ``refreshed`` sets its last-used time to now (it was just pinged); otherwise it keeps
        its old one.  Returns False, forgetting the item, if the pool is closed: the caller
        must then delete it.
        """
        now = self._clock()
        with self._lock:
            last_used = self._in_maintenance.pop(item, None)
            if last_used is not None:
                if self._put_locked(item, now if refreshed else last_used, now):
                    return True
                self._forget_locked(item)
                return False
        raise NotCheckedOut(f"pool {self.name!r}: {item!r} is not in maintenance in this pool")

    # -- closing, stats, leaks ----------------------------------------------------------------

    def close(self) -> list[T]:
        """Refuse further requests, fail every waiter with :class:`PoolClosed`, and return the
        idle items for the caller to delete.  Items in use or in maintenance are given back
        to their holders for deletion when returned (release() then returns False).
        """
        with self._lock:
            if self._closed:
                return []
            self._closed = True
            idle = [item for _, item in self._idle]
            self._idle.clear()
            for item in idle:
                self._forget_locked(item)
            while self._waiters:
                waiter = self._waiters.popleft()
                waiter.error = self._closed_error()  # before `waiting`, as in _serve_locked
                waiter.waiting = False
                waiter.wake()
        return idle

    def get_stats(self) -> dict[str, int]:
        """Gauges and counters, in the style of psycopg_pool (times in milliseconds).

        ``pool_max`` is absent when the pool is unbounded.
        """
        with self._lock:
            return self._stats_locked()

    def pop_stats(self) -> dict[str, int]:
        """:meth:`get_stats`, then reset the counters (not the gauges)."""
        with self._lock:
            stats = self._stats_locked()
            self._reset_counters()
            return stats

    def overdue(self, threshold: float) -> list[Checkout[T]]:
        """Items held longer than ``threshold`` seconds, longest held first."""
        now = self._clock()
        with self._lock:
            late = [
                Checkout(item, since, now - since, self._sites.get(item))
                for item, since in self._in_use.items()
                if now - since > threshold
            ]
        late.sort(key=lambda checkout: checkout.since)
        return late

    # -- internals (called with the lock held) --------------------------------------------------

    def _size_locked(self) -> int:
        return len(self._idle) + len(self._in_use) + len(self._in_maintenance)

    def _check_out_locked(self, item: T, now: float, site: StackSummary | None) -> None:
        self._in_use[item] = now
        if site is not None:
            self._sites[item] = site

    def _forget_locked(self, item: T) -> None:
        """``item`` leaves the pool (the caller deletes it, or already has)."""
        self._discarded += 1
        if self._sites:
            self._sites.pop(item, None)

    def _serve_locked(self, waiter: Waiter[T], result: T | CreationPermit[T], now: float) -> bool:
        waiter.result = result  # before `waiting`: settle() reads them unlocked
        waiter.waiting = False
        self._count_wait_locked(now - waiter.since)
        if waiter.wake():
            return True
        waiter.result = None
        return False

    def _hand_off_locked(self, item: T, now: float) -> bool:
        """Check ``item`` out to the oldest waiter that can still be woken, if any."""
        while self._waiters:
            waiter = self._waiters.popleft()
            self._check_out_locked(item, now, waiter.site)
            if self._serve_locked(waiter, item, now):
                return True
            del self._in_use[item]
        return False

    def _put_locked(self, item: T, last_used: float, now: float) -> bool:
        """Hand ``item`` off or make it idle; False if the pool is closed (nowhere to go)."""
        if self._waiters and self._hand_off_locked(item, now):
            return True
        if self._closed:
            return False
        idle = self._idle
        if not idle or idle[-1][0] <= last_used:
            idle.append((last_used, item))
        else:  # an item keeping an old last-used time: keep the deque sorted by it
            position = next(i for i, entry in enumerate(idle) if entry[0] > last_used)
            idle.insert(position, (last_used, item))
        return True

    def _grant_permit_locked(self, now: float) -> None:
        """A place just became free: give it to the oldest waiter, as a creation permit."""
        while self._waiters:
            waiter = self._waiters.popleft()
            permit = CreationPermit(self, waiter.site)
            self._creating += 1
            if self._serve_locked(waiter, permit, now):
                return
            permit.spent = True
            self._creating -= 1

    def _check_permit_locked(self, permit: CreationPermit[T]) -> str | None:
        if permit.core is not self:
            return f"pool {self.name!r}: {permit!r} was issued by another pool"
        if permit.spent:
            return f"pool {self.name!r}: {permit!r} was already used"
        return None

    def _check_new_locked(self, permit: CreationPermit[T], item: T) -> str | None:
        problem = self._check_permit_locked(permit)
        if problem is not None:
            return problem
        if (
            item in self._in_use
            or item in self._in_maintenance
            or any(entry[1] is item for entry in self._idle)
        ):
            return f"pool {self.name!r}: {item!r} is already in this pool"
        return None

    def _closed_error(self) -> PoolClosed:
        return PoolClosed(f"pool {self.name!r} is closed")

    def _timeout_error(self, timeout: float | None) -> PoolTimeout:
        return PoolTimeout(
            f"pool {self.name!r}: no session available within {timeout or 0:g} s"
            f" (max_size={self.max_size}, in use={len(self._in_use)},"
            f" idle={len(self._idle)}, in maintenance={len(self._in_maintenance)},"
            f" being created={self._creating}, waiting={len(self._waiters)})"
        )

    def _stats_locked(self) -> dict[str, int]:
        stats = gauges(
            size=self._size_locked(),
            available=len(self._idle),
            in_use=len(self._in_use),
            maximum=self.max_size,
            waiting=len(self._waiters),
        )
        stats[POOL_IN_MAINTENANCE] = len(self._in_maintenance)
        stats[POOL_CREATING] = self._creating
        stats[REQUESTS_NUM] = self._requests
        stats[REQUESTS_WAITING_TOTAL] = self._requests_waited
        stats[REQUESTS_WAIT_MS] = round(self._wait_total * 1000)
        stats[REQUESTS_WAIT_MAX_MS] = round(self._wait_max * 1000)
        stats[REQUESTS_TIMEOUTS] = self._timeouts
        stats[REQUESTS_CANCELLED] = self._cancelled
        stats[SESSIONS_CREATED] = self._created
        stats[SESSIONS_CREATE_FAILED] = self._create_failed
        stats[SESSIONS_DISCARDED] = self._discarded
        stats[USAGE_MS] = round(self._usage * 1000)
        return stats
