"""What one process holds of a shared pool: the sessions it checked out, each with the claim
token that proves it to the store. At interpreter exit they go back to the store; in a forked
child they are the parent's, and the child forgets them.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import TYPE_CHECKING, Any, Literal

from .._lifecycle import ExitHook, watch_fork
from ..bridge import client
from ._steps import Unsettled
from .store import Holder

if TYPE_CHECKING:
    from .pool import CacheSessionPool

log = logging.getLogger("spanpool")


@dataclasses.dataclass
class Held:
    token: str
    session: client.PooledSession


class Holdings:
    """The sessions this process holds, by name."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held: dict[str, Held] = {}

    def __len__(self) -> int:
        return len(self._held)

    def add(self, session: client.PooledSession, token: str) -> None:
        with self._mutex:
            self._held[session.name] = Held(token, session)

    def get(self, session: Any) -> Held | None:
        """What this process holds as ``session`` (that very object); None when nothing."""
        name = getattr(session, "name", None) if session is not None else None
        if not isinstance(name, str):
            return None
        held = self._held.get(name)
        return held if held is not None and held.session is session else None

    def take(self, session: Any) -> Held | None:
        """Forget that this process holds ``session``; None when it does not."""
        with self._mutex:
            held = self.get(session)
            if held is not None:
                del self._held[held.session.name]
            return held

    def tokens(self) -> set[str]:
        with self._mutex:
            return {held.token for held in self._held.values()}

    def drain(self) -> list[Held]:
        """Forget everything held, and return it."""
        with self._mutex:
            held, self._held = list(self._held.values()), {}
        return held

    def after_fork(self) -> None:
        self._mutex = threading.Lock()
        self._held = {}


def forget_parent(pool: CacheSessionPool) -> None:
    """In a forked child: the parent's checkouts, journal and tokens are the parent's."""
    pool._mutex = threading.Lock()
    pool._holdings.after_fork()
    pool._steps.after_fork()
    if pool._own_holder:
        pool._holder = Holder.current()


def track(pool: CacheSessionPool) -> None:
    """Have ``pool`` return what it holds at exit, and forget it in a forked child."""
    watch_fork(pool)
    ExitHook(pool, return_everything)


def return_everything(pool: CacheSessionPool) -> None:
    """Return the sessions this process still holds, so nothing stays locked."""
    key = pool._key
    if key is None:
        return
    steps = pool._steps
    for held in pool._holdings.drain():
        kind: Literal["release", "discard"] = (
            "discard" if held.session._spanpool_gone else "release"
        )
        steps.unsettle(Unsettled(kind, held.session.name, held.token))
    try:
        steps.settle(key, pool._clock, pool._upkeep.delete_records)
    except Exception as exc:  # never fail interpreter exit
        log.warning("CacheSessionPool %s: returning sessions at exit failed: %s", key, exc)
    if steps.unsettled:
        log.warning(
            "CacheSessionPool %s: %d sessions could not be returned at exit; they are "
            "reclaimed when the pool needs them",
            key,
            steps.unsettled,
        )
