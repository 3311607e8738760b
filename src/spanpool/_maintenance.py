"""The optional background worker of a pool: keep-alive pings, replacements, leak reports."""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger("spanpool")


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
