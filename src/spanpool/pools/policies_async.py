"""The pools of the official client, as small policies over :class:`AsyncManagedPool`.

Each takes the official pool's arguments, its own extras, then by keyword the
:class:`~.base_async.PoolOptions` every pool takes (``clock``, ``leak_threshold``,
``maintenance``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .. import _validate
from ..bridge import client_async
from .base_async import AsyncManagedPool

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .base_async import PoolOptions

_MINUTE = 60.0
_SERVER_IDLE_EXPIRY = 3600.0
"""Cloud Spanner drops a session left unused for about an hour."""


class AsyncBurstyPool(AsyncManagedPool):
    """Creates a session instead of waiting when empty; deletes a returned session instead
    of keeping it when ``target_size`` are already idle.

    Unlike the official pool it asks the server nothing on a warm checkout: only a session
    idle for ``max_age_minutes`` is checked (``GetSession``) before it is handed out.
    """

    def __init__(
        self,
        target_size: int = 10,
        labels: dict[str, str] | None = None,
        database_role: str | None = None,
        *,
        max_age_minutes: float = 55,
        **options: Unpack[PoolOptions],
    ) -> None:
        target_size = _validate.integer("target_size", target_size, minimum=1)
        super().__init__(
            size=None,
            fill=False,
            default_timeout=0,
            max_age=_max_age(max_age_minutes),
            keepalive_interval=None,
            labels=labels,
            database_role=database_role,
            **options,
        )
        self.target_size = self._max_idle = target_size


class AsyncFixedSizePool(AsyncManagedPool):
    """``size`` sessions created at ``bind``; ``get`` waits up to ``default_timeout`` seconds
    (first come, first served) and then raises :class:`~spanpool.errors.PoolTimeout`.

    A session idle for ``max_age_minutes`` is checked before it is handed out and replaced if
    the server no longer has it (0: check every time).
    """

    def __init__(
        self,
        size: int = 10,
        default_timeout: float = 10,
        labels: dict[str, str] | None = None,
        database_role: str | None = None,
        max_age_minutes: float = 55,
        *,
        keepalive_minutes: float = 50,
        **options: Unpack[PoolOptions],
    ) -> None:
        super().__init__(
            size=_validate.integer("size", size, minimum=1),
            fill=True,
            default_timeout=default_timeout,
            max_age=_max_age(max_age_minutes),
            keepalive_interval=_MINUTE
            * _validate.number("keepalive_minutes", keepalive_minutes, unit="minutes", above=True),
            labels=labels,
            database_role=database_role,
            **options,
        )


class AsyncPingingPool(AsyncManagedPool):
    """``size`` sessions handed out least recently used first; :meth:`ping` refreshes those
    idle for ``ping_interval`` seconds and replaces those the server dropped.

    Call ``ping()`` from a background thread, or pass ``maintenance=True`` (or call
    :meth:`start_maintenance`) to have the pool run one that spreads the pings over the
    interval.
    """

    order = "lru"

    def __init__(
        self,
        size: int = 10,
        default_timeout: float = 10,
        ping_interval: float = 3000,
        labels: dict[str, str] | None = None,
        database_role: str | None = None,
        **options: Unpack[PoolOptions],
    ) -> None:
        ping_interval = _validate.number("ping_interval", ping_interval, above=True)
        super().__init__(
            size=_validate.integer("size", size, minimum=1),
            fill=True,
            default_timeout=default_timeout,
            max_age=_SERVER_IDLE_EXPIRY - 5 * _MINUTE,
            keepalive_interval=ping_interval,
            labels=labels,
            database_role=database_role,
            **options,
        )
        self.ping_interval = ping_interval


class AsyncTransactionPingingPool(AsyncPingingPool):
    """A :class:`PingingPool` whose idle sessions carry a begun read-write transaction.

    ``session.transaction()`` on a checked-out session returns that transaction, so the
    first statement needs no ``BeginTransaction`` round trip. A session returned after its
    transaction committed or rolled back is *pending*: :meth:`begin_pending_transactions`
    (called by :meth:`ping` and by the maintenance worker) begins a new one for it.

    Cloud Spanner aborts a read-write transaction left idle for about 10 s, so a transaction
    begun more than 8 s before it is used is not handed out: ``session.transaction()`` then
    returns a new transaction, which begins with its first statement. Nor is one handed out
    after anything else ran on its session (a ``batch()``, a snapshot, partitioned DML begin
    transactions of their own, which end it on the server): a session comes back without its
    pre-begun transaction unless that was used. A user never gets a dead transaction. Pending
    sessions are still handed out when no other is idle, rather than making callers wait.
    """

    async def bind(self, database: Any) -> None:
        await super().bind(database)
        await self.begin_pending_transactions()

    async def begin_pending_transactions(self) -> int:
        """Begin a transaction for each idle session that has none; returns how many."""
        return await self._begin_pending(keep=0)

    async def _begin_pending(self, keep: int) -> int:
        pending = self._core.take_idle(
            1_000_000, lambda session, _: not _has_fresh_transaction(session), keep=keep
        )
        if not pending:
            return 0
        outcomes = await self._upkeep.run_on_taken(client_async.begin_transaction, pending)
        begun = 0
        doomed = []
        for session, outcome in zip(pending, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if client_async.is_session_not_found(outcome):
                    self._core.discard(session)
                    self._count_replaced()
                    continue
            else:
                session._spanpool_transaction = (outcome, time.monotonic())
                begun += 1
            if not self._core.return_checked(session, refreshed=False):
                doomed.append(session)
        await self._rpcs.delete_all(doomed)
        return begun

    async def ping(self) -> None:
        await super().ping()
        await self._begin_pending(keep=1)

    async def maintain(self) -> None:
        await super().maintain()
        if not self._core.closed:
            await self._begin_pending(keep=1)


def _max_age(max_age_minutes: object) -> float:
    """``max_age_minutes`` in seconds (inf: never check a session before handing it out)."""
    minutes = _validate.number("max_age_minutes", max_age_minutes, unit="minutes", infinite=True)
    return minutes * _MINUTE


def _has_fresh_transaction(session: Any) -> bool:
    return client_async.has_fresh_transaction(getattr(session, "_spanpool_transaction", None))
