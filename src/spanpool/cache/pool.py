"""``CacheSessionPool``: one budget of sessions shared by many processes through a store.

The pool's state (idle sessions, checked-out sessions, sessions being created, the downsizing
window) lives in a :mod:`spanpool.stores` store, so every process pointing at the same store
and database shares one ``max_sessions``. Each pool operation is a few atomic store steps with
Spanner RPCs between them, never during one: a store step hands out an idle session, a
*creation permit*, or nothing; the RPCs (create, check, ping, delete) follow.

This process keeps only what it holds: for each session it checked out, the claim token that
proves it, so that a holder whose session was reclaimed changes nothing with a late release.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, Literal, TypeVar

from ..bridge import client
from ..errors import NotCheckedOut, PoolTimeout, PoolUsageError, SpanpoolError, StoreError
from ..pools._flavour import run_all
from ..pools.abstract import AbstractSessionPool
from .store import Holder, SessionRecord, Store, StoreStats, pid_alive

log = logging.getLogger("spanpool")

R = TypeVar("R")

_MINUTE = 60.0
_DAY = 86_400.0
SERVER_IDLE_EXPIRY = 60 * _MINUTE
"""Cloud Spanner drops a session left unused for about an hour."""
VERIFY_AFTER = 55 * _MINUTE
"""An idle session unused for this long is checked (``GetSession``) before it is handed out."""
REFRESH_WITHIN = 10 * _MINUTE
"""``maintain()`` refreshes sessions that would expire within this time."""
SPREAD_PERIOD = SERVER_IDLE_EXPIRY - REFRESH_WITHIN
"""``maintain()`` spreads the refreshes of ``min_sessions`` sessions over this period."""
SPREAD_MIN_IDLE = 20 * _MINUTE
"""Sessions refreshed ahead of time to spread refreshes have been idle at least this long."""
REPLACE_AGE = 27 * _DAY
"""``maintain()`` replaces sessions this old, ahead of the server's 28-day maximum age."""
RETIRE_AGE = 27.5 * _DAY
"""``acquire()`` drops idle sessions this old: ``maintain()`` should have replaced them."""
WINDOW = 10 * _MINUTE
"""Auto-downsizing looks at the most sessions in use during each window of this length."""
ORPHAN_AFTER = 60.0
"""A claim of this process that it does not know of (a store step whose answer was lost) is
taken back once this old."""

# The steps the pool takes, read from the contract (the pool never closes a store it was given).
_REQUIRED = tuple(
    name
    for name, value in vars(Store).items()
    if callable(value) and not name.startswith("_") and name != "close"
)


@dataclasses.dataclass(frozen=True)
class MaintenanceReport:
    """What one ``maintain()`` call did, in sessions."""

    reclaimed: int = 0  # claims of dead holders (and lost claims of this process) taken back
    downsized: int = 0  # idle sessions deleted by auto-downsizing
    expired: int = 0  # idle sessions dropped because the server has dropped them already
    refreshed: int = 0  # refreshed with SELECT 1
    lost: int = 0  # found gone on the server while refreshing, and dropped
    trimmed: int = 0  # near expiry but beyond min_sessions: deleted rather than refreshed
    replaced: int = 0  # deleted for age, ahead of the server's 28-day limit
    created: int = 0  # created to bring the pool back to min_sessions


@dataclasses.dataclass
class _Held:
    token: str
    session: client.PooledSession


@dataclasses.dataclass(frozen=True)
class _Unsettled:
    """A store step that failed after its effect on the server, retried at the next call."""

    kind: Literal["release", "discard", "created"]
    name: str
    token: str
    record: SessionRecord | None = None


class _LockAdapter:
    """A user's ``lock``: ``acquire()``/``release()``, or a context manager."""

    def __init__(self, lock: Any) -> None:
        if callable(getattr(lock, "acquire", None)) and callable(getattr(lock, "release", None)):
            self._enter: Callable[[], object] = lock.acquire
            self._exit: Callable[[], object] = lock.release
        elif hasattr(lock, "__enter__") and hasattr(lock, "__exit__"):
            self._enter = lock.__enter__
            self._exit = functools.partial(lock.__exit__, None, None, None)
        else:
            raise TypeError(
                "lock must have acquire() and release() methods, or be a context manager, "
                f"not {type(lock).__name__}"
            )

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self._enter()
        try:
            yield
        finally:
            self._exit()


_POOLS: weakref.WeakSet[CacheSessionPool] = weakref.WeakSet()


def _forget_parent_state() -> None:
    for pool in list(_POOLS):
        pool._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parent_state)


def _release_at_exit(pool_ref: weakref.ref[CacheSessionPool]) -> None:
    pool = pool_ref()
    if pool is not None and pool._pid == os.getpid():
        pool._release_everything()


def _check_int(name: str, value: object, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, not {value!r}")
    return value


def _check_seconds(name: str, value: object, *, positive: bool) -> float:
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or math.isnan(value)
        or value < 0
        or (positive and value == 0)
    ):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a number of seconds {bound}, not {value!r}")
    return float(value)


class CacheSessionPool(AbstractSessionPool):
    """A session pool whose state lives in a shared store, so that many processes (workers of
    one server, hosts of one service, short-lived jobs) share one budget of sessions.

    ``max_sessions`` bounds the sessions of every process using the store for this database
    and role, counting idle, checked-out and being-created ones. ``acquire()`` hands out an
    idle session, creates one when there is room, or waits (``should_wait_for_session``) up to
    ``max_cycles_to_wait_for_session * sleep_interval_seconds`` seconds for one to be released,
    then raises :class:`~spanpool.errors.PoolTimeout`.

    A checked-out session not released nor kept alive (:meth:`keep_alive`) for
    ``reclaim_after_seconds`` may be given to another process when the pool is full; one held
    by a process of this host that no longer runs is taken back as soon as the pool is full.

    Call :meth:`maintain` regularly (every few minutes, from any one process or from all) to
    keep ``min_sessions`` sessions alive, replace old ones and downsize after bursts.
    """

    def __init__(
        self,
        store: Store,
        max_sessions: int = 500,
        min_sessions: int = 1,
        should_wait_for_session: bool = True,
        max_cycles_to_wait_for_session: int = 30,
        sleep_interval_seconds: float = 0.5,
        lock: Any = None,
        should_auto_downsize: bool = True,
        labels: dict[str, str] | None = None,
        database_role: str | None = None,
        reclaim_after_seconds: float = 1200,
        *,
        clock: Callable[[], float] = time.time,
        holder: Holder | None = None,
    ) -> None:
        super().__init__(labels=labels, database_role=database_role)
        missing = [name for name in _REQUIRED if not callable(getattr(store, name, None))]
        if missing:
            raise TypeError(
                f"store must implement spanpool.stores.Store (MemoryStore, SQLiteStore, "
                f"RedisStore); {type(store).__name__} lacks {', '.join(missing)}"
            )
        self.max_sessions = _check_int("max_sessions", max_sessions, 1)
        self.min_sessions = _check_int("min_sessions", min_sessions, 0)
        if min_sessions > max_sessions:
            raise ValueError(
                f"min_sessions ({min_sessions}) must not be greater than "
                f"max_sessions ({max_sessions})"
            )
        self.max_cycles_to_wait_for_session = _check_int(
            "max_cycles_to_wait_for_session", max_cycles_to_wait_for_session, 0
        )
        self.sleep_interval_seconds = _check_seconds(
            "sleep_interval_seconds", sleep_interval_seconds, positive=True
        )
        self.reclaim_after_seconds = _check_seconds(
            "reclaim_after_seconds", reclaim_after_seconds, positive=True
        )
        if holder is not None and not isinstance(holder, Holder):
            raise TypeError(f"holder must be a spanpool.stores.Holder, not {holder!r}")
        if not callable(clock):
            raise TypeError(f"clock must be a callable returning seconds, not {clock!r}")
        self.should_wait_for_session = bool(should_wait_for_session)
        self.should_auto_downsize = bool(should_auto_downsize)
        self._store = store
        self._lock = None if lock is None else _LockAdapter(lock)
        self._clock = clock
        self._own_holder = holder is None
        self._holder = Holder.current() if holder is None else holder
        self._pid = os.getpid()
        self._key: str | None = None
        self._mutex = threading.Lock()
        self._held: dict[str, _Held] = {}
        self._in_flight: set[str] = set()  # tokens of permits and maintenance claims
        self._unsettled: list[_Unsettled] = []
        self._last_dead_check = -math.inf
        self._last_maintain: float | None = None
        self._refresh_credit = 0.0
        self._counts: dict[str, int] = dict.fromkeys(
            (
                "sessions_created",
                "sessions_deleted",
                "sessions_reclaimed",
                "sessions_lost",
                "claims_lost",
                "requests_num",
                "requests_waiting_total",
                "requests_wait_ms",
                "requests_timeouts",
                "pings",
                "pings_failed",
            ),
            0,
        )
        _POOLS.add(self)
        atexit.register(_release_at_exit, weakref.ref(self))

    # -- binding ----------------------------------------------------------------------------

    @property
    def cache_item_pool(self) -> Store:
        """The store that holds the pool's state."""
        return self._store

    @property
    def key(self) -> str:
        """Where the store keeps this pool's state: project, instance, database and role."""
        if self._key is None:
            raise PoolUsageError("CacheSessionPool is not bound to a database: call bind()")
        return self._key

    def set_database(self, database: Any) -> None:
        """Use ``database`` for the sessions, without creating any (``bind`` also warms up)."""
        instance = database._instance
        role = self._database_role or database.database_role or ""
        key = f"{instance._client.project}/{instance.instance_id}/{database.database_id}/{role}"
        with self._mutex:
            if self._held and key != self._key:
                raise PoolUsageError(
                    f"CacheSessionPool: {len(self._held)} sessions of {self._key} are still "
                    "checked out; release them before switching to another database"
                )
            self._database = database
            self._key = key

    def bind(self, database: Any) -> None:
        """Associate the pool with ``database`` and create sessions up to ``min_sessions``
        (``instance.database(name, pool=pool)`` calls this)."""
        self.set_database(database)
        self.warmup()

    # -- checking out and in ------------------------------------------------------------------

    def acquire(self, context: str = "r") -> client.PooledSession:
        """Check a session out (``context`` is ``"r"`` or ``"rw"``; both get a session).

        Raises :class:`~spanpool.errors.PoolTimeout` (a ``queue.Empty``) when the pool stays
        at ``max_sessions``, and :class:`~spanpool.errors.StoreError` when the store fails.
        """
        if context not in ("r", "rw"):
            raise PoolUsageError(f'context must be "r" or "rw", not {context!r}')
        if not self.should_wait_for_session:
            return self._acquire(0.0, "should_wait_for_session is False")
        wait = self.max_cycles_to_wait_for_session * self.sleep_interval_seconds
        return self._acquire(
            wait,
            f"max_cycles_to_wait_for_session={self.max_cycles_to_wait_for_session} x "
            f"sleep_interval_seconds={self.sleep_interval_seconds:g}",
        )

    def get(self, timeout: float | None = None, **_: Any) -> client.PooledSession:
        """``acquire()`` for the official ``Database``; ``timeout`` (seconds, 0: don't wait)
        replaces the pool's waiting time when given."""
        if timeout is None:
            return self.acquire()
        wait = _check_seconds("timeout", timeout, positive=False)
        return self._acquire(wait, f"timeout={wait:g}")

    def _acquire(self, wait: float, why: str) -> client.PooledSession:
        """Check a session out, waiting up to ``wait`` seconds for a release when full."""
        key = self._ready()
        started = time.monotonic()
        waited = False
        self._count("requests_num")
        try:
            while True:
                now = self._clock()
                got = self._step(
                    "acquire",
                    self._store.acquire,
                    key,
                    holder=self._holder,
                    now=now,
                    max_sessions=self.max_sessions,
                    reclaim_before=now - self.reclaim_after_seconds,
                    expired_before=now - SERVER_IDLE_EXPIRY,
                    retire_before=now - RETIRE_AGE,
                )
                if got.dropped:
                    # Expired ones are gone from the server already; retired ones are deleted.
                    self._delete_records(
                        [r for r in got.dropped if r.created_at < now - RETIRE_AGE]
                    )
                if got.record is not None and got.token is not None:
                    if got.reclaimed:
                        self._count("sessions_reclaimed")
                    session = self._hold(got.record.name, got.token)
                    if got.record.last_used < now - VERIFY_AFTER and not self._still_exists(
                        session
                    ):
                        continue
                    return session
                if got.token is not None:
                    created = self._create_checked_out(key, got.token)
                    if created is not None:
                        return created
                    continue
                # The pool is full.
                if self._reclaim_dead(key, rate_limited=True):
                    continue
                remaining = started + wait - time.monotonic()
                if remaining <= 0:
                    self._count("requests_timeouts")
                    raise PoolTimeout(
                        f"CacheSessionPool {key}: all {self.max_sessions} sessions (max_sessions) "
                        f"are in use or being created; gave up after waiting "
                        f"{time.monotonic() - started:.2f}s ({why})"
                    )
                if not waited:
                    waited = True
                    self._count("requests_waiting_total")
                self._step(
                    "wait_for_release",
                    self._store.wait_for_release,
                    key,
                    min(remaining, self.sleep_interval_seconds),
                    got.releases,
                    locked=False,
                )
        finally:
            if waited:
                self._count("requests_wait_ms", round((time.monotonic() - started) * 1000))

    def _hold(self, name: str, token: str) -> client.PooledSession:
        session = client.session_for_name(
            self._database, name, self._labels, self._database_role, self
        )
        session._spanpool_pooled = True
        with self._mutex:
            self._held[name] = _Held(token, session)
        return session

    def _still_exists(self, session: client.PooledSession) -> bool:
        """Check a session idle long enough to be in doubt; drop it when the server lost it."""
        try:
            found = client.exists(session)
        except BaseException:
            self.release(session)
            raise
        if not found:
            self._count("sessions_lost")
            session._spanpool_gone = True
            self._drop_held(session)
        return found

    def _create_checked_out(self, key: str, token: str) -> client.PooledSession | None:
        """Create a session for the permit ``token`` and check it out; None when the permit
        was taken back meanwhile."""
        session: client.PooledSession = self._new_session()
        session._spanpool_pooled = True
        with self._mutex:
            self._in_flight.add(token)
        try:
            try:
                client.create(session)
            except BaseException:
                self._settle_quietly(lambda: self._store.create_failed(key, token))
                raise
            self._count("sessions_created")
            now = self._clock()
            record = SessionRecord(session.name, now, now)
            try:
                recorded = self._step(
                    "created", self._store.created, key, token, record, now=now, check_out=True
                )
            except StoreError:
                self._unsettle(_Unsettled("created", record.name, token, record))
                raise
        finally:
            with self._mutex:
                self._in_flight.discard(token)
        if not recorded:
            # The permit was taken back (the pool was cleared, or this creation took longer
            # than reclaim_after_seconds): the session has no place in the pool.
            self._delete_sessions([session])
            return None
        with self._mutex:
            self._held[session.name] = _Held(token, session)
        return session

    def release(self, session: Any) -> None:
        """Return a checked-out session to the pool (one store step).

        A session not checked out from this pool by this process, or returned twice, raises
        :class:`~spanpool.errors.NotCheckedOut`. When the store fails the session is kept
        aside and returned at the next call, and :class:`~spanpool.errors.StoreError` raises.
        """
        key = self._ready()
        held = self._take_held(session)
        if held is None:
            if isinstance(session, client.PooledSession) and session._spanpool_gone:
                return  # dropped from the pool when the server said it was gone
            self._adopt_or_refuse(session)
            return
        name = held.session.name
        if session._spanpool_gone:
            self._discard(key, name, held.token)
            return
        try:
            released = self._step(
                "release", self._store.release, key, name, held.token, now=self._clock()
            )
        except StoreError:
            self._unsettle(_Unsettled("release", name, held.token))
            raise
        if not released:
            self._count("claims_lost")
            log.warning(
                "CacheSessionPool %s: %s was reclaimed while checked out (not kept alive for "
                "%ss); call keep_alive() during long work",
                key,
                name,
                self.reclaim_after_seconds,
            )

    def _take_held(self, session: Any) -> _Held | None:
        """Forget that this process holds ``session``; None when it does not."""
        name = getattr(session, "name", None) if session is not None else None
        if not isinstance(name, str):
            return None
        with self._mutex:
            held = self._held.get(name)
            if held is None or held.session is not session:
                return None
            del self._held[name]
            return held

    def put(self, session: Any) -> None:
        """``release()`` for the official ``Database``."""
        self.release(session)

    def keep_alive(self, session: Any) -> bool:
        """Mark a checked-out session as still in use, so that it is not reclaimed (no RPC).
        False when it was reclaimed already: stop using it."""
        key = self._ready()
        with self._mutex:
            held = self._held.get(getattr(session, "name", None) or "")
        if held is None or held.session is not session:
            raise NotCheckedOut(
                f"CacheSessionPool {key}: {getattr(session, 'name', session)!r} is not checked "
                "out from this pool by this process"
            )
        alive: bool = self._step(
            "keep_alive",
            self._store.keep_alive,
            key,
            session.name,
            held.token,
            now=self._clock(),
        )
        if not alive:
            self._count("claims_lost")
        return alive

    def _check_in(self, session: Any, error: BaseException | None) -> None:
        if error is not None and client.is_session_not_found(error):
            self._session_gone(session)
        self.release(session)

    def _session_gone(self, session: Any) -> None:
        """The server no longer has ``session`` (or it was deleted): drop it from the pool
        now, never to be handed out again; returning it later is a no-op."""
        if not isinstance(session, client.PooledSession):
            return
        session._spanpool_gone = True
        try:
            if self._drop_held(session):
                self._count("sessions_lost")
        except StoreError as exc:
            # Kept aside and retried at the next call; exists() and delete() don't raise it.
            log.warning("%s", exc)

    def _drop_held(self, session: client.PooledSession) -> bool:
        """Remove a session this process holds from the pool; False when not held."""
        held = self._take_held(session)
        if held is None or self._key is None:
            return False
        self._discard(self._key, session.name, held.token)
        return True

    def _discard(self, key: str, name: str, token: str) -> None:
        try:
            self._step("discard", self._store.discard, key, name, token)
        except StoreError:
            self._unsettle(_Unsettled("discard", name, token))
            raise

    def _adopt_or_refuse(self, session: Any) -> None:
        # The official Database replaces a session the server lost with one made by
        # `pool._new_session()`, and returns that one: take it in if there is room.
        if (
            isinstance(session, client.PooledSession)
            and client.session_database(session) is self._database
            and session.session_id is not None
            and client.owner_of(session) in (None, self)
            and not session._spanpool_pooled
            and not session._spanpool_gone
        ):
            self._adopt(session)
            return
        where = getattr(client.session_database(session), "name", None)
        raise NotCheckedOut(
            f"CacheSessionPool {self._key}: {getattr(session, 'name', session)!r} is not "
            f"checked out from this pool by this process (returned twice, or it belongs to "
            f"{where or 'another pool'})"
        )

    def _adopt(self, session: client.PooledSession) -> None:
        key = self.key
        now = self._clock()
        try:
            stats = self._step("stats", self._store.stats, key)
            permits = self._step(
                "reserve",
                self._store.reserve,
                key,
                holder=self._holder,
                now=now,
                target=stats.idle + stats.in_use + stats.creating + 1,
                max_sessions=self.max_sessions,
            )
        except StoreError:
            self._delete_sessions([session])
            raise
        for extra in permits[1:]:
            self._settle_quietly(functools.partial(self._store.create_failed, key, extra))
        client.detach(session)
        session._spanpool_pooled = True
        if not permits or not self._record_idle(key, permits[0], session.name, now):
            self._delete_sessions([session])

    def _record_idle(self, key: str, token: str, name: str, now: float) -> bool:
        """Record the new session ``name`` under the permit ``token`` as idle; False when the
        permit is unknown (the caller deletes the session).

        Recorded as checked out and then released, so that a step whose answer is lost
        can be settled later: the release tells whether the session was recorded.
        """
        record = SessionRecord(name, now, now)
        with self._mutex:
            self._in_flight.add(token)
        try:
            try:
                recorded: bool = self._step(
                    "created", self._store.created, key, token, record, now=now, check_out=True
                )
            except StoreError:
                self._unsettle(_Unsettled("created", name, token, record))
                raise
            if not recorded:
                return False
            try:
                self._step("release", self._store.release, key, name, token, now=now)
            except StoreError:
                self._unsettle(_Unsettled("release", name, token))
                raise
            return True
        finally:
            with self._mutex:
                self._in_flight.discard(token)

    # -- sizing -----------------------------------------------------------------------------

    def warmup(self) -> int:
        """Create sessions (BatchCreateSessions, at most 100 per call) until the pool has
        ``min_sessions``; returns how many were created."""
        key = self._ready()
        tokens = self._step(
            "reserve",
            self._store.reserve,
            key,
            holder=self._holder,
            now=self._clock(),
            target=self.min_sessions,
            max_sessions=self.max_sessions,
        )
        return self._create_idle(key, tokens)

    def _create_idle(self, key: str, tokens: list[str]) -> int:
        if not tokens:
            return 0
        pending = list(tokens)
        with self._mutex:
            self._in_flight.update(tokens)
        recorded = 0
        guard = threading.Lock()

        def arrived(batch: list[Any]) -> None:
            nonlocal recorded
            self._count("sessions_created", len(batch))
            now = self._clock()
            for index, session in enumerate(batch):
                with guard:
                    token = pending.pop() if pending else None
                if token is None:
                    self._delete_sessions([session])
                    continue
                try:
                    ok = self._record_idle(key, token, session.name, now)
                except StoreError:
                    # This one is settled later; the rest of the batch has no place in the
                    # store: delete it rather than leave it on the server.
                    self._delete_sessions(batch[index + 1 :])
                    raise
                if ok:
                    with guard:
                        recorded += 1
                else:
                    self._delete_sessions([session])

        try:
            client.batch_create(
                self._database, len(tokens), self._labels, self._database_role, self, arrived
            )
        finally:
            for token in pending:
                self._settle_quietly(functools.partial(self._store.create_failed, key, token))
            with self._mutex:
                self._in_flight.difference_update(tokens)
        return recorded

    def downsize(self, percent: int) -> int:
        """Delete ``percent`` % (rounded up) of the idle sessions above ``min_sessions``, least
        recently used first; returns how many were removed from the pool."""
        if not isinstance(percent, int) or isinstance(percent, bool) or not 1 <= percent <= 100:
            raise ValueError(f"percent must be an integer from 1 to 100, not {percent!r}")
        key = self._ready()
        idle = self._step("stats", self._store.stats, key).idle
        count = math.ceil(max(0, idle - self.min_sessions) * percent / 100)
        if count == 0:
            return 0
        taken = self._take_idle(key, keep=self.min_sessions, limit=count, holder=self._holder)
        return self._delete_claimed(key, taken)

    def clear(self) -> bool:  # type: ignore[override]
        """Remove this pool's state from the store (and nothing else) and delete all its
        sessions, idle and checked out, on the server. True only when every delete
        succeeded; a session already gone counts as deleted."""
        key = self._ready()
        records = self._step("clear", self._store.clear, key)
        return self._delete_records(records)

    # -- maintenance ----------------------------------------------------------------------------

    def maintain(self) -> MaintenanceReport:
        """One round of upkeep, for any process to call every few minutes:

        - take back sessions held by processes of this host that no longer run;
        - auto-downsize (``should_auto_downsize``): after each 10-minute window, delete least
          recently used idle sessions down to the most that were in use during the window,
          never below ``min_sessions``;
        - drop idle sessions the server has expired; refresh (``SELECT 1``) those that would
          expire within 10 minutes, up to ``min_sessions`` sessions kept alive, and delete the
          rest; refresh a few more each call so that refreshes spread evenly over time;
        - replace sessions 27 days old, ahead of the server's 28-day limit;
        - create sessions up to ``min_sessions``.
        """
        key = self._ready()
        now = self._clock()
        reclaimed = self._reclaim_dead(key, rate_limited=False, orphans=True)
        downsized = 0
        if self.should_auto_downsize:
            high_water = self._step(
                "roll_window", self._store.roll_window, key, now=now, length=WINDOW
            )
            if high_water is not None:
                keep = max(self.min_sessions, high_water)
                downsized = self._delete_claimed(
                    key, self._take_idle(key, keep=keep, holder=self._holder)
                )
        expired = self._take_idle(key, keep=0, last_used_before=now - SERVER_IDLE_EXPIRY)
        refreshed, lost, trimmed = self._refresh_due(key, now)
        old = self._take_idle(
            key,
            keep=0,
            created_before=now - REPLACE_AGE,
            limit=max(2, math.ceil(self.min_sessions / 10)),
            holder=self._holder,
        )
        replaced = self._delete_claimed(key, old)
        created = self.warmup()
        self._last_maintain = now
        return MaintenanceReport(
            reclaimed=reclaimed,
            downsized=downsized,
            expired=len(expired),
            refreshed=refreshed,
            lost=lost,
            trimmed=trimmed,
            replaced=replaced,
            created=created,
        )

    def _take_idle(
        self, key: str, *, keep: int, limit: int = 1_000_000, **filters: Any
    ) -> list[tuple[SessionRecord, str | None]]:
        taken: list[tuple[SessionRecord, str | None]] = self._step(
            "take_idle",
            self._store.take_idle,
            key,
            limit=limit,
            keep=keep,
            now=self._clock(),
            **filters,
        )
        return taken

    def _refresh_due(self, key: str, now: float) -> tuple[int, int, int]:
        """Refresh idle sessions near expiry, keeping ``min_sessions`` alive in all; plus a
        share of the others, so that refreshes spread over time. Returns (refreshed, lost,
        trimmed)."""
        stats = self._step("stats", self._store.stats, key)
        due = self._take_idle(
            key, keep=0, last_used_before=now - SPREAD_PERIOD, holder=self._holder
        )
        # Sessions in use, being created, or idle but not near expiry stay alive anyway.
        alive = stats.idle + stats.in_use + stats.creating - len(due)
        wanted = max(0, self.min_sessions - alive)
        due.sort(key=lambda entry: entry[0].last_used, reverse=True)
        keep, trim = due[:wanted], due[wanted:]
        if self._last_maintain is not None and alive > 0:
            # Refresh min_sessions sessions per SPREAD_PERIOD ahead of time, in proportion
            # to the time since the last call, so that refreshes don't come in bursts.
            share = self.min_sessions * max(0.0, now - self._last_maintain) / SPREAD_PERIOD
            self._refresh_credit = min(self._refresh_credit + share, float(self.min_sessions))
            extra = min(math.floor(self._refresh_credit), alive)
            self._refresh_credit -= extra
            if extra > 0:
                keep += self._take_idle(
                    key,
                    keep=0,
                    limit=extra,
                    last_used_before=now - SPREAD_MIN_IDLE,
                    holder=self._holder,
                )
        with self._mutex:
            self._in_flight.update(token for _, token in keep + trim if token)
        try:
            trimmed = self._delete_claimed(key, trim)
            sessions = [
                client.session_for_name(
                    self._database, record.name, self._labels, self._database_role, None
                )
                for record, _ in keep
            ]
            outcomes = run_all(client.ping, sessions)
            refreshed = lost = 0
            for (record, token), outcome in zip(keep, outcomes, strict=True):
                assert token is not None
                if outcome is True:
                    refreshed += 1
                    self._step(
                        "release", self._store.release, key, record.name, token, now=self._clock()
                    )
                    continue
                lost += 1
                if isinstance(outcome, BaseException):
                    # Unknown state: delete it rather than keep a session in doubt.
                    self._delete_claimed(key, [(record, token)])
                else:
                    self._step("discard", self._store.discard, key, record.name, token)
        finally:
            with self._mutex:
                self._in_flight.difference_update(token for _, token in keep + trim if token)
        self._count("pings", len(keep))
        self._count("pings_failed", lost)
        return refreshed, lost, trimmed

    def _reclaim_dead(self, key: str, *, rate_limited: bool, orphans: bool = False) -> int:
        """Take back the claims of holders on this host that no longer run (and, with
        ``orphans``, claims of this process that it lost track of)."""
        if rate_limited:
            tick = time.monotonic()
            if tick - self._last_dead_check < self.sleep_interval_seconds:
                return 0
            self._last_dead_check = tick
        here = self._holder
        claims = self._step("claims", self._store.claims, key)
        with self._mutex:
            known = {held.token for held in self._held.values()} | self._in_flight
            known.update(entry.token for entry in self._unsettled)
        orphan_before = self._clock() - ORPHAN_AFTER
        dead = [
            claim.token
            for claim in claims
            if claim.holder.host == here.host
            and (
                (claim.holder.pid != here.pid and not pid_alive(claim.holder.pid))
                or (
                    orphans
                    and claim.holder == here
                    and claim.token not in known
                    and claim.since < orphan_before
                )
            )
        ]
        if not dead:
            return 0
        found: int = self._step("reclaim", self._store.reclaim, key, dead, now=self._clock())
        if found:
            log.info("CacheSessionPool %s: took back %d claims of ended processes", key, found)
            self._count("sessions_reclaimed", found)
        return found

    # -- deleting -----------------------------------------------------------------------------

    def _delete_claimed(self, key: str, taken: list[tuple[SessionRecord, str | None]]) -> int:
        """Delete sessions checked out to this process for the purpose, and only then remove
        them from the store: counted until the server no longer has them, so that the server
        never holds more than ``max_sessions``. One whose delete fails goes back to idle.
        Returns how many were deleted."""
        if not taken:
            return 0
        tokens = [token for _, token in taken if token is not None]
        with self._mutex:
            self._in_flight.update(tokens)
        try:
            sessions = [
                client.session_for_name(
                    self._database, record.name, self._labels, self._database_role, None
                )
                for record, _ in taken
            ]
            outcomes = run_all(client.delete, sessions)
            deleted = 0
            for (record, token), outcome in zip(taken, outcomes, strict=True):
                assert token is not None
                if isinstance(outcome, BaseException):
                    log.warning(
                        "CacheSessionPool %s: deleting %s failed, keeping it: %s",
                        key,
                        record.name,
                        outcome,
                    )
                    self._step(
                        "release",
                        self._store.release,
                        key,
                        record.name,
                        token,
                        now=record.last_used,  # back where it was in the LRU order
                    )
                    continue
                deleted += 1
                self._step("discard", self._store.discard, key, record.name, token)
        finally:
            with self._mutex:
                self._in_flight.difference_update(tokens)
        self._count("sessions_deleted", deleted)
        return deleted

    def _delete_records(self, records: list[SessionRecord]) -> bool:
        if not records:
            return True
        sessions = [
            client.session_for_name(
                self._database, record.name, self._labels, self._database_role, None
            )
            for record in records
        ]
        return self._delete_sessions(sessions)

    def _delete_sessions(self, sessions: list[Any]) -> bool:
        for session in sessions:
            client.detach(session)
        outcomes = run_all(client.delete, sessions)
        failed = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        self._count("sessions_deleted", len(sessions) - len(failed))
        for error in failed[:3]:
            log.warning("CacheSessionPool %s: deleting a session failed: %s", self._key, error)
        return not failed

    # -- store steps ----------------------------------------------------------------------------

    def _ready(self) -> str:
        """The pool's key, after settling store steps that failed earlier."""
        key = self._key
        if key is None:
            raise PoolUsageError(
                "CacheSessionPool is not bound to a database: pass it to "
                "instance.database(..., pool=pool), or call bind() or set_database()"
            )
        if self._unsettled:
            self._settle(key)
        return key

    def _step(
        self,
        what: str,
        method: Callable[..., R],
        *args: Any,
        locked: bool = True,
        **kwargs: Any,
    ) -> R:
        """One atomic store step (under the user's ``lock``, when given); errors of the store
        become :class:`~spanpool.errors.StoreError`."""
        try:
            if self._lock is None or not locked:
                return method(*args, **kwargs)
            with self._lock.held():
                return method(*args, **kwargs)
        except SpanpoolError:
            raise
        except Exception as exc:
            raise StoreError(
                f"CacheSessionPool {self._key}: the store failed in {what}: {exc!r}"
            ) from exc

    def _unsettle(self, entry: _Unsettled) -> None:
        with self._mutex:
            self._unsettled.append(entry)

    def _settle_quietly(self, step: Callable[[], object]) -> None:
        try:
            self._step("cleanup", step)
        except StoreError as exc:
            # A permit left behind is dropped after reclaim_after_seconds.
            log.warning("CacheSessionPool %s: %s", self._key, exc)

    def _settle(self, key: str) -> None:
        """Retry store steps that failed, so that no session stays in limbo."""
        with self._mutex:
            entries, self._unsettled = self._unsettled, []
        retry: list[_Unsettled] = []
        for index, entry in enumerate(entries):
            try:
                self._settle_one(key, entry)
            except StoreError:
                retry.extend(entries[index:])
                break
        if retry:
            with self._mutex:
                self._unsettled[:0] = retry

    def _settle_one(self, key: str, entry: _Unsettled) -> None:
        now = self._clock()
        store = self._store
        if entry.kind == "discard":
            self._step("discard", store.discard, key, entry.name, entry.token)
            return
        if self._step("release", store.release, key, entry.name, entry.token, now=now):
            return
        if entry.kind == "created":
            assert entry.record is not None
            if not self._step(
                "created", store.created, key, entry.token, entry.record, now=now, check_out=False
            ):
                # Neither recorded nor claimable any more: it has no place in the pool.
                self._delete_records([entry.record])
        # A "release" whose claim is gone: the step went through before failing, or the
        # session was reclaimed; either way it is back in the pool.

    def _release_everything(self) -> None:
        """At exit: return the sessions this process still holds, so nothing stays locked."""
        key = self._key
        if key is None:
            return
        with self._mutex:
            held, self._held = list(self._held.items()), {}
        for name, entry in held:
            kind: Literal["release", "discard"] = (
                "discard" if entry.session._spanpool_gone else "release"
            )
            self._unsettle(_Unsettled(kind, name, entry.token))
        try:
            self._settle(key)
        except Exception as exc:  # never fail interpreter exit
            log.warning("CacheSessionPool %s: returning sessions at exit failed: %s", key, exc)
        if self._unsettled:
            log.warning(
                "CacheSessionPool %s: %d sessions could not be returned at exit; they are "
                "reclaimed when the pool needs them",
                key,
                len(self._unsettled),
            )

    def _after_fork(self) -> None:
        """In a forked child: the parent's checkouts are the parent's."""
        self._mutex = threading.Lock()
        self._held = {}
        self._in_flight = set()
        self._unsettled = []
        self._pid = os.getpid()
        if self._own_holder:
            self._holder = Holder.current()

    # -- stats ----------------------------------------------------------------------------------

    def _count(self, name: str, n: int = 1) -> None:
        with self._mutex:
            self._counts[name] += n

    def store_stats(self) -> StoreStats:
        """The pool's state in the store, across every process."""
        return self._step("stats", self._store.stats, self.key)

    def get_stats(self) -> dict[str, int]:
        """Gauges across every process (``idle``, ``in_use``, ``creating``, ``high_water`` of
        the current window) and this process's counters."""
        stats = self.store_stats()
        with self._mutex:
            result = {
                "max_sessions": self.max_sessions,
                "min_sessions": self.min_sessions,
                "idle": stats.idle,
                "in_use": stats.in_use,
                "creating": stats.creating,
                "high_water": stats.high_water,
                "held_here": len(self._held),
                "unsettled": len(self._unsettled),
            }
            result.update(self._counts)
        return result

    def __repr__(self) -> str:
        return (
            f"<CacheSessionPool {self._key or '(unbound)'} max_sessions={self.max_sessions} "
            f"min_sessions={self.min_sessions} store={self._store!r}>"
        )
