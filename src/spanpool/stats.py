"""What the pools measure, named once: the keys of ``get_stats()`` for every pool.

One vocabulary for every pool, in psycopg_pool's style (times in milliseconds). Every pool
reports the five gauges of :data:`COMMON` (``pool_max`` is :data:`UNBOUNDED` for a pool with
no upper bound: ``BurstyPool``), then its own extras; :mod:`spanpool.metrics` reads only these
names. A pool counts its events with :class:`Counters`, and tracks where its sessions were
checked out (for leak warnings) with a :class:`CheckoutTracker`: one call per event each.
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from traceback import StackSummary
from types import FrameType
from typing import Any, Generic, TypeVar

from .errors import SessionLeakWarning

log = logging.getLogger("spanpool")

T = TypeVar("T")

# -- gauges: the state now (pop_stats() does not reset them) --------------------------------

POOL_SIZE = "pool_size"
"""Sessions the pool holds: available, in use and in maintenance (not those being created)."""
POOL_AVAILABLE = "pool_available"
"""Idle sessions, ready to hand out."""
POOL_IN_USE = "pool_in_use"
"""Sessions checked out by callers (for a shared pool: by every process using the store)."""
POOL_MAX = "pool_max"
"""Most sessions the pool may hold, being created included; :data:`UNBOUNDED` when no limit."""
UNBOUNDED = 0
"""The ``pool_max`` of a pool without an upper bound, as ``queue.Queue(maxsize=0)`` has none
(a pool that may hold sessions holds at least one)."""
POOL_MIN = "pool_min"
"""Sessions the pool keeps alive even when unused (pools that have such a floor)."""
POOL_CREATING = "pool_creating"
"""Sessions being created for the pool now."""
POOL_IN_MAINTENANCE = "pool_in_maintenance"
"""Sessions taken out of the idle set for a ping or a transaction begun ahead of use."""
REQUESTS_WAITING = "requests_waiting"
"""Requests waiting for a session now."""

COMMON = (POOL_SIZE, POOL_AVAILABLE, POOL_IN_USE, POOL_MAX, REQUESTS_WAITING)
"""The gauges every pool reports."""

# -- counters: events since the pool was made, or since pop_stats() --------------------------

REQUESTS_NUM = "requests_num"
"""Checkouts asked for."""
REQUESTS_WAITING_TOTAL = "requests_waiting_total"
"""Checkouts that had to wait."""
REQUESTS_WAIT_MS = "requests_wait_ms"
"""Time spent waiting, in total."""
REQUESTS_WAIT_MAX_MS = "requests_wait_max_ms"
"""The longest wait."""
REQUESTS_TIMEOUTS = "requests_timeouts"
"""Checkouts that gave up waiting (``PoolTimeout``)."""
REQUESTS_CANCELLED = "requests_cancelled"
"""Checkouts withdrawn while waiting (a cancelled task, an interrupted thread)."""
SESSIONS_CREATED = "sessions_created"
SESSIONS_CREATE_FAILED = "sessions_create_failed"
SESSIONS_DISCARDED = "sessions_discarded"
"""Sessions that left the pool's accounting (deleted, lost, or refused when full)."""
SESSIONS_DELETED = "sessions_deleted"
"""Sessions the pool deleted on the server."""
SESSIONS_REPLACED = "sessions_replaced"
"""Sessions found lost on the server and dropped, to be replaced."""
USAGE_MS = "usage_ms"
"""Time sessions spent checked out, in total."""
PINGS = "pings"
PINGS_FAILED = "pings_failed"

# -- the shared pool's own (CacheSessionPool): gauges first, then counters ------------------------

HIGH_WATER = "high_water"
"""Most sessions checked out at once, across processes, in the current downsizing window."""
HELD_HERE = "held_here"
"""Sessions this process holds (checked out to its callers)."""
UNSETTLED = "unsettled"
"""Store steps of this process that failed and wait to be retried."""
SESSIONS_RECLAIMED = "sessions_reclaimed"
"""Claims taken back from holders that died or stopped keeping their sessions alive."""
CLAIMS_LOST = "claims_lost"
"""Sessions of this process that another process took back (not kept alive in time)."""


# -- the multiplexed pool's own (MultiplexedPool): gauges first, then counters --------------------

SESSION_AGE_S = "session_age_s"
"""Age of the multiplexed session in use, in seconds (0 while there is none)."""
GENERATION = "generation"
"""Generation of the multiplexed session in use: 1 for the first of its key, one more for
each successor, whichever process made it."""
ROTATIONS = "rotations"
"""Successors made (by any process) because the session in use had reached its age."""
REQUESTS_SERVED = "requests_served"
"""Operations of the ``Database`` given the multiplexed session."""
STORE_ERRORS = "store_errors"
"""Store steps that failed (the pool then works on its own session until the store is back)."""
FALLBACK_SESSIONS = "fallback_sessions"
"""Regular sessions held by the fallback pool."""


def gauges(
    *, size: int, available: int, in_use: int, maximum: int | None, waiting: int
) -> dict[str, int]:
    """The :data:`COMMON` gauges, as a pool reports them (``maximum`` None: unbounded)."""
    return {
        POOL_SIZE: size,
        POOL_AVAILABLE: available,
        POOL_IN_USE: in_use,
        POOL_MAX: UNBOUNDED if maximum is None else maximum,
        REQUESTS_WAITING: waiting,
    }


class Counters:
    """A pool's event counters, safe to bump from any thread: one :meth:`add` per event."""

    def __init__(self, names: Iterable[str]) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, int] = dict.fromkeys(names, 0)

    def add(self, name: str, count: int = 1) -> None:
        with self._lock:
            self._values[name] += count

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)

    def pop(self) -> dict[str, int]:
        """The counts so far, then zero."""
        with self._lock:
            values = dict(self._values)
            self._values = dict.fromkeys(values, 0)
        return values


# -- where sessions were checked out ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkout(Generic[T]):
    """A session in use: since when, for how long so far, and where it was checked out."""

    item: T
    since: float
    held_for: float
    site: StackSummary | None


def _site(depth: int) -> StackSummary | None:
    """The caller's stack outside spanpool's pools, innermost frame last (source read lazily)."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__", "").startswith(_OWN_MODULES):
        frame = frame.f_back
    if frame is None:
        return None
    site = StackSummary.extract(traceback.walk_stack(frame), limit=depth, lookup_lines=False)
    site.reverse()
    return site


_OWN_MODULES = ("spanpool.pools", "spanpool.cache", "spanpool.stats")


class CheckoutTracker(Generic[T]):
    """When and where each session in use was checked out: for leak warnings, and to say where
    the sessions still out were taken when a pool closes.

    Kept out of the pool's logic and out of the core: a pool calls :meth:`checked_out` once per
    checkout and :meth:`returned` once per return or loss, and only when tracking is on (it
    costs a stack walk per checkout).
    """

    def __init__(self, clock: Callable[[], float], depth: int = 12) -> None:
        self._clock = clock
        self._depth = depth
        self._lock = threading.Lock()
        self._out: dict[T, tuple[float, StackSummary | None]] = {}
        self._reported: set[tuple[int, float]] = set()

    def checked_out(self, item: T) -> None:
        site = _site(self._depth)
        now = self._clock()
        with self._lock:
            self._out[item] = (now, site)

    def returned(self, item: T) -> None:
        with self._lock:
            self._out.pop(item, None)

    def outstanding(self, threshold: float = 0.0) -> list[Checkout[T]]:
        """Sessions held longer than ``threshold`` seconds, longest held first."""
        now = self._clock()
        with self._lock:
            late = [
                Checkout(item, since, now - since, site)
                for item, (since, site) in self._out.items()
                if now - since >= threshold
            ]
        late.sort(key=lambda checkout: checkout.since)
        return late

    def overdue(self, threshold: float) -> list[Checkout[T]]:
        """Sessions held longer than ``threshold`` seconds, longest held first."""
        return [c for c in self.outstanding(threshold) if c.held_for > threshold]

    def warn_overdue(self, pool_name: str, threshold: float) -> int:
        """Log and warn (:class:`~spanpool.errors.SessionLeakWarning`) once about each session
        held longer than ``threshold``, naming where it was checked out; returns how many are
        overdue."""
        overdue = self.overdue(threshold)
        for checkout in overdue:
            key = (id(checkout.item), checkout.since)
            if key in self._reported:
                continue
            self._reported.add(key)
            message = (
                f"{pool_name}: session {getattr(checkout.item, 'name', checkout.item)} has been "
                f"checked out for {checkout.held_for:.1f}s (leak_threshold={threshold}s); "
                f"checked out at:\n{where(checkout)}"
            )
            log.warning(message)
            warnings.warn(message, SessionLeakWarning, stacklevel=3)
        return len(overdue)


def where(checkout: Checkout[Any]) -> str:
    """Where a session was checked out, as a traceback."""
    return "".join(checkout.site.format()) if checkout.site else "(unknown)\n"


def warn_checked_out(pool_name: str, count: int, tracker: CheckoutTracker[Any] | None) -> None:
    """Log that a pool closed with ``count`` sessions still checked out, and where each was
    checked out when ``tracker`` knows."""
    if not count:
        return
    if tracker is not None:
        sites = "".join(
            f"checked out {checkout.held_for:.1f}s ago at:\n{where(checkout)}"
            for checkout in tracker.outstanding()
        )
    else:
        sites = "(pass leak_threshold=seconds to record where sessions are checked out)\n"
    log.warning(
        "%s closed with %d session%s still checked out: each is deleted when returned "
        "(one never returned stays on the server until it expires)\n%s",
        pool_name,
        count,
        "" if count == 1 else "s",
        sites,
    )
