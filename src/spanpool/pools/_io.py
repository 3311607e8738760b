"""What the blocking flavour of the pools does differently from the asyncio one: run many
RPCs at once (threads), start work in the background, and clean up at interpreter exit.

``_managed.py`` and ``policies.py`` are generated from their asyncio twins and call these
functions; ``_io_async.py`` has the same names for asyncio.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

log = logging.getLogger("spanpool")

R = TypeVar("R")

PARALLEL_RPCS = 8
"""RPCs a pool sends at once when it pings, creates or deletes many sessions."""


def run_all(work: Callable[[Any], R], items: Iterable[Any]) -> list[R | BaseException]:
    """``work(item)`` for every item, up to ``PARALLEL_RPCS`` at a time; errors are returned."""
    items = list(items)

    def guarded(item: Any) -> R | BaseException:
        try:
            return work(item)
        except Exception as exc:
            return exc

    if len(items) <= 1:
        return [guarded(item) for item in items]
    try:
        with ThreadPoolExecutor(min(PARALLEL_RPCS, len(items)), "spanpool-rpc") as executor:
            return list(executor.map(guarded, items))
    except RuntimeError:
        # At interpreter exit no new thread may start: one after another still works.
        return [guarded(item) for item in items]


def run_to_end(work: R, if_abandoned: Callable[[R], object] | None = None) -> R:
    """``work``'s result: a blocking call has run to its end by the time it gets here (the
    asyncio flavour shields ``work`` from the caller's cancellation instead)."""
    return work


def spawn(work: Callable[[Any], Any], item: Any) -> None:
    """Run ``work(item)`` now (the asyncio flavour schedules it as a task instead)."""
    work(item)


def close_at_exit(pool_ref: weakref.ref[Any]) -> None:
    """At interpreter exit, close a pool still open: its idle sessions are deleted."""
    pool = pool_ref()
    if pool is not None and not pool._core.forked:
        pool.close()
