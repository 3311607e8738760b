"""``MultiplexedPool``: one multiplexed session per database for a whole fleet.

google-cloud-spanner 3.71 runs every operation of a ``Database`` on one *multiplexed* session
(many transactions at once on one session, never checked out, never deleted, valid 28 days).
This pool owns that session for the ``Database`` it is bound to:

- **one per key, shared**: the pools of this process share one session per (server,
  database, role), and with a ``store`` every process and host using it shares one;
- **ready before the first request**: ``bind`` starts the creation (or finds a session in the
  store, with no RPC at all), once however many threads ask; requests wait for it a bounded
  time, then see the server's error;
- **replaced once for everyone**: an answer saying the session is gone drops it (only if it
  is still the one in use: names are never reused, so a late report about an older one changes
  nothing), one successor is made under a lease in the store, and the request that hit the
  loss is sent again on it where that is safe;
- **rotated without stalls**: after ``rotate_after`` (7 days, plus up to 10 %), one holder makes
  the successor while requests go on with the old session;
- everything else (keep-alive is never needed) runs in one maintenance thread per process (one
  task per event loop), which holds no pool while it sleeps.

Operation types that the client's environment variables route to regular sessions go to
``fallback``, a regular pool bound only when the first of them arrives.

The bridge (:mod:`spanpool.bridge.multiplexed_async`) installs the pool into the ``Database``;
nothing here knows the client's objects.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import logging
import math
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from google.api_core import exceptions

from .. import _validate
from .._lifecycle import after_fork_in_child
from ..bridge import client_async, multiplexed_async
from ..cache.store import Holder, MultiplexedRecord, MultiplexedStore
from ..errors import NotCheckedOut, PoolClosed, PoolUsageError
from ..metrics import track as _track_metrics
from ..stats import (
    FALLBACK_SESSIONS,
    GENERATION,
    POOL_CREATING,
    POOL_SIZE,
    REQUESTS_SERVED,
    ROTATIONS,
    SESSION_AGE_S,
    SESSIONS_CREATED,
    SESSIONS_REPLACED,
    STORE_ERRORS,
    gauges,
)
from . import _maintenance_async
from .abstract_async import AsyncAbstractSessionPool

log = logging.getLogger("spanpool")

_DAY = 86_400.0
ROTATE_AFTER = 7 * _DAY
"""A multiplexed session is replaced by a successor after this long (plus up to 10 %)."""
ROTATE_JITTER = 0.1
USABLE_FOR = 27 * _DAY
"""Cloud Spanner keeps a multiplexed session 28 days: one this old is never used again."""
CREATE_TIMEOUT = 10.0
"""Default deadline of one CreateSession, and how long a request waits for a session."""
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 5.0
"""After a failed creation, the next may start this long after it, doubling up to the max."""
ROTATION_RETRY = 300.0
"""A failed rotation is tried again this long after."""
POLL_INTERVAL = 60.0
"""How often maintenance reads the store, to pick up a successor made by another process."""
STORE_RETRY = 5.0
"""After a store failure the pool works on its own for this long, then tries the store again."""
LOST_KEPT = 8
"""Names of lost sessions remembered per key, so that a store still naming one is not
believed."""

_STEPS = tuple(
    name for name, value in vars(MultiplexedStore).items() if name.startswith("multiplexed_")
)


class _Entry:
    """What this process knows of the multiplexed session of one key: the record in use, the
    creation in flight, the last failure. Shared by every pool of the key in the process."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.lock = threading.Lock()
        self.record: MultiplexedRecord | None = None
        self.attempt: concurrent.futures.Future[MultiplexedRecord | None] | None = None
        self.last_error: BaseException | None = None
        self.failures = 0
        self.retry_at = -math.inf  # no creation starts before this (backoff)
        self.rotate_at = math.inf
        self.poll_at = -math.inf
        self.store_down_until = -math.inf
        self.unpublished = False  # the record in use is not in the store (it was failing)
        self.lost: deque[str] = deque(maxlen=LOST_KEPT)
        self.generation = 0  # the highest seen
        self.created = 0
        self.replaced = 0
        self.rotations = 0
        self.store_errors = 0

    def forget_fork(self) -> None:
        # A forked child: the parent's lock may have been held, and its creation in flight
        # does not exist here.
        self.lock = threading.Lock()
        self.attempt = None


_UNBOUND = _Entry("")  # the entry of a pool not bound yet: no session, nothing in flight
_local_entries: dict[str, _Entry] = {}
_store_entries: weakref.WeakKeyDictionary[Any, dict[str, _Entry]] = weakref.WeakKeyDictionary()
_entries_lock = threading.Lock()


def _entry_for(store: Any, key: str) -> _Entry:
    """The process's entry for ``key`` (kept as long as its store lives; without a store, for
    the life of the process, so that a ``Database`` made after the previous one was dropped
    finds the session at once)."""
    with _entries_lock:
        entries = _local_entries if store is None else _store_entries.setdefault(store, {})
        entry = entries.get(key)
        if entry is None:
            entry = entries[key] = _Entry(key)
        return entry


def _forget_fork() -> None:
    global _entries_lock
    _entries_lock = threading.Lock()
    for entries in [_local_entries, *_store_entries.values()]:
        for entry in entries.values():
            entry.forget_fork()


after_fork_in_child(_forget_fork)


class AsyncMultiplexedPool(AsyncAbstractSessionPool):
    """The multiplexed session of a ``Database``, for the client's objects of this flavour.

    ``store``: a shared store (``MemoryStore``, ``SQLiteStore``, ``RedisStore``) through which
    every process and host using it shares one session per database and role; without one,
    the pools of this process share one. ``fallback``: the regular-session pool for operation
    types the client's environment variables route to regular sessions (an ``AsyncBurstyPool``
    when None), bound on first need. ``create_timeout``: deadline of a creation, and how long
    a request waits for a session. ``clock``: wall-clock seconds (session ages; injectable).
    """

    def __init__(
        self,
        *,
        store: Any = None,
        fallback: Any = None,
        labels: dict[str, str] | None = None,
        database_role: str | None = None,
        create_timeout: float = CREATE_TIMEOUT,
        rotate_after: float = ROTATE_AFTER,
        clock: Any = None,
        name: str | None = None,
    ) -> None:
        if labels:
            raise ValueError(
                "labels: multiplexed sessions cannot have labels (Cloud Spanner refuses them); "
                "give labels to the fallback pool instead"
            )
        super().__init__(labels=None, database_role=database_role)
        if store is not None:
            missing = [step for step in _STEPS if not callable(getattr(store, step, None))]
            if missing:
                raise TypeError(
                    "store must implement spanpool.cache.store.MultiplexedStore (MemoryStore, "
                    f"SQLiteStore, RedisStore); {type(store).__name__} lacks {', '.join(missing)}"
                )
        if fallback is not None and not all(
            callable(getattr(fallback, method, None)) for method in ("bind", "get", "put")
        ):
            raise TypeError(
                f"fallback must be a session pool (bind, get, put), not {type(fallback).__name__}"
            )
        if clock is not None and not callable(clock):
            raise TypeError(f"clock must be callable (wall-clock seconds), not {clock!r}")
        self._create_timeout = _validate.number("create_timeout", create_timeout, above=True)
        self._rotate_after = _validate.number("rotate_after", rotate_after, above=True)
        self._store: MultiplexedStore | None = store
        self._fallback = fallback
        self._fallback_bound = False
        self._fallback_binding: concurrent.futures.Future[None] | None = None
        self._clock: Callable[[], float] = clock or time.time
        self._name = name or type(self).__name__
        self._role: str | None = None
        self._entry = _UNBOUND
        self._session: Any = None  # this database's object for the record in use
        self._maintenance: Any = None
        self._closed = False
        self._served = itertools.count()
        self._served_reads = 0
        self._served_lock = threading.Lock()
        self._waiting = 0
        _track_metrics(self)

    # -- binding ------------------------------------------------------------------------------

    async def bind(self, database: Any) -> None:
        """Take over the multiplexed session of ``database``, and get it ready: from this
        process or the store when one is known (no RPC), else by starting its creation in the
        background. Returns without waiting for it."""
        self._check_open()
        if self._database is not None and self._database.name != database.name:
            raise PoolUsageError(
                f"{self._name} is already bound to {self._database.name}; use one pool per database"
            )
        self._database = database
        self._role = self._database_role or database.database_role
        entry = _entry_for(self._store, multiplexed_async.multiplexed_key(database, self._role))
        self._entry = entry
        self._session = None
        multiplexed_async.install(database, self)
        self._maintenance = _maintenance_async.maintenance()
        self._maintenance.add(self)
        if entry.record is None and self._store is not None:
            await self._read_store(entry)
        if entry.record is None:
            self._start(entry, "create")

    # -- the session, for every request -------------------------------------------------------

    async def _multiplexed_session(self) -> Any:
        # The hot path: no RPC, no lock, no store.
        session = self._session
        if session is None or session._spanpool_record is not self._entry.record:
            session = await self._wait_for_session()
        next(self._served)
        return session

    async def _wait_for_session(self) -> Any:
        self._check_open()
        entry = self._entry
        if entry is _UNBOUND:
            raise PoolUsageError(
                f"{self._name} is not bound to a database: pass it as "
                "instance.database(name, pool=pool)"
            )
        # A little longer than one creation's deadline, so that a waiter sees the server's
        # answer (or the deadline's) rather than giving up just before it.
        deadline = time.monotonic() + self._create_timeout + 1.0
        with self._served_lock:
            self._waiting += 1
        try:
            while True:
                record = entry.record
                if record is not None:
                    session = self._session
                    if session is None or session._spanpool_record is not record:
                        session = multiplexed_async.session_for(self._database, record, self)
                        self._session = session
                    return session
                self._check_open()
                future = self._start(entry, "create")
                if future is None:  # backing off after a failure: its error, at once
                    error = entry.last_error or exceptions.ServiceUnavailable(
                        "the multiplexed session could not be created"
                    )
                    raise error.with_traceback(None)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise exceptions.DeadlineExceeded(
                        f"{self._name}: no multiplexed session for {self._database.name} "
                        f"within {self._create_timeout + 1.0:g}s"
                    ) from entry.last_error
                try:
                    await _maintenance_async.wait(future, remaining)
                except TimeoutError:
                    continue  # the deadline check above answers
        finally:
            with self._served_lock:
                self._waiting -= 1

    def _start(
        self, entry: _Entry, kind: str
    ) -> concurrent.futures.Future[MultiplexedRecord | None] | None:
        """The creation in flight for ``entry``, or a new one (``kind``: ``create`` when there
        is no session, ``rotate`` for a successor while the session is fine); None while
        backing off after a failed creation."""
        with entry.lock:
            if entry.attempt is not None:
                return entry.attempt
            if kind == "create" and self._clock() < entry.retry_at:
                return None
            replacing = entry.lost[-1] if kind == "create" and entry.lost else None
            if kind == "rotate":
                if entry.record is None:
                    return None
                replacing = entry.record.name
            future: concurrent.futures.Future[MultiplexedRecord | None] = (
                concurrent.futures.Future()
            )
            entry.attempt = future
        _maintenance_async.start(self._attempt, entry, kind, replacing, future)
        return future

    async def _attempt(
        self,
        entry: _Entry,
        kind: str,
        replacing: str | None,
        future: concurrent.futures.Future[MultiplexedRecord | None],
    ) -> None:
        """One creation (or rotation) in the background; its outcome goes to ``future``, which
        requests wait on."""
        try:
            record = await self._obtain(entry, kind, replacing)
        except BaseException as exc:
            now = self._clock()
            with entry.lock:
                entry.attempt = None
                if kind == "rotate":
                    entry.rotate_at = now + ROTATION_RETRY
                else:
                    entry.failures += 1
                    entry.last_error = exc
                    delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (entry.failures - 1))
                    entry.retry_at = now + delay * random.uniform(0.8, 1.2)
            # The first failure of a streak is worth a warning; the retries that follow are not.
            quiet = kind != "rotate" and entry.failures > 1 and entry.failures % 20
            (log.debug if quiet else log.warning)(
                "%s: %s of the multiplexed session of %s failed: %s",
                self._name,
                "rotation" if kind == "rotate" else "creation",
                entry.key,
                exc,
            )
            future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        with entry.lock:
            entry.attempt = None
            if record is not None:
                replaced = kind == "create" and replacing is not None
                if self._adopt_locked(entry, record):
                    if kind == "rotate":
                        entry.rotations += 1
                    elif replaced:
                        entry.replaced += 1
                entry.failures = 0
                entry.last_error = None
                entry.retry_at = -math.inf
            elif kind == "rotate":
                entry.rotate_at = self._clock() + ROTATION_RETRY
        future.set_result(record)
        if self._maintenance is not None:
            self._maintenance.poke()

    async def _obtain(
        self, entry: _Entry, kind: str, replacing: str | None
    ) -> MultiplexedRecord | None:
        """The session to use from now on: the store's when another holder made it (no RPC),
        else one created here (under the store's lease when there is a store). None when
        rotating and another holder is at it."""
        store = self._store
        deadline = time.monotonic() + self._create_timeout
        pause = 0.02
        while True:
            token: str | None = None
            if store is not None and self._clock() >= entry.store_down_until:
                try:
                    claim = await _maintenance_async.store_step(
                        store.multiplexed_claim,
                        entry.key,
                        holder=Holder.current(),
                        now=self._clock(),
                        lease=2 * self._create_timeout + 5.0,
                        replacing=replacing,
                    )
                except Exception as exc:
                    self._store_failed(entry, exc)
                else:
                    token = claim.token
                    theirs = claim.record
                    if token is None:
                        if (
                            theirs is not None
                            and theirs.name != replacing
                            and theirs.name not in entry.lost
                            and self._usable(theirs)
                        ):
                            return theirs
                        if kind == "rotate":
                            return None
                        if time.monotonic() >= deadline:
                            raise exceptions.DeadlineExceeded(
                                f"{self._name}: another process holds the lease to create the "
                                f"multiplexed session of {entry.key} and has not published it "
                                f"within {self._create_timeout:g}s"
                            )
                        await _maintenance_async.sleep(pause)  # another holder is creating it
                        pause = min(pause * 2, 0.5)
                        continue
            return await self._create(entry, token)

    async def _create(self, entry: _Entry, token: str | None) -> MultiplexedRecord:
        store = self._store
        try:
            name = await multiplexed_async.create_multiplexed(
                self._database, self._role, self._create_timeout
            )
        except BaseException:
            if store is not None and token is not None:
                await self._quietly(store.multiplexed_abandon, entry, entry.key, token)
            raise
        created_at = self._clock()
        with entry.lock:
            entry.created += 1
            generation = entry.generation + 1
        if store is not None and token is not None:
            try:
                published = await _maintenance_async.store_step(
                    store.multiplexed_publish, entry.key, token, name=name, created_at=created_at
                )
                if published is None:  # the lease was taken over meanwhile: use theirs
                    published = await _maintenance_async.store_step(
                        store.multiplexed_get, entry.key
                    )
            except Exception as exc:
                self._store_failed(entry, exc)
            else:
                if published is not None:
                    entry.unpublished = False
                    entry.poll_at = self._clock() + POLL_INTERVAL * random.uniform(0.8, 1.2)
                    return published
        entry.unpublished = store is not None
        return MultiplexedRecord(name, created_at, generation)

    def _usable(self, record: MultiplexedRecord) -> bool:
        return self._clock() - record.created_at < USABLE_FOR

    def _adopt_locked(self, entry: _Entry, record: MultiplexedRecord) -> bool:
        """Use ``record`` from now on, unless it is the one in use or known lost."""
        current = entry.record
        if record.name in entry.lost or (current is not None and current.name == record.name):
            return False
        entry.record = record
        entry.generation = max(entry.generation, record.generation)
        span = self._rotate_after * (1.0 + random.uniform(0.0, ROTATE_JITTER))
        entry.rotate_at = record.created_at + span
        return True

    # -- losses --------------------------------------------------------------------------------

    def _lost(self, name: str) -> bool:
        """The server no longer has session ``name``: when it is the one in use, drop it and
        start its replacement (once, whoever else reports it). True when ``name`` is one of
        this pool's multiplexed sessions, in use or older."""
        entry = self._entry
        with entry.lock:
            current = entry.record
            ours = name in entry.lost or (current is not None and current.name == name)
            if current is None or current.name != name:
                return ours  # an older one: its successor is in use already
            entry.record = None
            entry.lost.append(name)
        log.info("%s: multiplexed session %s was lost on the server", self._name, name)
        self._start(entry, "create")
        return True

    def _report_lost(self, exc: BaseException) -> None:
        name = multiplexed_async.lost_session_name(exc)
        if name is not None:
            self._lost(name)

    async def _resend(self, exc: BaseException, request: Any, is_safe: Any) -> bool:
        """After ``exc`` answered ``request``: when it says the multiplexed session is gone
        and the request did nothing on the server, point the request at the successor (True:
        send it again)."""
        name = multiplexed_async.lost_session_name(exc)
        if name is None or not self._lost(name):
            return False
        if getattr(request, "session", None) != name or not is_safe(request):
            return False
        try:
            session = await self._wait_for_session()
        except Exception as error:  # no successor yet: the caller sees the original answer
            log.info("%s: no successor to resend a request on: %s", self._name, error)
            return False
        if session.name == name:
            return False
        request.session = session.name
        return True

    async def _successor_of(self, name: str) -> Any:
        """The session to use after ``name`` was lost."""
        self._lost(name)
        return await self._wait_for_session()

    # -- the store -----------------------------------------------------------------------------

    async def _read_store(self, entry: _Entry) -> None:
        store = self._store
        assert store is not None
        try:
            record = await _maintenance_async.store_step(store.multiplexed_get, entry.key)
        except Exception as exc:
            self._store_failed(entry, exc)
            return
        with entry.lock:
            # Just read: the maintenance need not read it again before its usual interval.
            entry.poll_at = self._clock() + POLL_INTERVAL * random.uniform(0.8, 1.2)
            if record is not None and self._usable(record):
                self._adopt_locked(entry, record)

    async def _sync_store(self, entry: _Entry) -> None:
        """Maintenance: pick up the successor another process made; put a session made while
        the store was failing into it, once it works again."""
        store = self._store
        assert store is not None
        try:
            stored = await _maintenance_async.store_step(store.multiplexed_get, entry.key)
            mine = entry.record
            if mine is not None and (stored is None or stored.name in entry.lost):
                claim = await _maintenance_async.store_step(
                    store.multiplexed_claim,
                    entry.key,
                    holder=Holder.current(),
                    now=self._clock(),
                    lease=2 * self._create_timeout + 5.0,
                    replacing=stored.name if stored is not None else None,
                )
                if claim.token is not None:
                    stored = await _maintenance_async.store_step(
                        store.multiplexed_publish,
                        entry.key,
                        claim.token,
                        name=mine.name,
                        created_at=mine.created_at,
                    )
                else:
                    stored = claim.record
        except Exception as exc:
            self._store_failed(entry, exc)
            return
        entry.store_down_until = -math.inf
        if stored is None:
            return
        with entry.lock:
            if entry.record is not None and entry.record.name == stored.name:
                entry.record = stored  # the same session, with the store's generation
                entry.unpublished = False
                self._session = None
            elif self._usable(stored) and self._adopt_locked(entry, stored):
                entry.unpublished = False

    def _store_failed(self, entry: _Entry, exc: BaseException) -> None:
        now = self._clock()
        with entry.lock:
            entry.store_errors += 1
            first = entry.store_down_until < now
            entry.store_down_until = now + STORE_RETRY
            entry.poll_at = min(entry.poll_at, now + STORE_RETRY)
        if first:
            log.warning(
                "%s: the store failed (%s); this process uses its own multiplexed session "
                "until the store works again",
                self._name,
                exc,
            )

    async def _quietly(self, step: Any, entry: _Entry, *args: Any) -> None:
        try:
            await _maintenance_async.store_step(step, *args)
        except Exception as exc:
            self._store_failed(entry, exc)

    # -- maintenance ---------------------------------------------------------------------------

    async def maintain(self) -> float:
        """One round of maintenance for this pool's session (the maintenance thread or task
        calls it; tests may too): retry a failed creation, read the store, start a rotation
        that is due. Returns the seconds until the next round is due."""
        entry = self._entry
        if self._closed or entry is _UNBOUND:
            return _maintenance_async.IDLE_WAIT
        now = self._clock()
        if self._store is not None and now >= entry.poll_at:
            entry.poll_at = now + POLL_INTERVAL * random.uniform(0.8, 1.2)
            if now >= entry.store_down_until and entry.attempt is None:
                await self._sync_store(entry)
        record = entry.record
        if record is None:
            if entry.attempt is None and now >= entry.retry_at:
                self._start(entry, "create")
        elif entry.attempt is None and now >= entry.rotate_at:
            if self._usable(record):
                self._start(entry, "rotate")
            else:
                self._lost(record.name)  # the server is about to drop it: replace it now
        # While a creation or rotation is in flight nothing else is due: its end pokes the
        # maintenance.
        due = [entry.poll_at] if self._store is not None else []
        if entry.attempt is None:
            due.append(entry.retry_at if entry.record is None else entry.rotate_at)
        if not due:
            return _maintenance_async.IDLE_WAIT
        return max(min(due) - float(self._clock()), 0.0)

    # -- the regular sessions ------------------------------------------------------------------

    async def _regular_pool(self) -> Any:
        """The fallback, bound to the database by the first request routed to it; requests
        arriving meanwhile wait for that binding rather than use an unbound pool."""
        if self._fallback_bound:
            return self._fallback
        with self._served_lock:
            binding = self._fallback_binding
            mine = binding is None
            if mine:
                binding = self._fallback_binding = concurrent.futures.Future()
                if self._fallback is None:
                    from .policies_async import AsyncBurstyPool

                    self._fallback = AsyncBurstyPool(database_role=self._database_role)
        assert binding is not None
        if not mine:
            await _maintenance_async.wait(binding, self._create_timeout + 1.0)
            return self._fallback
        try:
            await self._fallback.bind(self._database)
        except BaseException as exc:
            with self._served_lock:
                self._fallback_binding = None
            binding.set_exception(exc)
            raise
        self._fallback_bound = True
        binding.set_result(None)
        return self._fallback

    async def _regular_session(self) -> Any:
        self._check_open()
        pool = await self._regular_pool()
        return await pool.get()

    async def _put_regular(self, session: Any) -> None:
        pool = await self._regular_pool()
        await pool.put(session)

    def _new_session(self) -> Any:
        """A regular session object (the client asks for one after a regular session was
        lost): the fallback's."""
        if self._fallback is not None and self._fallback_bound:
            return self._fallback._new_session()
        if self._database is None:
            raise RuntimeError(f"{self._name} is not bound to a database yet")
        return client_async.new_session(self._database, {}, self._database_role, None)

    # -- the pool contract ---------------------------------------------------------------------

    async def get(self, timeout: float | None = None, **_: Any) -> Any:
        """The multiplexed session (it is never checked out: any number of callers may use it
        at once). Waits for it up to the creation deadline."""
        return await self._multiplexed_session()

    async def put(self, session: Any) -> None:
        """Nothing to do for the multiplexed session; a regular session goes back to the
        fallback."""
        if isinstance(session, multiplexed_async.MultiplexedSession):
            if session._spanpool_pool is not self:
                raise NotCheckedOut(f"{self._name}: {session.name} belongs to another pool")
            return
        await self._put_regular(session)

    async def clear(self) -> None:
        """Delete the fallback's idle regular sessions (a multiplexed session cannot be
        deleted)."""
        if self._fallback is not None and self._fallback_bound:
            await self._fallback.clear()

    async def close(self) -> None:
        """Stop using the pool: it leaves the maintenance at once (nothing to wait for), and
        the fallback's regular sessions are deleted. The multiplexed session stays on the
        server (it cannot be deleted) for the other pools of its key."""
        if self._closed:
            return
        self._closed = True
        self._session = None
        if self._maintenance is not None:
            self._maintenance.discard(self)
        if self._fallback is not None and self._fallback_bound:
            close = getattr(self._fallback, "close", None) or self._fallback.clear
            await close()

    async def __aenter__(self) -> AsyncMultiplexedPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise PoolClosed(f"{self._name} is closed")

    # -- stats ---------------------------------------------------------------------------------

    def get_stats(self) -> dict[str, int]:
        """The session in use and what happened to it, psycopg_pool style: ``session_age_s``,
        ``generation``, ``sessions_created`` (by this process), ``sessions_replaced``,
        ``rotations``, ``requests_served`` (by this pool), ``requests_waiting``,
        ``store_errors``; ``pool_size``/``pool_available`` count the multiplexed session, and
        ``fallback_sessions`` the regular ones."""
        entry = self._entry
        with self._served_lock:
            served = next(self._served) - self._served_reads
            self._served_reads += 1
            waiting = self._waiting
        record = entry.record
        stats = gauges(
            size=1 if record is not None else 0,
            available=1 if record is not None else 0,
            in_use=0,
            maximum=1,
            waiting=waiting,
        )
        stats[POOL_CREATING] = 1 if record is None and entry.attempt is not None else 0
        stats[SESSION_AGE_S] = (
            max(0, int(self._clock() - record.created_at)) if record is not None else 0
        )
        stats[GENERATION] = record.generation if record is not None else 0
        stats[REQUESTS_SERVED] = served
        stats[SESSIONS_CREATED] = entry.created
        stats[SESSIONS_REPLACED] = entry.replaced
        stats[ROTATIONS] = entry.rotations
        stats[STORE_ERRORS] = entry.store_errors
        stats[FALLBACK_SESSIONS] = 0
        if self._fallback is not None and self._fallback_bound:
            with contextlib.suppress(Exception):
                stats[FALLBACK_SESSIONS] = int(self._fallback.get_stats().get(POOL_SIZE, 0))
        return stats

    @property
    def session_name(self) -> str | None:
        """The full name of the multiplexed session in use (None while there is none)."""
        record = self._entry.record
        return record.name if record is not None else None

    def __repr__(self) -> str:
        where = self._database.name if self._database is not None else "unbound"
        return f"<{self._name} {where} session={self.session_name}>"
