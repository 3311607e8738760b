"""What the asyncio flavour of the pools does differently from the blocking one: run many
RPCs at once (tasks), start work in the background, and clean up at interpreter exit.

The same names as :mod:`spanpool.pools._io`, which the generated blocking pools call.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

from .. import _bridge_async
from ._io import PARALLEL_RPCS

log = logging.getLogger("spanpool")

R = TypeVar("R")

_background: set[asyncio.Task[Any]] = set()  # strong references until the tasks finish


async def run_all(
    work: Callable[[Any], Awaitable[R]], items: Iterable[Any]
) -> list[R | BaseException]:
    """``await work(item)`` for every item, up to ``PARALLEL_RPCS`` at a time; errors are
    returned. Cancelling the caller cancels the calls in flight."""
    items = list(items)
    limit = asyncio.Semaphore(PARALLEL_RPCS)

    async def guarded(item: Any) -> R | BaseException:
        async with limit:
            try:
                return await work(item)
            except Exception as exc:
                return exc

    if len(items) <= 1:
        return [await guarded(item) for item in items]
    return list(await asyncio.gather(*(guarded(item) for item in items)))


def spawn(work: Callable[[Any], Coroutine[Any, Any, Any]], item: Any) -> None:
    """Start ``work(item)`` as a task of the running loop; the caller does not wait for it."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        log.warning("no running event loop: %s(%r) not done", work, item)
        return
    task: asyncio.Task[Any] = loop.create_task(work(item))
    _background.add(task)
    task.add_done_callback(_background.discard)


def close_at_exit(pool_ref: weakref.ref[Any]) -> None:
    """At interpreter exit, close a pool still open. Its event loop is gone by then, so the
    idle sessions are deleted through a blocking channel."""
    pool = pool_ref()
    if pool is None or pool._core.forked or pool._core.closed:
        return
    sessions = pool._core.close()
    if sessions:
        _bridge_async.delete_at_exit(pool._database, sessions)
