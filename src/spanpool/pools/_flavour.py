"""What the blocking flavour of the pools does differently from the asyncio one: run many
RPCs at once (threads), start work in the background, and clean up at interpreter exit.

``base.py`` and ``policies.py`` are generated from their asyncio twins and call these
functions; ``_flavour_async.py`` has the same names for asyncio.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, TypeVar

from .._lifecycle import after_fork_in_child

log = logging.getLogger("spanpool")

R = TypeVar("R")

PARALLEL_RPCS = 8
"""RPCs a pool sends at once when it pings, creates or deletes many sessions."""


class _Workers:
    """Threads kept for the RPCs pools send in bulk, so that a ping round does not start (and
    then join) a thread per RPC. Each ``run_all`` call still sends at most ``PARALLEL_RPCS`` at
    once; the threads are made on demand and none survives ``fork``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        after_fork_in_child(self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._executor = None

    def executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(4 * PARALLEL_RPCS, "spanpool-rpc")
            return self._executor


_workers = _Workers()


def run_all(work: Callable[[Any], R], items: Iterable[Any]) -> list[R | BaseException]:
    """``work(item)`` for every item, up to ``PARALLEL_RPCS`` at a time; errors are returned.

    ``work`` must not itself call ``run_all`` (it is a single RPC)."""
    items = list(items)

    def guarded(item: Any) -> R | BaseException:
        try:
            return work(item)
        except Exception as exc:
            return exc

    if len(items) <= 1:
        return [guarded(item) for item in items]
    lanes = min(PARALLEL_RPCS, len(items))
    results: list[R | BaseException] = [None] * len(items)  # type: ignore[list-item]
    cursor = iter(range(len(items)))
    take = threading.Lock()

    def lane() -> None:
        while True:
            with take:
                index = next(cursor, None)
            if index is None:
                return
            results[index] = guarded(items[index])

    try:
        executor = _workers.executor()
        futures = [executor.submit(lane) for _ in range(lanes - 1)]
    except RuntimeError:
        # At interpreter exit no new work may start: one after another still works.
        return [guarded(item) for item in items]
    try:
        lane()  # the calling thread is one of the lanes
    finally:
        # Even when this thread is interrupted: no RPC of this call may still be in flight
        # once the caller goes on to hand the sessions back.
        wait(futures)
    return results


def run_to_end(work: R, if_abandoned: Callable[[R], object] | None = None) -> R:
    """``work``'s result: a blocking call has run to its end by the time it gets here (the
    asyncio flavour shields ``work`` from the caller's cancellation instead)."""
    return work


def spawn(work: Callable[[Any], Any], item: Any) -> None:
    """Run ``work(item)`` now (the asyncio flavour schedules it as a task instead)."""
    work(item)


def close_at_exit(pool: Any) -> None:
    """At interpreter exit, close a pool still open: its idle sessions are deleted."""
    pool.close()


class MaintenanceWorker:
    """A daemon thread calling ``pool.maintain()`` every ``pool.maintenance_interval()``
    seconds until :meth:`stop`. Errors are logged and the worker goes on."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"spanpool-maintenance-{pool._name}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread is not threading.current_thread() and self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stopping.wait(self._pool.maintenance_interval()):
            try:
                self._pool.maintain()
            except Exception:
                log.exception("%s: maintenance round failed", self._pool._name)
