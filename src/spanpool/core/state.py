"""The state of a :class:`~spanpool.core.PoolCore` and the steps that keep its invariants.

:class:`CoreState` holds where every item is (idle, in use, in maintenance, or a place held
by a creation permit), the FIFO queue of waiters and the counters, and the few steps taken
under its lock that every operation of the core is built from: hand an item to the oldest
waiter or make it idle, give a freed place to the oldest waiter as a permit, forget an item.
The operations themselves (check out, return, create, maintain, close) are in ``core.py``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, Literal, TypeVar, Union

from ..errors import PoolClosed, PoolTimeout
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
from .waiters import AsyncDeadlines, Waiter

__all__ = ["Clock", "CoreState", "CreationPermit", "IdleOrder", "Served"]

T = TypeVar("T")

Clock = Callable[[], float]
"""Monotonic seconds, like :func:`time.monotonic`."""

IdleOrder = Literal["lifo", "lru"]
"""Which idle item goes out first: the most recently used ("lifo") or the least ("lru")."""


class CreationPermit(Generic[T]):
    """The right to create one session and add it to the pool.

    Issued by ``PoolCore.acquire`` (and friends) or ``PoolCore.reserve``; it holds a place
    within ``max_size``.  Create the session outside any lock, then settle the permit exactly
    once with ``PoolCore.created``, ``created_idle`` or ``create_failed``.
    """

    __slots__ = ("core", "spent")

    def __init__(self, core: CoreState[T]) -> None:
        self.core = core
        self.spent = False

    def __repr__(self) -> str:
        state = "spent" if self.spent else "open"
        return f"<CreationPermit {state} for pool {self.core.name!r}>"


Served = Union[T, CreationPermit[T]]  # noqa: UP007 (subscripted below)
"""What a request is served: an item, checked out to it, or a permit to create one."""


class CoreState(Generic[T]):
    """What a :class:`~spanpool.core.PoolCore` knows, under one lock; see its parameters."""

    def __init__(
        self,
        *,
        name: str = "pool",
        max_size: int | None = None,
        order: IdleOrder = "lifo",
        clock: Clock = time.monotonic,
        on_orphan: Callable[[T], None] | None = None,
    ) -> None:
        if max_size is not None and max_size < 1:
            raise ValueError(f"max_size must be at least 1 (or None), not {max_size!r}")
        if order not in ("lifo", "lru"):
            raise ValueError(f"order must be 'lifo' or 'lru', not {order!r}")
        self.name = name
        self.max_size = max_size
        self.order: IdleOrder = order
        self.on_orphan = on_orphan
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
        self._in_maintenance: dict[T, float] = {}  # item -> when it was last used
        self._creating = 0
        self._waiters: deque[Waiter[Served[T]]] = deque()
        self._deadlines = AsyncDeadlines(self._waiters)
        self._reset_counters()

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

    # -- statistics -----------------------------------------------------------------------------

    def get_stats(self) -> dict[str, int]:
        """Gauges and counters, in the style of psycopg_pool (times in milliseconds).

        ``pool_max`` is ``stats.UNBOUNDED`` (0) when the pool is unbounded.
        """
        with self._lock:
            return self._stats_locked()

    def pop_stats(self) -> dict[str, int]:
        """:meth:`get_stats`, then reset the counters (not the gauges)."""
        with self._lock:
            stats = self._stats_locked()
            self._reset_counters()
            return stats

    # -- internals (called with the lock held) --------------------------------------------------

    def _size_locked(self) -> int:
        return len(self._idle) + len(self._in_use) + len(self._in_maintenance)

    def _forget_locked(self, item: T) -> None:
        """``item`` leaves the pool (the caller deletes it, or already has)."""
        self._discarded += 1

    def _serve_locked(self, waiter: Waiter[Served[T]], result: Served[T], now: float) -> bool:
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
            self._in_use[item] = now
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
            permit = CreationPermit(self)
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

    def _count_wait_locked(self, waited: float) -> None:
        self._wait_total += waited
        if waited > self._wait_max:
            self._wait_max = waited
