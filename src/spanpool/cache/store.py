"""What a shared store must do for ``CacheSessionPool``.

A store keeps the state of any number of pools, each under its own ``key`` (the pool builds it
from project, instance, database and database role). For one key the state is:

- **idle** sessions: ``SessionRecord`` (name, created_at, last_used);
- **checked-out** sessions: the record plus a ``Claim`` (a random token, the holder's host and
  pid, and ``since``: the checkout or last keep-alive time);
- **creation permits**: a ``Claim`` without a session, one per session being created, so that
  ``max_sessions`` counts sessions being created too;
- the **window**: its start time and the high-water mark of checked-out sessions in it.

Every method below is one atomic step in the store (a Lua script, one SQLite ``BEGIN
IMMEDIATE`` transaction, one critical section) and makes no Spanner RPC: the pool makes its
RPCs between steps. Times are seconds (floats) from the pool's clock, passed in as ``now``.

Tokens make every step after ``acquire`` safe against reclaiming: a holder whose session was
reclaimed (dead process, or not kept alive for too long) finds its token unknown, and its later
``release``, ``keep_alive`` or ``discard`` changes nothing.

**Epochs.** The state of a key carries an *epoch*, a random value written by the first
``start_reconcile`` for it. A store that lost the state (a Redis without persistence that
restarted, a SQLite file deleted or replaced, a pool cleared) lost the epoch with it; then
``acquire`` hands out nothing and reports ``reset``, ``reserve`` grants nothing, and the pool
reconciles from the server before anything is created: ``start_reconcile`` grants it a *lease*
(other processes may check idle sessions out meanwhile, but get no creation permit), it lists
the pool's sessions on the server (they carry its label), and ``adopt`` records the ones the
store does not know of and ends the lease. A holder that died with its lease loses it after
``lease_seconds``: the next ``acquire`` reports ``reset`` again and another process takes over.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import secrets
import socket
import weakref
from collections.abc import Callable
from typing import Protocol


@functools.cache
def host_id() -> str:
    """This host's name, boot and pid namespace, so that a pid is only compared with pids that
    name the same processes: same machine, same boot, same namespace (two containers sharing a
    host name and a store file each have their own pids)."""
    parts = [socket.gethostname()]
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            parts.append(f.read().strip())
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:
        pass
    return "/".join(parts)


def new_token() -> str:
    """A random claim token."""
    return secrets.token_hex(8)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclasses.dataclass(frozen=True)
class Holder:
    """Who holds a claim: the host (``host_id()``) and the process id on that host."""

    host: str
    pid: int

    @classmethod
    def current(cls) -> Holder:
        return cls(host_id(), os.getpid())


NOBODY = Holder("", 0)
"""The holder of a session that reconciliation found on the server recently used, whose real
holder (if any) the store no longer knows: it counts under ``max_sessions`` but is not handed
out until its ``since`` (the server's last use) is old enough for the pool to take it back."""


@dataclasses.dataclass(frozen=True)
class SessionRecord:
    """A session the pool owns on the server: its full name, when it was created, and when it
    was last used (by a holder, or refreshed by maintenance)."""

    name: str
    created_at: float
    last_used: float


@dataclasses.dataclass(frozen=True)
class Claim:
    """A checked-out session (``name`` set) or a creation permit (``name`` is None)."""

    token: str
    holder: Holder
    since: float
    name: str | None = None


@dataclasses.dataclass(frozen=True)
class Checkout:
    """What ``Store.acquire`` is asked: who checks out, at what time, and the pool's limits
    (absolute times, computed by the pool from ``now``)."""

    holder: Holder
    now: float
    max_sessions: int
    reclaim_before: float  # claims (and permits) with an older ``since`` may be taken back
    expired_before: float  # idle sessions last used before this are gone on the server
    retire_before: float  # idle sessions created before this are too old to hand out


@dataclasses.dataclass(frozen=True)
class TakeIdle:
    """What ``Store.take_idle`` is asked: at most ``limit`` idle sessions, never leaving fewer
    than ``keep`` in the pool, matching the filters; checked out to ``holder`` when given."""

    limit: int
    keep: int
    now: float
    last_used_before: float | None = None
    created_before: float | None = None
    holder: Holder | None = None


@dataclasses.dataclass(frozen=True)
class Acquired:
    """Result of ``Store.acquire``.

    Exactly one of these holds:
    - ``record`` is set: that idle session is now checked out under ``token``;
    - ``record`` is None and ``token`` is set: a creation permit; the caller creates a session
      and reports it with ``created`` (or ``create_failed``);
    - both are None: the pool is at ``max_sessions`` and nothing could be reclaimed.

    ``dropped`` lists idle sessions this step removed because they had expired
    (``last_used < expired_before``: the server has dropped them already) or reached their
    maximum age (``created_at < retire_before``). The caller deletes the retired ones on the
    server, best effort; deleting an expired one only answers NOT_FOUND.
    """

    record: SessionRecord | None = None
    token: str | None = None
    dropped: tuple[SessionRecord, ...] = ()
    reclaimed: bool = False  # the session was taken from a holder that stopped keeping it alive
    releases: int = 0  # the key's release counter at this step, for ``wait_for_release``
    # Sessions another holder could get right after this step without waiting: idle ones plus
    # free places under max_sessions (0 when the store does not tell; then nothing is leased).
    spare: int = 0
    reset: bool = False  # no epoch (the state was lost) or a dead reconciler's lease: reconcile
    wants: int = -1  # the key's want count after this step (-1 when the store does not tell)


@dataclasses.dataclass(frozen=True)
class Adoption:
    """What ``Store.adopt`` is asked, under the reconciliation ``lease``: the sessions the
    server lists for the pool, in the order to keep them when there is no room for all (the
    most recently used first), and the pool's limits."""

    lease: str
    records: tuple[SessionRecord, ...]
    now: float
    max_sessions: int
    idle_before: float  # sessions last used on the server before this become idle at once


@dataclasses.dataclass(frozen=True)
class StoreStats:
    idle: int
    in_use: int
    creating: int
    high_water: int  # most sessions checked out at once in the current window
    window_start: float | None


class Store(Protocol):
    """The operations ``CacheSessionPool`` needs; ``MemoryStore``, ``SQLiteStore`` and
    ``RedisStore`` implement them."""

    def acquire(self, key: str, checkout: Checkout) -> Acquired:
        """When the key has no epoch, or a reconciliation lease that expired: change nothing
        and report ``reset``. Otherwise check out the most recently used idle session; else,
        when idle + checked out + permits < ``max_sessions``, grant a creation permit; else
        reclaim the checked-out session with the oldest ``since`` when that is older than
        ``reclaim_before`` (it changes holder and gets a new token, ``reclaimed=True``); else
        report the pool full.

        First drops idle sessions that expired or must retire (see ``Acquired.dropped``), and
        permits whose ``since`` is older than ``reclaim_before`` (a creator that died). Starts
        the window at ``now`` when there is none, and raises its high-water mark to the number
        of checked-out sessions after this step. When it reports the pool full, it counts a
        *want* (see ``Wants``). While a reconciliation lease is held, it grants no creation
        permit (the server may hold sessions the store does not know of yet)."""
        ...

    def start_reconcile(
        self, key: str, *, now: float, lease_seconds: float, force: bool
    ) -> str | None:
        """A reconciliation lease for the key, valid until ``now + lease_seconds``: granted
        when the key has no epoch (a new epoch is written), when the current lease expired,
        or, with ``force``, whenever no lease is held. Returns the lease's token, or None
        (another process is reconciling, or nothing calls for it)."""
        ...

    def adopt(self, key: str, adoption: Adoption) -> list[str] | None:
        """Record the listed sessions the store does not know of, in the order given, while
        idle + checked out + permits < ``max_sessions``: idle when last used on the server
        before ``idle_before``, else checked out by ``NOBODY`` with ``since`` = that last use
        (a holder the store forgot may still be using it). A session checked out by
        ``NOBODY`` that is listed as last used before ``idle_before`` becomes idle; any other
        known session is left alone. Then ends the lease and wakes waiters.

        Returns the names refused for want of room (the caller deletes them), or None,
        changing nothing, when ``lease`` is no longer the key's lease."""
        ...

    def created(
        self, key: str, token: str, record: SessionRecord, *, now: float, check_out: bool
    ) -> bool:
        """Turn the permit ``token`` into a session: checked out under the same token when
        ``check_out``, else idle. False when the permit is unknown (the pool was cleared, or
        the permit reclaimed): the session was not recorded, and the caller deletes it."""
        ...

    def create_failed(self, key: str, token: str) -> None:
        """Give back the permit ``token``, waking waiters as a release does (the place is
        free again); unknown tokens are ignored."""
        ...

    def reserve(
        self, key: str, *, holder: Holder, now: float, target: int, max_sessions: int
    ) -> list[str]:
        """Creation permits for as many sessions as it takes to bring idle + checked out +
        permits up to ``min(target, max_sessions)``; none when already there, and none when
        the key has no epoch or a reconciliation lease is held."""
        ...

    def release(self, key: str, name: str, token: str, *, now: float) -> bool:
        """Return a checked-out session to idle with ``last_used = now``, and wake waiters
        (``wait_for_release``). False, changing nothing, when ``name`` is not checked out
        under ``token``."""
        ...

    def keep_alive(self, key: str, name: str, token: str, *, now: float) -> bool:
        """Set the claim's ``since`` to ``now``. False when ``name`` is not checked out under
        ``token``."""
        ...

    def discard(self, key: str, name: str, token: str) -> bool:
        """Forget a checked-out session (the server no longer has it, or the holder deleted
        it), freeing its place under ``max_sessions`` and waking waiters as a release does.
        False when not checked out under ``token``."""
        ...

    def take_idle(self, key: str, take: TakeIdle) -> list[tuple[SessionRecord, str | None]]:
        """Take up to ``limit`` idle sessions, least recently used first, that match the
        filters (``last_used < last_used_before``, ``created_at < created_before``), without
        leaving fewer than ``keep`` sessions in the pool (idle + checked out + permits).

        With ``holder`` the sessions are checked out to it (each with a new token, returned
        alongside; ``since = now``), e.g. to refresh them and ``release`` them afterwards.
        Without, they are removed from the store (token None), e.g. to delete them."""
        ...

    def roll_window(self, key: str, *, now: float, length: float) -> int | None:
        """When the current window started ``length`` or more seconds ago: start a new window at
        ``now`` whose high-water mark is the number checked out now, and return the old window's
        high-water mark. Otherwise None. (Starts a window and returns None when there is
        none.)"""
        ...

    def claims(self, key: str) -> list[Claim]:
        """Every checked-out session and creation permit, for finding holders that died."""
        ...

    def reclaim(self, key: str, tokens: list[str], *, now: float) -> int:
        """Take back claims from holders known to be dead: their sessions become idle
        (``last_used`` unchanged), their permits are dropped. Returns how many claims were
        found; unknown tokens are ignored."""
        ...

    def clear(self, key: str) -> list[SessionRecord]:
        """Remove every trace of the pool ``key`` (and nothing else, its epoch included) and
        return all its sessions, idle and checked out, so that the caller deletes them."""
        ...

    def stats(self, key: str) -> StoreStats: ...

    def wait_for_release(self, key: str, timeout: float, releases: int) -> bool:
        """Block up to ``timeout`` seconds, returning early (True) when a session of ``key`` may
        have been released after the ``acquire`` that returned ``releases`` (so a release
        between that step and this call is not missed). Spurious wake-ups are allowed; the
        caller retries ``acquire``. A store that can be signalled (Redis: a blocking list pop)
        must not merely poll at the caller's sleep interval."""
        ...

    def close(self) -> None:
        """Built-in stores first call what pools registered with ``before_close(callback)``
        (an optional method: a store without it is closed as it is)."""
        ...


class Wants(Protocol):
    """What a store offers so that a pool may keep released sessions in its process (a
    *lease*) instead of returning each one: every ``acquire`` that finds the pool full counts a
    want (``Acquired.wants`` tells the count), and a process that keeps sessions waits for
    the count to move to give them back at once."""

    def wait_for_want(self, key: str, timeout: float, wants: int) -> int:
        """Block up to ``timeout`` seconds until the key's want count differs from ``wants``,
        and return the count (at once when it differs already: pass -1 to read it). Every
        process keeping sessions waits so, all the time: a store that can be signalled
        (Redis: a blocking read of a stream) must not poll, and one that polls (SQLite) must
        not poll often."""
        ...


class ClosingHooks:
    """What the built-in stores run first in ``close()``: each pool using one registers a
    callback (``before_close``) that gives back the sessions the pool leased while the store
    can still take them. Callbacks are bound methods, held weakly; no lock, so that a forked
    child never finds one held (appending to a list and swapping it are atomic)."""

    def __init__(self) -> None:
        self._closing_hooks: list[weakref.WeakMethod[Callable[[], None]]] = []

    def before_close(self, callback: Callable[[], None]) -> None:
        """Have ``close()`` call ``callback`` first (held weakly: a bound method)."""
        self._closing_hooks.append(weakref.WeakMethod(callback))

    def _before_closing(self) -> None:
        hooks, self._closing_hooks = self._closing_hooks, []
        for ref in hooks:
            callback = ref()
            if callback is not None:
                callback()


# -- multiplexed sessions ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MultiplexedRecord:
    """The multiplexed session shared under one key: its full name, when it was created (the
    pool's clock: wall-clock seconds), and its generation (1 for the key's first session, one
    more for each successor, whoever made it)."""

    name: str
    created_at: float
    generation: int


@dataclasses.dataclass(frozen=True)
class MultiplexedClaim:
    """Result of ``MultiplexedStore.multiplexed_claim``.

    - ``token`` set: the caller holds the creation lease; it creates a session and publishes it
      under this token (``multiplexed_publish``), or gives the lease up
      (``multiplexed_abandon``);
    - ``token`` None: ``record`` is the session to use (another holder made it), or, when
      ``record`` is None or still the session being replaced, another holder's lease is live:
      that holder is creating one, ask again later.
    """

    token: str | None
    record: MultiplexedRecord | None


class MultiplexedStore(Protocol):
    """The steps ``MultiplexedPool`` needs to share one multiplexed session per key between
    processes and hosts; ``MemoryStore``, ``SQLiteStore`` and ``RedisStore`` implement them.

    Each is one atomic step, as for ``Store``. The keys are the pool's own (they never collide
    with ``CacheSessionPool``'s keys, even in the same store)."""

    def multiplexed_get(self, key: str) -> MultiplexedRecord | None:
        """The session recorded under ``key``, if any."""
        ...

    def multiplexed_claim(
        self, key: str, *, holder: Holder, now: float, lease: float, replacing: str | None
    ) -> MultiplexedClaim:
        """Grant the creation lease (a new token, held by ``holder`` until ``now + lease``)
        when no other holder's lease is live and either nothing is recorded, or the recorded
        session is ``replacing`` (the caller found it lost, or old enough to rotate). Otherwise
        grant nothing. Always answers the record as it is."""
        ...

    def multiplexed_publish(
        self, key: str, token: str, *, name: str, created_at: float
    ) -> MultiplexedRecord | None:
        """Record session ``name`` under ``key`` with the next generation, and end the lease,
        when ``token`` still holds it (even past its time, if nobody took it over). None,
        changing nothing, when it does not: the caller's session is then not shared."""
        ...

    def multiplexed_abandon(self, key: str, token: str) -> None:
        """End the lease ``token`` (its creation failed), so that another holder may create at
        once; an unknown token is ignored."""
        ...
