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

Where each behaviour lives:

- this module: ``bind``, the request's way to the session (the hot path, and waiting for a
  creation), losses reported by the bridge, the fallback, the pool contract and stats;
- :mod:`._multiplexed_shared`: the session of one key as the process knows it (record,
  generation, sessions known lost), shared by the pools of the key;
- :mod:`._multiplexed_creation_async`: creation, replacement and rotation (single flight,
  backoff, the store's lease) and the maintenance round;
- :mod:`._multiplexed_store_async`: the steps in the shared store, and a failing store;
- :mod:`._maintenance_async`: the one maintenance thread (or task per loop) of the process;
- the bridge (:mod:`spanpool.bridge.multiplexed_async`) installs the pool into the
  ``Database``; nothing in ``pools/`` knows the client's objects.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from google.api_core import exceptions

from .. import _validate
from ..bridge import client_async, multiplexed_async
from ..cache.store import MultiplexedStore
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
from . import _multiplexed_creation_async as creation
from . import _multiplexed_store_async as shared_store
from ._multiplexed_creation_async import CREATE_TIMEOUT
from ._multiplexed_shared import ROTATE_AFTER, UNBOUND, shared_session
from .abstract_async import AsyncAbstractSessionPool

log = logging.getLogger("spanpool")


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
            steps = shared_store.STEPS
            missing = [step for step in steps if not callable(getattr(store, step, None))]
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
        self._entry = UNBOUND
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
        entry = shared_session(self._store, multiplexed_async.multiplexed_key(database, self._role))
        self._entry = entry
        self._session = None
        multiplexed_async.install(database, self)
        self._maintenance = _maintenance_async.maintenance()
        self._maintenance.add(self)
        if entry.record is None and self._store is not None:
            await shared_store.read(self, entry)
        if entry.record is None:
            creation.start(self, entry, "create")

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
        if entry is UNBOUND:
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
                future = creation.start(self, entry, "create")
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

    # -- losses --------------------------------------------------------------------------------

    def _lost(self, name: str) -> bool:
        """The server no longer has session ``name``: when it is the one in use, drop it and
        start its replacement (once, whoever else reports it). True when ``name`` is one of
        this pool's multiplexed sessions, in use or older."""
        ours, dropped = self._entry.drop(name)
        if dropped:
            log.info("%s: multiplexed session %s was lost on the server", self._name, name)
            creation.start(self, self._entry, "create")
        return ours

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

    # -- maintenance ---------------------------------------------------------------------------

    async def maintain(self) -> float:
        """One round of maintenance for this pool's session (the maintenance thread or task
        calls it; tests may too): retry a failed creation, read the store, start a rotation
        that is due. Returns the seconds until the next round is due."""
        if self._closed or self._entry is UNBOUND:
            return _maintenance_async.IDLE_WAIT
        return await creation.maintain(self, self._entry)

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
