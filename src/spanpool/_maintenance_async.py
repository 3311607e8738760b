"""The optional background maintenance of an asyncio pool, as an asyncio task."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

log = logging.getLogger("spanpool")


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
