"""Background work of the multiplexed pools, blocking flavour: one maintenance thread for the
whole process, short-lived threads for creations, and what a forked child starts again.

``multiplexed.py`` is generated from ``multiplexed_async.py`` and calls these functions;
``_maintenance_async.py`` has the same names for asyncio.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from .._lifecycle import after_fork_in_child

log = logging.getLogger("spanpool")

R = TypeVar("R")

IDLE_WAIT = 60.0
"""Longest the maintenance thread sleeps when no pool asks for sooner."""
SHORTEST_WAIT = 0.01
FIRST_ROUND = 1.0
"""A new maintenance thread's first round comes this long after it starts (sooner when poked).
A pool just bound has nothing due before then: its creation is under way (a failure pokes),
or its session came from the store; and ``Thread.start()`` then returns as soon as the
thread runs, rather than after a round that would compete with the pool's first request."""


def start(work: Callable[..., Any], *args: Any) -> None:
    """Run ``work(*args)`` in the background (a daemon thread that ends with it)."""
    threading.Thread(target=work, args=args, name="spanpool-multiplexed", daemon=True).start()


def wait(future: concurrent.futures.Future[R], timeout: float) -> R:
    """The future's result, waiting up to ``timeout`` seconds (``TimeoutError`` after)."""
    return future.result(timeout)


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def maintain_all(pools: list[Any]) -> float:
    """One round of the shared maintenance: each pool's ``maintain()``; how long until the
    soonest of them is due again."""
    delay = IDLE_WAIT
    for pool in pools:
        with failure_logged(pool):
            delay = min(delay, pool.maintain())
    return delay


@contextlib.contextmanager
def failure_logged(pool: Any) -> Iterator[None]:
    """Around one pool's ``maintain()`` in a round of the shared maintenance: a failure is
    logged, and the other pools' rounds go on."""
    try:
        yield
    except Exception:
        log.exception("%s: maintenance round failed", getattr(pool, "_name", pool))


def store_step(step: Callable[..., R], *args: Any, **kwargs: Any) -> R:
    """One step of a shared store (they block: in the asyncio flavour they run in a thread)."""
    return step(*args, **kwargs)


class SharedMaintenance:
    """One daemon thread keeps every multiplexed pool of the process: it calls each pool's
    ``maintain()`` (which answers how many seconds it may wait before the next call) and
    sleeps until the soonest is due.

    It holds the pools weakly, and holds none of them while sleeping, so that a ``Database``
    dropped without ``close()`` is collected; it ends when no pool is left, and starts again
    with the next one, so the process has at most one such thread however many ``Database``
    objects come and go."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pools: weakref.WeakSet[Any] = weakref.WeakSet()
        self._thread: threading.Thread | None = None

    def add(self, pool: Any) -> None:
        with self._lock:
            if pool not in self._pools:
                # A pool collected without close() wakes the thread, which ends if it was the last.
                weakref.finalize(pool, self._wake.set)
            self._pools.add(pool)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="spanpool-multiplexed-maintenance", daemon=True
                )
                self._thread.start()
                return
        self._wake.set()

    def discard(self, pool: Any) -> None:
        with self._lock:
            self._pools.discard(pool)
        self._wake.set()

    def poke(self) -> None:
        """Run a round now (a pool's schedule changed)."""
        self._wake.set()

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def _run(self) -> None:
        delay = FIRST_ROUND
        while True:
            self._wake.wait(max(delay, SHORTEST_WAIT))
            self._wake.clear()
            with self._lock:
                pools = list(self._pools)
                if not pools:
                    self._thread = None
                    return
            delay = maintain_all(pools)
            del pools  # hold no pool while sleeping: a dropped Database must be collectable

    def _after_fork(self) -> None:
        # The parent's thread does not exist here: a child keeps its pools maintained by a
        # thread of its own (the pools keep their session: nothing is created).
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None
        if len(self._pools):
            self.add(next(iter(self._pools)))


_maintenance = SharedMaintenance()
after_fork_in_child(_maintenance._after_fork)


def maintenance() -> SharedMaintenance:
    """The process's maintenance of multiplexed pools."""
    return _maintenance
