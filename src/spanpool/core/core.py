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

from collections.abc import Callable
from typing import TypeVar

from ..errors import NotCheckedOut, PoolUsageError
from .state import Clock, CoreState, CreationPermit, IdleOrder, Served
from .waiters import AsyncWaiter, ThreadWaiter, Waiter

__all__ = ["Clock", "CreationPermit", "IdleOrder", "PoolCore", "Served"]

T = TypeVar("T")


class PoolCore(CoreState[T]):
    """Thread-safe accounting of a pool's sessions, shared by every pool flavour.

    :param max_size: most items alive at once (idle, in use, in maintenance or being
        created); None for no limit (a pool that creates on demand).
    :param order: "lifo" hands out the most recently used idle item (warm), "lru" the least
        recently used one.
    :param clock: monotonic seconds, for last-used times, checkout times and wait times.
    :param on_orphan: called with an item handed to a request that was cancelled at that
        very instant after :meth:`close`; nobody else can take it, so the pool deletes it.
    """

    # -- checking out -----------------------------------------------------------------------

    def acquire(self, timeout: float | None = None) -> Served[T]:
        """Check out an idle item, or get a permit to create one; block (FIFO) if neither.

        ``timeout`` is in seconds, None to wait for ever, 0 not to wait.  Raises
        :class:`PoolTimeout` or :class:`PoolClosed`.
        """
        now = self._clock()
        # One pass under the lock: the idle fast path, else the request is queued at once.
        # (Explicit acquire/release is much cheaper than `with` on CPython.)
        self._lock.acquire()
        try:
            if self._idle:  # never while requests wait: they would have been handed the item
                item = self._pop_idle()[1]
                self._in_use[item] = now
                self._requests += 1
                return item
            waiter: ThreadWaiter[Served[T]] = ThreadWaiter(timeout)
            got = self._enqueue_locked(waiter, now)
        finally:
            self._lock.release()
        if got is not None:
            return got
        try:
            waiter.block()
        except BaseException:  # e.g. KeyboardInterrupt while blocked
            self._abandon_and_drop(waiter)
            raise
        return self.settle(waiter)

    async def acquire_async(self, timeout: float | None = None) -> Served[T]:
        """:meth:`acquire` for asyncio tasks; cancelling the task withdraws the request."""
        now = self._clock()
        self._lock.acquire()
        try:
            if self._idle:
                item = self._pop_idle()[1]
                self._in_use[item] = now
                self._requests += 1
                return item
            waiter: AsyncWaiter[Served[T]] = AsyncWaiter(timeout)
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

    def enqueue(self, waiter: Waiter[Served[T]]) -> Served[T] | None:
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

    def _enqueue_locked(self, waiter: Waiter[Served[T]], now: float) -> Served[T] | None:
        self._requests += 1
        if self._idle:
            item = self._pop_idle()[1]
            self._in_use[item] = now
            return item
        if self._closed:
            raise self._closed_error()
        max_size = self.max_size
        if (
            max_size is None
            or len(self._in_use) + len(self._in_maintenance) + self._creating < max_size
        ):  # (no idle item here, so this is _size_locked() + creating)
            self._creating += 1
            return CreationPermit(self)
        if waiter.timeout is not None and waiter.timeout <= 0:
            self._timeouts += 1
            raise self._timeout_error(waiter.timeout)
        waiter.since = now
        self._waiters.append(waiter)
        self._requests_waited += 1
        return None

    def settle(self, waiter: Waiter[Served[T]]) -> Served[T]:
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

    def abandon(self, waiter: Waiter[Served[T]]) -> T | None:
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

    def _abandon_and_drop(self, waiter: Waiter[Served[T]]) -> None:
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
            permits = [CreationPermit(self) for _ in range(max(count, 0))]
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
                self._in_use[item] = now
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

    def in_use(self) -> list[T]:
        """The items checked out now (a snapshot)."""
        with self._lock:
            return list(self._in_use)

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
