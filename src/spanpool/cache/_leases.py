"""The process-local tier of ``CacheSessionPool``: sessions *leased* from the store.

A session checked out from the store stays checked out to this process when its caller
releases it, *parked* here, while nobody could be kept waiting by that: the store said at the
last acquire that other holders could still get a session (an idle one, or a free place under
``max_sessions``), no request of this process waits, and no acquire anywhere found the pool full
lately. The next ``acquire()`` of this process takes a parked session without any store step,
so a warm checkout costs what it costs in a process-local pool.

Everything the store guarantees still holds, because a parked session is an ordinary claim of
this process in the store: it counts under ``max_sessions``, it is taken back when this
process dies, and no one else can check it out. What changes is *when* a session goes back:

- at once when any acquire finds the pool full: the store counts a *want*, and a thread of this
  process watching the count (every 5 ms while anything is parked) returns every parked session
  and stops parking for :data:`QUIET` seconds;
- after :data:`LINGER` seconds unused; before ``maintain()``, ``downsize()`` and at exit.

A parked session is handed out again only while its claim is fresh: renewed (a ``keep_alive``
step) when older than ``reclaim_after_seconds / 20``, so that its new holder has at least 95 %
of ``reclaim_after_seconds`` before another process may reclaim it.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import TYPE_CHECKING

from .. import stats
from ..errors import StoreError
from ._held import Held
from ._steps import Unsettled
from .maintain import RETIRE_AGE

if TYPE_CHECKING:
    from .pool import CacheSessionPool

log = logging.getLogger("spanpool")

LINGER = 2.0
"""A parked session unused for this long goes back to the store."""
QUIET = 1.0
"""After a want was seen, sessions are returned rather than parked for this long."""
WATCH = 0.005
"""How often the want count is read while sessions are parked (seconds)."""


class Leases:
    """The parked sessions of one pool, and the thread that gives them back when wanted."""

    def __init__(self, pool: CacheSessionPool) -> None:
        self._pool = weakref.ref(pool)
        self.enabled = callable(getattr(pool._store, "wait_for_want", None))
        self.lock = threading.Lock()
        self.parked: list[Held] = []
        self.waiting = 0  # requests of this process waiting for a release now
        self.spare = 0  # what the store said other holders could get, at the last acquire
        self._quiet_until = 0.0
        self._seen = -1  # the want count last read
        self._wake = threading.Event()
        self._watcher: threading.Thread | None = None
        # Held while parked sessions are on their way back, so that counts stay consistent.
        self.returning = threading.Lock()

    def after_fork(self) -> None:
        """In a forked child: the parked claims are the parent's."""
        self.lock = threading.Lock()
        self.parked = []
        self.waiting = 0
        self._wake = threading.Event()
        self._watcher = None
        self.returning = threading.Lock()

    def tokens(self) -> set[str]:
        with self.lock:
            return {lease.token for lease in self.parked}

    # -- the hot path -------------------------------------------------------------------------

    def park(self, lease: Held, now: float) -> bool:
        """Keep a released session here; False when it must go back to the store."""
        if not self.enabled or self.spare <= 0:
            return False
        tick = time.monotonic()
        with self.lock:
            if self.waiting or tick < self._quiet_until:
                return False
            lease.parked_at = now
            lease.parked_tick = tick
            self.parked.append(lease)
        if self._watcher is None:
            self._start_watching()
        if not self._wake.is_set():
            self._wake.set()
        return True

    def take(self, pool: CacheSessionPool, now: float) -> Held | None:
        """The most recently parked session, ready to hand out; None when there is none."""
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
            if lease.confirmed_at >= now - pool.reclaim_after_seconds / 20:
                return lease
            key = pool.key
            try:
                kept = pool._steps.run(
                    "keep_alive",
                    pool._store.keep_alive,
                    key,
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
                return lease
            pool._count(stats.CLAIMS_LOST)  # reclaimed, or the pool was cleared: forget it

    # -- giving back ----------------------------------------------------------------------------

    def take_all(self) -> list[Held]:
        with self.lock:
            leases, self.parked = self.parked, []
        return leases

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

    # -- the watcher ----------------------------------------------------------------------------

    def _start_watching(self) -> None:
        with self.lock:
            if self._watcher is not None:
                return
            self._watcher = threading.Thread(
                target=self._watch, name="spanpool-cache-leases", daemon=True
            )
        self._watcher.start()

    def _watch(self) -> None:
        """While sessions are parked: give them all back as soon as an acquire anywhere finds
        the pool full, and those unused for LINGER seconds."""
        while True:
            self._wake.wait(1.0)
            pool = self._pool()
            if pool is None:
                return
            with self.lock:
                if not self.parked:
                    self._wake.clear()
                    continue
            try:
                self._watch_once(pool)
            except Exception as exc:
                # The store failed, or was closed: the parked sessions go to the journal of
                # steps to retry (at the pool's next call, or at exit), and watching stops
                # until something is parked again.
                for lease in self.take_all():
                    pool._steps.unsettle(Unsettled("release", lease.session.name, lease.token))
                with self.lock:
                    self._watcher = None
                log.warning(
                    "CacheSessionPool %s: leased sessions go back later: %s", pool._key, exc
                )
                return
            del pool

    def _watch_once(self, pool: CacheSessionPool) -> None:
        key = pool._key
        if key is None:
            return
        wants = pool._steps.run(
            "wait_for_want",
            pool._store.wait_for_want,  # type: ignore[attr-defined]
            key,
            WATCH,
            self._seen,
            locked=False,
        )
        if self._seen >= 0 and wants != self._seen:
            with self.lock:
                self._quiet_until = time.monotonic() + QUIET
            self.give_back_all(pool)
        self._seen = wants
        stale_before = time.monotonic() - LINGER
        with self.returning:
            with self.lock:
                stale = [lease for lease in self.parked if lease.parked_tick < stale_before]
                self.parked = [lease for lease in self.parked if lease.parked_tick >= stale_before]
            if stale:
                self._give_back(pool, key, stale)
