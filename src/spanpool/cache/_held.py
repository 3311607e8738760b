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


@dataclasses.dataclass(slots=True, eq=False)
class Held:
    """A session checked out to this process: its claim token, when it was created, when the
    store last confirmed the claim (checkout, keep-alive), and, while it is parked here (see
    ``_leases.py``), when it was parked and until when it may be handed out again without a
    store step (the pool's clock)."""

    token: str
    session: client.PooledSession
    created_at: float
    confirmed_at: float
    parked_at: float = 0.0
    fresh_until: float = 0.0


class Holdings:
    """The sessions this process holds, by the identity of the session object handed out
    (reading a session's name is not cheap in the official client). ``lock`` is the pool's
    one lock, shared with the parked sessions (``_leases.py``) so that a warm checkout or
    return takes one lock."""

    def __init__(self, lock: threading.Lock) -> None:
        self.lock = lock
        self.held: dict[int, Held] = {}

    def __len__(self) -> int:
        return len(self.held)

    def add(self, held: Held) -> None:
        with self.lock:
            self.held[id(held.session)] = held

    def get(self, session: Any) -> Held | None:
        """What this process holds as ``session`` (that very object); None when nothing."""
        held = self.held.get(id(session))
        return held if held is not None and held.session is session else None

    def take(self, session: Any) -> Held | None:
        """Forget that this process holds ``session``; None when it does not."""
        with self.lock:
            return self.take_locked(session)

    def take_locked(self, session: Any) -> Held | None:
        """``take``, with ``lock`` held by the caller."""
        held = self.held.pop(id(session), None)
        if held is not None and held.session is not session:
            self.held[id(session)] = held  # another object that had this id once
            return None
        return held

    def tokens(self) -> set[str]:
        with self.lock:
            return {held.token for held in self.held.values()}

    def drain(self) -> list[Held]:
        """Forget everything held, and return it."""
        with self.lock:
            held = list(self.held.values())
            self.held.clear()
        return held

    def after_fork(self, lock: threading.Lock) -> None:
        self.lock = lock
        self.held.clear()  # this process's copy: the parent's dict is its own


def forget_parent(pool: CacheSessionPool) -> None:
    """In a forked child: the parent's checkouts, journal and tokens are the parent's."""
    pool._mutex = threading.Lock()
    pool._holdings.after_fork(pool._mutex)
    pool._leases.after_fork(pool._mutex)
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
    held = pool._holdings.drain() + pool._leases.take_all()
    if not held and not steps.journal:
        return  # nothing to return (or returned already: this runs at exit, and as a finalizer)
    for one in held:
        kind: Literal["release", "discard"] = "discard" if one.session._spanpool_gone else "release"
        steps.unsettle(Unsettled(kind, one.session.name, one.token))
    try:
        steps.settle(key, pool._clock, pool._upkeep.delete_records)
    except Exception as exc:  # never fail interpreter exit
        log.warning("CacheSessionPool %s: returning sessions at exit failed: %s", key, exc)
    if steps.unsettled and held:
        log.warning(
            "CacheSessionPool %s: %d sessions could not be returned at exit; they are "
            "reclaimed when the pool needs them",
            key,
            steps.unsettled,
        )


def before_store_closes(pool: CacheSessionPool) -> None:
    """Give back what is leased and retry failed steps, and lease nothing more: the store
    closes next (what callers still hold is theirs to return)."""
    key = pool._key
    pool._leases.stop()
    if key is None:
        return
    try:
        pool._leases.give_back_all(pool)
        pool._steps.settle(key, pool._clock, pool._upkeep.delete_records)
    except StoreError as exc:
        log.warning("CacheSessionPool %s: returning sessions before the store closes: %s", key, exc)


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
