"""Giving leased sessions back when another holder wants one: the watcher of a pool.

While this process has sessions parked (``_leases.py``), one thread per pool waits for the
store's *want* count to move, that is for an acquire anywhere to find the pool full
(``Wants.wait_for_want``): over Redis one blocking read of a stream that such an acquire
appends to, renewed about once a second; over SQLite a read of the count, every 5 ms at first
and less often while nothing happens; over ``MemoryStore`` a condition. When the count moves,
every parked session goes back to the store at once and the process parks nothing for a
second, so that the waiting holder gets one through the store. Sessions parked and unused for
``LINGER`` seconds go back too. While nothing is parked the thread sleeps and reads nothing.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import TYPE_CHECKING

from ._steps import Unsettled

if TYPE_CHECKING:
    from ._leases import Leases
    from .pool import CacheSessionPool

log = logging.getLogger("spanpool")

WATCH_LONGEST = 1.0
"""The longest one wait for a want lasts (seconds): the watcher then looks at what is parked."""


class Watcher:
    """The thread that gives a pool's parked sessions back when wanted, started by the first
    session parked. ``watching`` (guarded by the leases' lock) is False while it sleeps."""

    def __init__(self, pool: CacheSessionPool, leases: Leases) -> None:
        self._pool = weakref.ref(pool)
        self._leases = leases
        self.watching = False
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()

    def after_fork(self) -> None:
        """In a forked child: no thread runs yet."""
        self.watching = False
        self._wake = threading.Event()
        self._thread = None
        self._starting = threading.Lock()

    def wake(self) -> None:
        """Something was parked while the thread slept (or before it ran)."""
        if self._thread is None:
            with self._starting:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="spanpool-cache-leases", daemon=True
                    )
                    self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        leases = self._leases
        while True:
            with leases.lock:
                idle = not leases.parked
                if idle:
                    self.watching = False
                    self._wake.clear()
            if idle:
                self._wake.wait(WATCH_LONGEST)
                if self._pool() is None:
                    return
                continue
            pool = self._pool()
            if pool is None:
                return
            try:
                self._once(pool)
            except Exception as exc:
                self._stop(pool, exc)
                return
            del pool

    def _once(self, pool: CacheSessionPool) -> None:
        """Wait for a want (at most until the first parked session goes stale), then give
        back what must go back."""
        leases, key = self._leases, pool._key
        stale_at = leases.next_stale()
        if key is None or stale_at is None:
            return
        timeout = min(max(0.0, stale_at - pool._clock()), WATCH_LONGEST)
        wants = pool._steps.run(
            "wait_for_want",
            pool._store.wait_for_want,  # type: ignore[attr-defined]
            key,
            timeout,
            leases.seen,
            locked=False,
        )
        if leases.wanted(wants):
            leases.give_back_all(pool)
        else:
            leases.give_back_stale(pool, pool._clock())

    def _stop(self, pool: CacheSessionPool, exc: Exception) -> None:
        """The store failed, or was closed: the parked sessions go to the journal of steps to
        retry (at the pool's next call, or at exit), and watching stops until something is
        parked again."""
        leases = self._leases
        with leases.lock:  # so that the next session parked starts another thread
            lost, leases.parked = leases.parked, []
            self.watching = False
            self._thread = None
        for lease in lost:
            pool._steps.unsettle(Unsettled("release", lease.session.name, lease.token))
        if lost:
            log.warning(
                "CacheSessionPool %s: %d leased sessions go back later: %s",
                pool._key,
                len(lost),
                exc,
            )
