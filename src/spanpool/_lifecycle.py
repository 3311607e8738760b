"""What happens to spanpool's objects across ``fork`` and at interpreter exit, in one place.

- **fork**: a child process must not use its parent's sessions, gRPC channels, locks or
  threads (a parent thread may have held a lock at the fork). An object that cares calls
  :func:`watch_fork`, and its ``_after_fork()`` runs in every child forked after that: pools
  mark themselves forked there (and then refuse everything), caches of threads forget them.
- **exit**: an :class:`ExitHook` runs once at interpreter exit, in the process that made it and
  only while its object is alive, so that an unclosed pool deletes (or gives back) its
  sessions rather than leave them on the server.
"""

from __future__ import annotations

import atexit
import logging
import os
import weakref
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger("spanpool")

__all__ = ["ExitHook", "after_fork_in_child", "watch_fork"]


def after_fork_in_child(callback: Callable[[], object]) -> None:
    """Run ``callback`` in each child process forked from now on (nothing where there is no
    ``fork``)."""
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=callback)


class ForkAware(Protocol):
    def _after_fork(self) -> None: ...


_watched: weakref.WeakSet[Any] = weakref.WeakSet()


def watch_fork(obj: ForkAware) -> None:
    """Call ``obj._after_fork()`` in each child forked while ``obj`` is alive."""
    _watched.add(obj)


def _tell_watched() -> None:
    for obj in list(_watched):
        try:
            obj._after_fork()
        except Exception:  # one object's failure must not leave the others unmarked
            log.exception("spanpool: forgetting the parent's state of %r failed", obj)


after_fork_in_child(_tell_watched)


class ExitHook:
    """``action(obj)`` at interpreter exit, if ``obj`` is still alive and this is the process
    that made the hook; :meth:`cancel` when ``obj`` has cleaned up by itself."""

    def __init__(self, obj: Any, action: Callable[[Any], object]) -> None:
        self._ref = weakref.ref(obj)
        self._action = action
        self._pid = os.getpid()
        atexit.register(self._run)

    def cancel(self) -> None:
        atexit.unregister(self._run)

    def _run(self) -> None:
        obj = self._ref()
        if obj is None or os.getpid() != self._pid:
            return
        try:
            self._action(obj)
        except Exception:
            log.exception("spanpool: cleaning up %r at exit failed", obj)
