"""Background work of the multiplexed pools, asyncio flavour: one maintenance task per event
loop, tasks for creations, store steps in a thread.

The same names as :mod:`spanpool.pools._maintenance`, which the generated blocking pool calls.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ._maintenance import IDLE_WAIT as IDLE_WAIT
from ._maintenance import SHORTEST_WAIT, failure_logged

R = TypeVar("R")

_background: set[asyncio.Task[Any]] = set()  # strong references until the tasks finish


def start(work: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
    """Run ``work(*args)`` as a task of the running loop; the caller does not wait for it."""
    task = asyncio.get_running_loop().create_task(work(*args))
    _background.add(task)
    task.add_done_callback(_background.discard)


async def wait(future: concurrent.futures.Future[R], timeout: float) -> R:
    """The future's result, waiting up to ``timeout`` seconds (``TimeoutError`` after).
    Cancelling the caller leaves the work behind the future alone."""
    return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), timeout)


async def sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def store_step(step: Callable[..., R], *args: Any, **kwargs: Any) -> R:
    """One step of a shared store, in a thread so that a SQLite lock or a slow Redis does not
    hold the event loop (a ``MemoryStore`` step never waits: run at once)."""
    if getattr(getattr(step, "__self__", None), "in_memory", False):
        return step(*args, **kwargs)
    return await asyncio.to_thread(step, *args, **kwargs)


async def maintain_all(pools: list[Any]) -> float:
    """:func:`spanpool.pools._maintenance.maintain_all`, for pools whose ``maintain()`` is a
    coroutine."""
    delay = IDLE_WAIT
    for pool in pools:
        with failure_logged(pool):
            delay = min(delay, await pool.maintain())
    return delay


class SharedMaintenance:
    """One task per event loop keeps every asyncio multiplexed pool of that loop: it awaits
    each pool's ``maintain()`` (which answers how many seconds it may wait before the next
    call) and sleeps until the soonest is due. Holds the pools weakly, none while sleeping;
    ends when no pool is left."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._wake = asyncio.Event()
        self._pools: weakref.WeakSet[Any] = weakref.WeakSet()
        self._task: asyncio.Task[None] | None = None

    def add(self, pool: Any) -> None:
        self._pools.add(pool)
        if self._task is None or self._task.done():
            self._task = self._loop.create_task(self._run(), name="spanpool-multiplexed")
        self._wake.set()

    def discard(self, pool: Any) -> None:
        self._pools.discard(pool)
        self._wake.set()

    def poke(self) -> None:
        self._wake.set()

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            pools = list(self._pools)
            if not pools:
                self._task = None
                return
            delay = await maintain_all(pools)
            del pools  # hold no pool while sleeping: a dropped Database must be collectable
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(delay, SHORTEST_WAIT))


_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SharedMaintenance] = (
    weakref.WeakKeyDictionary()
)


def maintenance() -> SharedMaintenance:
    """The maintenance of the asyncio multiplexed pools of the running loop."""
    loop = asyncio.get_running_loop()
    shared = _per_loop.get(loop)
    if shared is None:
        shared = _per_loop[loop] = SharedMaintenance(loop)
    return shared
