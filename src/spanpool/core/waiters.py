"""How a request that cannot be served at once waits: a :class:`Waiter` in the core's FIFO
queue, and a way to sleep until the core serves it (a thread blocks on a lock; an asyncio
task awaits a future). :class:`AsyncDeadlines` lets the asyncio waiters of one loop share
one timer for their timeouts.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections import deque
from typing import Any, Generic, TypeVar

__all__ = ["AsyncDeadlines", "AsyncWaiter", "ThreadWaiter", "Waiter"]

T = TypeVar("T")


class Waiter(Generic[T]):
    """A request that could not be served at once, queued first in, first out.

    The core serves it under its lock: it sets ``result`` (an item, already checked out to
    this request, or a creation permit) or ``error``, clears ``waiting`` and calls
    :meth:`wake`.  The requester, once woken or when its own timeout expires, calls
    :meth:`PoolCore.settle`; if it is cancelled instead, it calls :meth:`PoolCore.abandon`.
    """

    __slots__ = ("error", "result", "since", "timeout", "waiting")

    def __init__(self, timeout: float | None = None) -> None:
        self.timeout = timeout
        self.since = 0.0
        self.waiting = True
        self.result: T | None = None
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

    def __init__(self, timeout: float | None = None) -> None:
        super().__init__(timeout)
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

    def __init__(self, timeout: float | None = None) -> None:
        super().__init__(timeout)
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
