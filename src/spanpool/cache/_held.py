"""What one process holds of a shared pool: the sessions it checked out, each with the claim
token that proves it to the store. At interpreter exit they go back to the store; in a forked
child they are the parent's, and the child forgets them.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing.util
import threading
import weakref
from typing import TYPE_CHECKING, Any, Literal

from .. import stats
from .._lifecycle import ExitHook, watch_fork
from ..bridge import client
from ..errors import StoreError
from ._steps import Unsettled
from .store import Holder

if TYPE_CHECKING:
    from .pool import CacheSessionPool

log = logging.getLogger("spanpool")


@dataclasses.dataclass
class Held:
    """A session checked out to this process: its claim token, when it was created, when the
    store last confirmed the claim (checkout, keep-alive), and when it was last parked (see
    ``_leases.py``)."""

    token: str
    session: client.PooledSession
    created_at: float
    confirmed_at: float
    parked_at: float = 0.0  # the pool's clock
    parked_tick: float = 0.0  # time.monotonic()


class Holdings:
    """The sessions this process holds, by the identity of the session object handed out
    (reading a session's name is not cheap in the official client)."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held: dict[int, Held] = {}

    def __len__(self) -> int:
        return len(self._held)

    def add(self, held: Held) -> None:
        with self._mutex:
            self._held[id(held.session)] = held

    def get(self, session: Any) -> Held | None:
        """What this process holds as ``session`` (that very object); None when nothing."""
        held = self._held.get(id(session))
        return held if held is not None and held.session is session else None

    def take(self, session: Any) -> Held | None:
        """Forget that this process holds ``session``; None when it does not."""
        with self._mutex:
            held = self._held.pop(id(session), None)
            if held is not None and held.session is not session:
                self._held[id(session)] = held  # another object that had this id once
                return None
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
    pool._leases.after_fork()
    pool._steps.after_fork()
    if pool._own_holder:
        pool._holder = Holder.current()


def track(pool: CacheSessionPool) -> None:
    """Have ``pool`` return what it holds at exit (at the end of a ``multiprocessing`` worker
    too, which skips ``atexit``), and forget it in a forked child."""
    watch_fork(pool)
    ExitHook(pool, return_everything)
    multiprocessing.util.Finalize(None, _return_if_alive, (weakref.ref(pool),), exitpriority=10)


def _return_if_alive(pool_ref: weakref.ref[CacheSessionPool]) -> None:
    pool = pool_ref()
    if pool is not None:
        return_everything(pool)


def return_everything(pool: CacheSessionPool) -> None:
    """Return the sessions this process still holds, so nothing stays locked."""
    key = pool._key
    if key is None:
        return
    steps = pool._steps
    for held in pool._holdings.drain() + pool._leases.take_all():
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


def session_gone(pool: CacheSessionPool, session: Any) -> None:
    """The server no longer has ``session``: drop it from the pool, never to be handed out
    again (``exists()`` and ``delete()`` of the client's session tell the pool)."""
    if not isinstance(session, client.PooledSession):
        return
    session._spanpool_gone = True
    try:
        if drop(pool, session):
            pool._count(stats.SESSIONS_REPLACED)
    except StoreError as exc:
        # Kept aside and retried at the next call; exists() and delete() don't raise it.
        log.warning("%s", exc)


def drop(pool: CacheSessionPool, session: client.PooledSession) -> bool:
    """Remove a session this process holds from the pool; False when not held."""
    held = pool._holdings.take(session)
    if held is None or pool._key is None:
        return False
    discard(pool, pool._key, session.name, held.token)
    return True


def discard(pool: CacheSessionPool, key: str, name: str, token: str) -> None:
    """Forget a held session in the store (a failed step is retried later)."""
    try:
        pool._steps.run("discard", pool._store.discard, key, name, token)
    except StoreError:
        pool._steps.unsettle(Unsettled("discard", name, token))
        raise
