"""The process-local tier of ``CacheSessionPool``: sessions *leased* from the store.

A session checked out from the store stays checked out to this process when its caller
releases it, *parked* here, while nobody could be kept waiting by that: the store said at the
last acquire that other holders could still get a session (an idle one, or a free place under
``max_sessions``), no request of this process waits, and no acquire anywhere found the pool full
lately. The next ``acquire()`` of this process takes a parked session without any store step,
so a warm checkout costs what it costs in a process-local pool: one lock, one clock read.

Everything the store guarantees still holds, because a parked session is an ordinary claim of
this process in the store: it counts under ``max_sessions``, it is taken back when this
process dies, and no one else can check it out. What changes is *when* a session goes back:

- at once when any acquire finds the pool full: the store counts a *want*, and a thread of this
  process waiting for the count to move (``_wants.py``) returns every parked session and stops
  parking for :data:`QUIET` seconds;
- after :data:`LINGER` seconds unused; before ``maintain()``, ``downsize()``, when the store
  is closed, and at exit.

A parked session is handed out again only while its claim is fresh: renewed (a ``keep_alive``
step) when older than ``reclaim_after_seconds / 20``, so that its new holder has at least 95 %
of ``reclaim_after_seconds`` before another process may reclaim it.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from .. import stats
from ..errors import StoreError
from ._held import Held, Holdings
from ._steps import Unsettled
from ._wants import Watcher
from .maintain import RETIRE_AGE

if TYPE_CHECKING:
    from ..bridge import client
    from .pool import CacheSessionPool

LINGER = 2.0
"""A parked session unused for this long goes back to the store."""
QUIET = 1.0
"""After a want was seen, sessions are returned rather than parked for this long."""


class Leases:
    """The parked sessions of one pool. ``lock`` is the pool's one lock, which also guards
    what the process holds (``Holdings``): a warm checkout or return takes it once."""

    def __init__(self, pool: CacheSessionPool, holdings: Holdings) -> None:
        self._clock = pool._clock
        self._steps = pool._steps
        self._held = holdings.held
        self.lock = holdings.lock
        self.enabled = callable(getattr(pool._store, "wait_for_want", None))
        self.parked: list[Held] = []
        self.open = False  # whether a release may park now (see ``_reopen``)
        self.waiting = 0  # requests of this process waiting for a release now
        self.spare = 0  # what the store said other holders could get, at the last acquire
        self.served = 0  # warm checkouts not yet added to the pool's counters
        self.fresh_for = 0.0  # how old a claim may be to be handed out again unrenewed
        self.quiet_until = 0.0  # time.monotonic(): no parking before this
        self.seen = -1  # the want count last known (-1: not known yet)
        self.watcher = Watcher(pool, self)
        # Held while parked sessions are on their way back, so that counts stay consistent.
        self.returning = threading.Lock()

    def after_fork(self, lock: threading.Lock) -> None:
        """In a forked child: the parked claims are the parent's."""
        self.lock = lock
        self.parked = []
        self.open = False
        self.waiting = self.served = 0
        self.seen = -1
        self.watcher.after_fork()
        self.returning = threading.Lock()

    def tokens(self) -> set[str]:
        with self.lock:
            return {lease.token for lease in self.parked}

    # -- the hot path: one lock, one clock read, no store step -------------------------------------

    def check_out(self) -> client.PooledSession | None:
        """The most recently parked session, now held by the caller; None when there is none
        that can go out without a store step (the pool then takes the store's road)."""
        if not self.parked or self._steps.journal:
            return None  # nothing parked, or store steps to retry first
        now = self._clock()
        with self.lock:
            parked = self.parked
            if not parked or parked[-1].fresh_until <= now:
                return None
            held = parked.pop()
            self._held[id(held.session)] = held
            self.served += 1
        return held.session

    def check_in(self, session: Any) -> bool:
        """Park ``session`` here; False when it must go the store's road (parking is closed,
        it is not held here, the server lost it, or store steps wait to be retried)."""
        if not self.open or self._steps.journal:
            return False
        now = self._clock()
        with self.lock:
            held = self._held.pop(id(session), None)
            if held is None:
                return False
            if held.session is not session or session._spanpool_gone or not self.open:
                self._held[id(session)] = held
                return False
            until = now + LINGER
            renew_at = held.confirmed_at + self.fresh_for
            if renew_at < until:
                until = renew_at
            retire_at = held.created_at + RETIRE_AGE
            if retire_at < until:
                until = retire_at
            held.parked_at = now
            held.fresh_until = until
            self.parked.append(held)
            if self.watcher.watching:
                return True
            self.watcher.watching = True
        self.watcher.wake()
        return True

    # -- when parking is allowed ------------------------------------------------------------

    def _reopen(self) -> None:
        """With ``lock`` held: whether releases may park from now on."""
        self.open = (
            self.enabled
            and self.spare > 0
            and not self.waiting
            and time.monotonic() >= self.quiet_until
        )

    def acquired(self, spare: int, wants: int) -> None:
        """What the store said at an acquire of this process: ``spare`` sessions others could
        get, and the want count (-1 when it does not tell)."""
        with self.lock:
            self.spare = spare
            if wants >= 0:
                self.seen = wants
            self._reopen()

    def wait_began(self) -> None:
        with self.lock:
            self.waiting += 1  # from now on, releases here go to the store
            self.open = False

    def wait_ended(self) -> None:
        with self.lock:
            self.waiting -= 1
            self._reopen()

    def wanted(self, wants: int) -> bool:
        """The watcher read the want count ``wants``: True when someone found the pool full
        since the count was last known; parking then stops for ``QUIET`` seconds."""
        with self.lock:
            moved = self.seen >= 0 and wants != self.seen
            self.seen = wants
            if moved:
                self.quiet_until = time.monotonic() + QUIET
                self.open = False
        return moved

    def stop(self) -> None:
        """Park nothing from now on (the store is closing)."""
        with self.lock:
            self.enabled = self.open = False

    def pop_served(self, reset: bool) -> int:
        with self.lock:
            served = self.served
            if reset:
                self.served = 0
        return served

    # -- the slow road ------------------------------------------------------------------------

    def take(self, pool: CacheSessionPool, now: float) -> Held | None:
        """The most recently parked session, renewed when its claim is old, and held by the
        caller; None when there is none (old or unused ones go back to the store)."""
        while True:
            with self.lock:
                if not self.parked:
                    return None
                lease = self.parked.pop()
            if lease.parked_at < now - LINGER or lease.created_at < now - RETIRE_AGE:
                # Unused for a while, or old: back to the store, whose acquire applies the
                # rules for idle sessions (expiry, checks, retirement).
                self.give_back(pool, [lease, *self.take_all()])
                return None
            if lease.confirmed_at < now - self.fresh_for and not self._renew(pool, lease, now):
                pool._count(stats.CLAIMS_LOST)  # reclaimed, or the pool was cleared: forget it
                continue
            with self.lock:
                self._held[id(lease.session)] = lease
            return lease

    def _renew(self, pool: CacheSessionPool, lease: Held, now: float) -> bool:
        try:
            kept: bool = pool._steps.run(
                "keep_alive",
                pool._store.keep_alive,
                pool.key,
                lease.session.name,
                lease.token,
                now=now,
            )
        except StoreError:
            with self.lock:
                self.parked.append(lease)
            raise
        if kept:
            lease.confirmed_at = now
        return kept

    def take_all(self) -> list[Held]:
        with self.lock:
            leases, self.parked = self.parked, []
        return leases

    def give_back_stale(self, pool: CacheSessionPool, now: float) -> None:
        """Return the parked sessions unused for ``LINGER`` seconds, or old."""
        with self.returning:
            with self.lock:
                stale: list[Held] = []
                kept: list[Held] = []
                for lease in self.parked:
                    old = lease.parked_at + LINGER <= now or lease.created_at + RETIRE_AGE <= now
                    (stale if old else kept).append(lease)
                if stale:
                    self.parked = kept
            if stale and pool._key is not None:
                self._give_back(pool, pool._key, stale)

    def next_stale(self) -> float | None:
        """When the first parked session goes stale (the pool's clock); None when none is
        parked."""
        with self.lock:
            if not self.parked:
                return None
            return min(lease.parked_at for lease in self.parked) + LINGER

    def give_back(self, pool: CacheSessionPool, leases: list[Held]) -> None:
        """Return parked sessions to the store, each as last used when it was parked."""
        key = pool._key
        if key is None or not leases:
            return
        with self.returning:
            self._give_back(pool, key, leases)

    def _give_back(self, pool: CacheSessionPool, key: str, leases: list[Held]) -> None:
        steps = pool._steps
        for index, lease in enumerate(leases):
            name = lease.session.name
            try:
                released = steps.run(
                    "release", pool._store.release, key, name, lease.token, now=lease.parked_at
                )
            except StoreError:
                for rest in leases[index:]:
                    steps.unsettle(Unsettled("release", rest.session.name, rest.token))
                raise
            if not released:
                pool._count(stats.CLAIMS_LOST)

    def give_back_all(self, pool: CacheSessionPool) -> None:
        with self.returning:
            leases = self.take_all()
            if pool._key is not None and leases:
                self._give_back(pool, pool._key, leases)
