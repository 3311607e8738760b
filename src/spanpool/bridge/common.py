"""What the bridge knows of google-cloud-spanner without talking to the server, the same for
both flavours: what a pooled session carries, which database and project a session belongs
to, request metadata, and whether an error means "this session is gone".

``client_async.py`` (and ``client.py``, generated from it) send the RPCs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from google.api_core import exceptions
from google.cloud.spanner_v1 import _helpers

R = TypeVar("R")

MAX_BATCH = 100
"""Cloud Spanner creates at most 100 sessions per BatchCreateSessions call."""

DELETE_TIMEOUT = 5.0
"""Seconds a pool waits for one DeleteSession, without retrying: deleting is best effort (the
server drops an unused session after an hour), and closing a pool or leaving the interpreter
must not hang on a server that is gone."""

FRESH_TRANSACTION = 8.0
"""Cloud Spanner aborts a read-write transaction left idle for about 10 s: a pre-begun
transaction older than this is not handed out."""

REGULAR_SESSIONS_ENV = {
    "GOOGLE_CLOUD_SPANNER_MULTIPLEXED_SESSIONS": "false",
    "GOOGLE_CLOUD_SPANNER_MULTIPLEXED_SESSIONS_FOR_RW": "false",
    "GOOGLE_CLOUD_SPANNER_MULTIPLEXED_SESSIONS_PARTITIONED_OPS": "false",
}
"""Environment that makes the client's ``Database`` take its sessions from the pool rather than
use multiplexed sessions."""

_SESSION_RESOURCE = "type.googleapis.com/google.spanner.v1.Session"


class PoolMember:
    """What a pooled session adds to the client's ``Session``, in both flavours: which pool it
    belongs to, when it was last used, and the transaction the pool began for it. Comes before
    ``Session`` among the bases."""

    _spanpool_owner: Any = None
    _spanpool_last_used: float = 0.0
    _spanpool_pooled: bool = False  # made by the pool itself, not by `pool._new_session()`
    _spanpool_gone: bool = False  # the server said it no longer has this session
    _spanpool_interrupted: bool = False  # a request on it was cut short by a cancellation
    _spanpool_transaction: tuple[Any, float] | None = None

    def transaction(self, *args: Any, **kwargs: Any) -> Any:
        """The transaction a pool began for this session, if still fresh; else a new one."""
        prebegun = self._spanpool_transaction
        if prebegun is not None:
            self._spanpool_transaction = None
            if has_fresh_transaction(prebegun):
                return prebegun[0]
        return super().transaction(*args, **kwargs)  # type: ignore[misc]


# -- what belongs to what -------------------------------------------------------------------------


def session_database(session: Any) -> Any:
    return getattr(session, "_database", None)


def owner_of(session: Any) -> Any:
    return getattr(session, "_spanpool_owner", None)


def detach(session: Any) -> None:
    """Forget the owner, so that deleting the session no longer reports to a pool."""
    if isinstance(session, PoolMember):
        session._spanpool_owner = None


def client_of(instance: Any) -> Any:
    """The ``Client`` an ``Instance`` of either flavour belongs to."""
    return instance._client


def emulator_host(client: Any) -> str | None:
    """The emulator host ``client`` talks to (``SPANNER_EMULATOR_HOST`` when it was made, or
    its anonymous credentials with an endpoint), None for Cloud Spanner."""
    host = getattr(client, "_emulator_host", None)
    return str(host) if host else None


def database_ids(database: Any) -> tuple[str, str, str]:
    """The project, instance and database ids of a ``Database`` of either flavour."""
    instance = database._instance
    return client_of(instance).project, instance.instance_id, database.database_id


def resource_info(database: Any) -> dict[str, Any] | None:
    """What the client reads from ``pool._resource_info`` for its metrics labels."""
    if database is None:
        return None
    project, instance, database_id = database_ids(database)
    return {"project": project, "instance": instance, "database": database_id}


def start_connecting(api: Any) -> None:
    """Have the gRPC channel of ``api`` (a ``Database``'s ``spanner_api``, of either flavour)
    connect now rather than on its first request. Nothing waits for it: gRPC connects in its
    own threads, without the GIL, while the caller goes on. Best effort: a channel of another
    kind is left to connect on first use."""
    channel = getattr(getattr(api, "transport", None), "grpc_channel", None)
    # An intercepted channel wraps the real one; the real one's core channel takes the hint
    # (grpc.aio channels through their public get_state).
    for _ in range(4):
        if channel is None:
            return
        connect = getattr(channel, "check_connectivity_state", None) or getattr(
            channel, "get_state", None
        )
        if callable(connect):
            with contextlib.suppress(Exception):
                connect(True)
            return
        channel = getattr(channel, "_channel", None)


def _metadata(database: Any) -> list[tuple[str, str]]:
    """The request metadata the client sends for ``database``."""
    metadata: list[tuple[str, str]] = _helpers._metadata_with_prefix(database.name)
    if database._route_to_leader_enabled:
        metadata.append(_helpers._metadata_with_leader_aware_routing(True))
    return metadata


@dataclasses.dataclass(frozen=True)
class ListedSession:
    """A session as ``ListSessions`` reports it: full name, labels, and the server's times
    (seconds since the epoch) of its creation and approximate last use."""

    name: str
    labels: dict[str, str]
    created_at: float
    last_used: float


# -- transactions and errors --------------------------------------------------------------------


def transaction_is_usable(transaction: Any) -> bool:
    return (
        transaction is not None
        and transaction._transaction_id is not None
        and transaction.committed is None
        and not transaction.rolled_back
    )


def has_fresh_transaction(prebegun: tuple[Any, float] | None) -> bool:
    """Whether a (transaction, begun at) pair can still be used for statements."""
    return (
        prebegun is not None
        and time.monotonic() - prebegun[1] < FRESH_TRANSACTION
        and transaction_is_usable(prebegun[0])
    )


def is_session_not_found(exc: BaseException) -> bool:
    """Whether ``exc`` says the session no longer exists on the server."""
    if not isinstance(exc, exceptions.NotFound):
        return False
    for detail in getattr(exc, "details", None) or ():
        if getattr(detail, "resource_type", None) == _SESSION_RESOURCE:
            return True
    return "Session not found" in str(exc)


def give_aware_last_use(pool: Any) -> None:
    """Give the idle sessions of an official asyncio pool an aware last-use time.

    The official 3.71 asyncio pools compare an aware datetime with the naive last-use time of
    their sessions, so their first checkout raises ``TypeError``; the benchmark does this after
    ``bind`` to measure them at all."""
    now = datetime.datetime.now(datetime.timezone.utc)
    queue = getattr(pool, "_sessions", None)
    for entry in list(getattr(queue, "_queue", ())):
        session = entry[1] if isinstance(entry, tuple) else entry
        session._last_use_time = now


def is_permission_denied(exc: BaseException) -> bool:
    """Whether ``exc`` says the caller lacks the permission for the request."""
    return isinstance(exc, exceptions.PermissionDenied)


def run_lanes(lane: Callable[[], R], count: int) -> list[R | BaseException]:
    """``lane()`` in ``count`` threads at once (the calling thread is one of them); each
    outcome is a result or the error raised."""

    def guarded() -> R | BaseException:
        try:
            return lane()
        except BaseException as exc:
            return exc

    if count <= 1:
        return [guarded()]
    with ThreadPoolExecutor(count - 1, "spanpool-create") as executor:
        others = [executor.submit(guarded) for _ in range(count - 1)]
        mine = guarded()
        return [mine, *(future.result() for future in others)]
