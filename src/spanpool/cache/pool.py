"""``CacheSessionPool``: one budget of sessions shared by many processes through a store.

The pool's state (idle sessions, checked-out sessions, sessions being created, the downsizing
window) lives in a :mod:`spanpool.stores` store, so every process pointing at the same store
and database shares one ``max_sessions``. Each pool operation is a few atomic store steps with
Spanner RPCs between them, never during one: a store step hands out an idle session, a
*creation permit*, or nothing; the RPCs (create, check, ping, delete) follow.

This process keeps only what it holds (``_held.py``), each with the claim token that proves it,
and the sessions it leased (``_leases.py``: released here, handed out again without a store
step; ``_wants.py`` gives them back when another holder wants one). ``_checkout.py`` is the
store's road of acquire and release; ``_steps.py`` runs store steps and retries failed ones;
``_creating.py`` makes sessions under creation permits; ``maintain.py`` is the upkeep.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import _validate, stats
from ..bridge import client
from ..errors import NotCheckedOut, PoolUsageError
from ..metrics import track as _track_metrics
from ..pools.abstract import AbstractSessionPool
from ..stats import Counters, gauges
from . import _checkout, _creating, _held, _reconcile
from ._held import Holdings
from ._leases import Leases
from ._reconcile import POOL_LABEL, ReconcileReport
from ._steps import Steps
from .maintain import SERVER_IDLE_EXPIRY, WINDOW, MaintenanceReport, Upkeep
from .store import Holder, Store, StoreStats

__all__ = [
    "POOL_LABEL",
    "SERVER_IDLE_EXPIRY",
    "WINDOW",
    "CacheSessionPool",
    "MaintenanceReport",
    "ReconcileReport",
]


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

    Every session the pool creates carries the label ``spanpool-pool`` (beside ``labels``)
    naming the pool: ``pool_name``, or by default a digest of the store and the database. A
    store that lost the pool's state (a Redis without persistence that restarted, a SQLite
    file deleted) is noticed at the next step, and the pool reconciles from the server: the
    sessions it lists with that label are adopted (or deleted beyond ``max_sessions``).
    :meth:`reconcile` does the same on demand.
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
        pool_name: str | None = None,
    ) -> None:
        super().__init__(labels=labels, database_role=database_role)
        _reconcile.check_user_labels(self._labels)
        self._user_labels = self._labels
        self._pool_name = _reconcile.check_pool_name(pool_name)
        self._pool_label = ""  # set when bound
        self._steps = Steps(store, lock)
        self.max_sessions = _validate.integer("max_sessions", max_sessions, minimum=1)
        self.min_sessions = _validate.integer("min_sessions", min_sessions, minimum=0)
        if min_sessions > max_sessions:
            raise ValueError(
                f"min_sessions ({min_sessions}) must not be greater than "
                f"max_sessions ({max_sessions})"
            )
        self.max_cycles_to_wait_for_session = _validate.integer(
            "max_cycles_to_wait_for_session", max_cycles_to_wait_for_session, minimum=0
        )
        self.sleep_interval_seconds = _validate.number(
            "sleep_interval_seconds", sleep_interval_seconds, above=True
        )
        self._reclaim_after = _validate.number(
            "reclaim_after_seconds", reclaim_after_seconds, above=True
        )
        if holder is not None and not isinstance(holder, Holder):
            raise TypeError(f"holder must be a spanpool.stores.Holder, not {holder!r}")
        self._clock = _validate.callable_("clock", clock, "a callable returning seconds")
        self.should_wait_for_session = bool(should_wait_for_session)
        self.should_auto_downsize = bool(should_auto_downsize)
        self._store = store
        self._own_holder = holder is None
        self._holder = Holder.current() if holder is None else holder
        self._key: str | None = None
        self._mutex = threading.Lock()  # the one lock of the warm road (see _leases.py)
        self._holdings = Holdings(self._mutex)
        self._upkeep = Upkeep(self)
        self._leases = Leases(self, self._holdings)
        self._leases.fresh_for = self._reclaim_after / 20
        self._counters = Counters(
            (
                stats.SESSIONS_CREATED,
                stats.SESSIONS_DELETED,
                stats.SESSIONS_RECLAIMED,
                stats.SESSIONS_REPLACED,
                stats.CLAIMS_LOST,
                stats.REQUESTS_NUM,
                stats.REQUESTS_WAITING_TOTAL,
                stats.REQUESTS_WAIT_MS,
                stats.REQUESTS_TIMEOUTS,
                stats.PINGS,
                stats.PINGS_FAILED,
            )
        )
        self._count = self._counters.add
        before_close = getattr(store, "before_close", None)
        if callable(before_close):
            before_close(self._store_closing)
        _held.track(self)
        _track_metrics(self)

    @property
    def reclaim_after_seconds(self) -> float:
        """How long a checked-out session may go unreleased and not kept alive before another
        process may take it when the pool is full."""
        return self._reclaim_after

    @reclaim_after_seconds.setter
    def reclaim_after_seconds(self, value: float) -> None:
        self._reclaim_after = _validate.number("reclaim_after_seconds", value, above=True)
        self._leases.fresh_for = self._reclaim_after / 20

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
        project, instance, database_id = client.database_ids(database)
        role = self._database_role or database.database_role or ""
        key = f"{project}/{instance}/{database_id}/{role}"
        if key != self._key:
            self._leases.give_back_all(self)
        with self._mutex:
            if self._holdings and key != self._key:
                raise PoolUsageError(
                    f"CacheSessionPool: {len(self._holdings)} sessions of {self._key} are still "
                    "checked out; release them before switching to another database"
                )
            self._database = database
            self._key = self._steps.key = key
            self._pool_label = _reconcile.label_value(self._pool_name, self._store, key)
            self._labels = {**self._user_labels, POOL_LABEL: self._pool_label}

    def bind(self, database: Any) -> None:
        """Associate the pool with ``database`` and create sessions up to ``min_sessions``
        (``instance.database(name, pool=pool)`` calls this)."""
        self.set_database(database)
        self.warmup()

    def _ready(self) -> str:
        """The pool's key, after settling store steps that failed earlier."""
        key = self._key
        if key is None:
            raise PoolUsageError(
                "CacheSessionPool is not bound to a database: pass it to "
                "instance.database(..., pool=pool), or call bind() or set_database()"
            )
        if self._steps.pending:
            self._steps.settle(key, self._clock, self._upkeep.delete_records)
        return key

    # -- checking out -----------------------------------------------------------------------

    def acquire(self, context: str = "r") -> client.PooledSession:
        """Check a session out (``context`` is ``"r"`` or ``"rw"``; both get a session).

        Raises :class:`~spanpool.errors.PoolTimeout` (a ``queue.Empty``) when the pool stays
        at ``max_sessions``, and :class:`~spanpool.errors.StoreError` when the store fails.
        """
        if context != "r" and context != "rw":
            raise PoolUsageError(f'context must be "r" or "rw", not {context!r}')
        session = self._leases.check_out()  # a warm checkout: no store step
        if session is not None:
            return session
        if not self.should_wait_for_session:
            return _checkout.acquire(self, 0.0, None)
        wait = self.max_cycles_to_wait_for_session * self.sleep_interval_seconds
        return _checkout.acquire(self, wait, None)

    def get(self, timeout: float | None = None, **_: Any) -> client.PooledSession:
        """``acquire()`` for the official ``Database``; ``timeout`` (seconds, 0: don't wait)
        replaces the pool's waiting time when given."""
        if timeout is None:
            return self.acquire()
        wait = _validate.timeout("timeout", timeout)
        if wait is None:
            return self.acquire()
        session = self._leases.check_out()
        return session if session is not None else _checkout.acquire(self, wait, wait)

    def _session(self, name: str, owner: Any = None) -> client.PooledSession:
        """A session object for the existing session ``name``."""
        return client.session_for_name(
            self._database, name, self._labels, self._database_role, owner
        )

    # -- checking in ------------------------------------------------------------------------

    def release(self, session: Any) -> None:
        """Return a checked-out session to the pool: parked in this process while nobody
        waits for one (no store step), else one store step.

        A session not checked out from this pool by this process, or returned twice, raises
        :class:`~spanpool.errors.NotCheckedOut`. When the store fails the session is kept
        aside and returned at the next call, and :class:`~spanpool.errors.StoreError` raises.
        """
        if not self._leases.check_in(session):
            _checkout.release(self, session)

    def put(self, session: Any) -> None:
        """``release()`` for the official ``Database``."""
        if not self._leases.check_in(session):
            _checkout.release(self, session)

    def keep_alive(self, session: Any) -> bool:
        """Mark a checked-out session as still in use, so that it is not reclaimed (no RPC).
        False when it was reclaimed already: stop using it."""
        key = self._ready()
        held = self._holdings.get(session)
        if held is None:
            raise NotCheckedOut(
                f"CacheSessionPool {key}: {getattr(session, 'name', session)!r} is not checked "
                "out from this pool by this process"
            )
        now = self._clock()
        alive: bool = self._steps.run(
            "keep_alive", self._store.keep_alive, key, session.name, held.token, now=now
        )
        if alive:
            held.confirmed_at = now  # under the caller's use: not parked meanwhile
        else:
            self._count(stats.CLAIMS_LOST)
        return alive

    def _check_in(self, session: Any, error: BaseException | None) -> None:
        if error is not None and client.is_session_not_found(error):
            self._session_gone(session)
        self.release(session)

    def _session_gone(self, session: Any) -> None:
        """The server no longer has ``session`` (or it was deleted): drop it from the pool
        now, never to be handed out again; returning it later is a no-op."""
        _held.session_gone(self, session)

    # -- sizing and upkeep ------------------------------------------------------------------

    def warmup(self) -> int:
        """Create sessions (BatchCreateSessions, at most 100 per call) until the pool has
        ``min_sessions``; returns how many were created."""
        key = self._ready()
        # A store without the pool's epoch grants no permit before reconciling.
        _reconcile.reconcile(self, key, force=False)
        tokens = self._steps.run(
            "reserve",
            self._store.reserve,
            key,
            holder=self._holder,
            now=self._clock(),
            target=self.min_sessions,
            max_sessions=self.max_sessions,
        )
        return _creating.create_idle(self, key, tokens)

    def downsize(self, percent: int) -> int:
        """Delete ``percent`` % (rounded up) of the idle sessions above ``min_sessions``, least
        recently used first; returns how many were removed from the pool."""
        percent = _validate.integer("percent", percent, minimum=1, maximum=100)
        key = self._ready()
        self._leases.give_back_all(self)
        idle = self._steps.run("stats", self._store.stats, key).idle
        count = math.ceil(max(0, idle - self.min_sessions) * percent / 100)
        if count == 0:
            return 0
        taken = self._upkeep.take_idle(key, self.min_sessions, limit=count, mine=True)
        return self._upkeep.delete_claimed(key, taken)

    def clear(self) -> bool:  # type: ignore[override]
        """Remove this pool's state from the store (and nothing else) and delete all its
        sessions, idle and checked out, on the server, then any other session the server
        lists with the pool's label (one the store did not know of), retrying deletes that
        failed. True only when the server lists none of the pool's sessions afterwards (when
        the server refuses to list them: when every delete succeeded)."""
        key = self._ready()
        self._leases.acquired(spare=0, wants=-1)  # what is held now goes back to the store
        self._leases.take_all()  # deleted below with the rest
        records = self._steps.run("clear", self._store.clear, key)
        return _reconcile.delete_listed(self, self._upkeep.delete_records(records))

    def reconcile(self) -> ReconcileReport | None:
        """Settle the store with the server now: list the sessions that carry this pool's
        label, adopt those the store does not know of (idle, or held by nobody for a minute
        when the server saw them used within the last one), and delete those beyond
        ``max_sessions``. The pool does it by itself when the store lost its state; call it
        after restoring a store from a backup, or after a Redis failover that may have lost
        the last writes. None when another process is reconciling at the moment."""
        return _reconcile.reconcile(self, self._ready(), force=True)

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
        self._leases.give_back_all(self)
        return self._upkeep.maintain(key)

    def _store_closing(self) -> None:
        """The store is being closed: give back the leased sessions (and retry the steps that
        failed) while it can take them, and lease nothing more."""
        _held.before_store_closes(self)

    def _after_fork(self) -> None:
        _held.forget_parent(self)

    # -- stats ----------------------------------------------------------------------------------

    def store_stats(self) -> StoreStats:
        """The pool's state in the store, across every process."""
        return self._steps.run("stats", self._store.stats, self.key)

    def _gauges(self) -> dict[str, int]:
        """Sessions across every process using the store, and this process's share."""
        with self._leases.returning:  # parked sessions on their way back count once
            state = self.store_stats()
            parked = len(self._leases.parked)  # checked out to this process, but idle here
        result = gauges(
            size=state.idle + state.in_use,
            available=state.idle + parked,
            in_use=state.in_use - parked,
            maximum=self.max_sessions,
            waiting=self._leases.waiting,
        )
        result[stats.POOL_MIN] = self.min_sessions
        result[stats.POOL_CREATING] = state.creating
        result[stats.HIGH_WATER] = state.high_water
        result[stats.HELD_HERE] = len(self._holdings)
        result[stats.UNSETTLED] = self._steps.unsettled
        return result

    def get_stats(self) -> dict[str, int]:
        """The common gauges across every process (``pool_size``, ``pool_available``,
        ``pool_in_use``, ``pool_max``; ``requests_waiting`` in this process), the shared
        pool's own (``pool_min``, ``pool_creating``, ``high_water`` of the current window,
        ``held_here``, ``unsettled``), and this process's counters."""
        return {**self._gauges(), **self._counts(reset=False)}

    def pop_stats(self) -> dict[str, int]:
        """:meth:`get_stats`, then reset the counters."""
        return {**self._gauges(), **self._counts(reset=True)}

    def _counts(self, *, reset: bool) -> dict[str, int]:
        # Warm checkouts are counted by the leases under the pool's lock, not one by one here.
        served = self._leases.pop_served(reset)
        counts = self._counters.pop() if reset else self._counters.snapshot()
        counts[stats.REQUESTS_NUM] += served
        return counts

    def __repr__(self) -> str:
        return (
            f"<CacheSessionPool {self._key or '(unbound)'} max_sessions={self.max_sessions} "
            f"min_sessions={self.min_sessions} store={self._store!r}>"
        )
