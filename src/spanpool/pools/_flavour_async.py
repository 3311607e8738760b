"""What the asyncio flavour of the pools does differently from the blocking one: run many
RPCs at once (tasks), start work in the background, and clean up at interpreter exit.

The same names as :mod:`spanpool.pools._flavour`, which the generated blocking pools call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

from ..bridge import at_exit
from ._flavour import PARALLEL_RPCS

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


async def run_to_end(
    work: Coroutine[Any, Any, R], if_abandoned: Callable[[R], Awaitable[object]] | None = None
) -> R:
    """Await ``work`` in a task of its own, which cancelling the caller does not cancel.

    For work whose loss would lose sessions, such as a creation the server completes anyway:
    if the caller is cancelled meanwhile, it gets its ``CancelledError`` at once, and
    ``work`` runs to its end in the background; then ``if_abandoned(result)`` is awaited (it
    takes over what ``work`` produced), unless ``work`` failed, in which case ``work`` itself
    must have given back what it held.
    """
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.cancelled():  # the caller was cancelled, not the work
            _keep(asyncio.ensure_future(_finish_abandoned(task, if_abandoned)))
        raise


async def _finish_abandoned(
    task: asyncio.Future[R], if_abandoned: Callable[[R], Awaitable[object]] | None
) -> None:
    try:
        result = await task
    except Exception as exc:  # the work gave back what it held
        log.debug("work abandoned by a cancelled caller failed: %r", exc)
        return
    if if_abandoned is not None:
        try:
            await if_abandoned(result)
        except Exception:
            log.exception("taking over the result of work abandoned by a cancelled caller failed")


def _keep(task: asyncio.Task[Any]) -> None:
    _background.add(task)
    task.add_done_callback(_background.discard)


def spawn(work: Callable[[Any], Coroutine[Any, Any, Any]], item: Any) -> None:
    """Start ``work(item)`` as a task of the running loop; the caller does not wait for it."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        log.warning("no running event loop: %s(%r) not done", work, item)
        return
    _keep(loop.create_task(work(item)))


def close_at_exit(pool: Any) -> None:
    """At interpreter exit, close a pool still open. Its event loop is gone by then, so the
    idle sessions are deleted through a blocking channel."""
    if pool._forked or pool._core.closed:
        return
    sessions = pool._close_core()
    if sessions:
        at_exit.delete_sessions(pool._database, sessions)


class MaintenanceWorker:
    """A task awaiting ``pool.maintain()`` every ``pool.maintenance_interval()`` seconds until
    :meth:`stop`. Errors are logged and the worker goes on. Created on the running loop."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"spanpool-maintenance-{self._pool._name}"
        )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None or task is asyncio.current_task():
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._pool.maintenance_interval())
            try:
                await self._pool.maintain()
            except Exception:
                log.exception("%s: maintenance round failed", self._pool._name)
