"""The one module that knows google-cloud-spanner's objects and private fields.

Everything the pools ask of Spanner goes through here: build a session object, create
sessions in batches, check, ping and delete one, begin a transaction, and tell whether an
error means "this session is gone". When the official client changes, this file changes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from google.api_core import exceptions
from google.cloud.spanner_v1 import _helpers
from google.cloud.spanner_v1.session import Session
from google.cloud.spanner_v1.types import spanner as spanner_types

log = logging.getLogger("spanpool")

MAX_BATCH = 100
"""Cloud Spanner creates at most 100 sessions per BatchCreateSessions call."""

_SESSION_RESOURCE = "type.googleapis.com/google.spanner.v1.Session"

REGULAR_SESSIONS_ENV = {
    "GOOGLE_CLOUD_SPANNER_MULTIPLEXED_SESSIONS": "false",
    "GOOGLE_CLOUD_SPANNER_MULTIPLEXED_SESSIONS_FOR_RW": "false",
    "GOOGLE_CLOUD_SPANNER_MULTIPLEXED_SESSIONS_PARTITIONED_OPS": "false",
}
"""Environment that makes the client's ``Database`` take its sessions from the pool rather than
use multiplexed sessions."""

FRESH_TRANSACTION = 8.0
"""Cloud Spanner aborts a read-write transaction left idle for about 10 s: a pre-begun
transaction older than this is not handed out."""


class PoolMember:
    """What a pooled session adds to the client's ``Session``, in both the blocking and the
    asyncio flavour: which pool it belongs to, when it was last used, and the transaction the
    pool began for it. Comes before ``Session`` among the bases."""

    _spanpool_owner: Any = None
    _spanpool_last_used: float = 0.0
    _spanpool_pooled: bool = False  # made by the pool itself, not by `pool._new_session()`
    _spanpool_gone: bool = False  # the server said it no longer has this session
    _spanpool_transaction: tuple[Any, float] | None = None

    def transaction(self, *args: Any, **kwargs: Any) -> Any:
        """The transaction a pool began for this session, if still fresh; else a new one."""
        prebegun = self._spanpool_transaction
        if prebegun is not None:
            self._spanpool_transaction = None
            if has_fresh_transaction(prebegun):
                return prebegun[0]
        return super().transaction(*args, **kwargs)  # type: ignore[misc]


class PooledSession(PoolMember, Session):
    """The official ``Session``, remembering which pool it belongs to.

    The pool learns through ``exists()`` and ``delete()`` when a checked-out session is gone,
    so it can replace it instead of handing it out again.
    """

    def run_in_transaction(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().run_in_transaction(func, *args, **kwargs)  # type: ignore[no-untyped-call]
        except exceptions.NotFound as exc:
            if is_session_not_found(exc):
                self._spanpool_gone = True
            raise

    def exists(self) -> bool:
        found: bool = super().exists()  # type: ignore[no-untyped-call]
        if not found and self._spanpool_owner is not None:
            self._spanpool_owner._session_gone(self)
        return found

    def delete(self) -> None:
        owner = self._spanpool_owner
        try:
            super().delete()  # type: ignore[no-untyped-call]
        except exceptions.NotFound:
            pass
        finally:
            if owner is not None:
                owner._session_gone(self)


def new_session(database: Any, labels: dict[str, str], role: str | None, owner: Any) -> Session:
    """An uncreated session object for ``database`` with the pool's labels and role."""
    role = role or database.database_role
    session = PooledSession(database=database, labels=labels, database_role=role)  # type: ignore[no-untyped-call]
    session._spanpool_owner = owner
    return session


def session_for_name(
    database: Any, name: str, labels: dict[str, str], role: str | None, owner: Any
) -> PooledSession:
    """A session object for the existing session ``name`` (its full resource name), e.g. one
    that another process created and a shared store handed to this one."""
    session = new_session(database, labels, role, owner)
    assert isinstance(session, PooledSession)
    session._session_id = name.rsplit("/", 1)[-1]
    return session


def session_database(session: Any) -> Any:
    return getattr(session, "_database", None)


def owner_of(session: Any) -> Any:
    return getattr(session, "_spanpool_owner", None)


def detach(session: Any) -> None:
    """Forget the owner, so that deleting the session no longer reports to a pool."""
    if isinstance(session, PooledSession):
        session._spanpool_owner = None


def _metadata(database: Any) -> list[tuple[str, str]]:
    metadata: list[tuple[str, str]] = _helpers._metadata_with_prefix(database.name)
    if database._route_to_leader_enabled:
        metadata.append(_helpers._metadata_with_leader_aware_routing(True))
    return metadata


def batch_create(
    database: Any,
    count: int,
    labels: dict[str, str],
    role: str | None,
    owner: Any,
    on_created: Callable[[list[Session]], None],
    *,
    parallelism: int = 4,
) -> int:
    """Create ``count`` sessions with BatchCreateSessions, at most 100 per call, with up to
    ``parallelism`` calls in flight, looping when the server returns fewer than asked.

    ``on_created`` receives each batch as soon as it arrives, so a later failure loses
    nothing already created. Returns how many were created; raises the first error after
    the calls in flight have finished.
    """
    role = role or database.database_role
    template = spanner_types.Session(labels=labels, creator_role=role or "")
    metadata = _metadata(database)
    api = database.spanner_api

    def create(n: int) -> int:
        made = 0
        while made < n:
            request = spanner_types.BatchCreateSessionsRequest(
                database=database.name,
                session_count=min(n - made, MAX_BATCH),
                session_template=template,
            )
            response = api.batch_create_sessions(request=request, metadata=metadata)
            if not response.session:
                raise RuntimeError("BatchCreateSessions returned no session")
            batch = []
            for session_pb in spanner_types.BatchCreateSessionsResponse.pb(response).session:
                session = new_session(database, labels, role, owner)
                session._session_id = session_pb.name.rsplit("/", 1)[-1]
                batch.append(session)
            on_created(batch)
            made += len(batch)
        return made

    chunks = [MAX_BATCH] * (count // MAX_BATCH) + ([count % MAX_BATCH] if count % MAX_BATCH else [])
    if len(chunks) <= 1:
        return create(count) if count else 0
    created = 0
    first_error: BaseException | None = None
    with ThreadPoolExecutor(min(parallelism, len(chunks)), "spanpool-create") as executor:
        for future in [executor.submit(create, n) for n in chunks]:
            try:
                created += future.result()
            except BaseException as exc:  # keep waiting for the others; raise the first
                first_error = first_error or exc
    if first_error is not None:
        raise first_error
    return created


def create(session: Session) -> None:
    """Create ``session`` on the server with its labels and database role.

    ``Session.create`` of the client sends the database's role, not the session's.
    """
    database = session._database
    request = spanner_types.CreateSessionRequest(
        database=database.name,
        session=spanner_types.Session(
            labels=session.labels, creator_role=session.database_role or ""
        ),
    )
    created = database.spanner_api.create_session(request=request, metadata=_metadata(database))
    session._session_id = created.name.rsplit("/", 1)[-1]


def exists(session: Session) -> bool:
    return bool(Session.exists(session))


def ping(session: Session) -> bool:
    """Refresh the session with ``SELECT 1``; False when the server no longer has it.

    Sent straight through the stub, as ``Session.ping`` would, without the client's tracing
    and metrics around it: pings run beside the application's threads, so they should hold
    the interpreter as little as possible.
    """
    database = session._database
    request = spanner_types.ExecuteSqlRequest(session=session.name, sql="SELECT 1")
    try:
        database.spanner_api.execute_sql(request=request, metadata=_metadata(database))
    except exceptions.NotFound as exc:
        if is_session_not_found(exc):
            return False
        raise
    return True


DELETE_TIMEOUT = 5.0
"""Seconds a pool waits for one DeleteSession, without retrying: deleting is best effort (the
server drops an unused session after an hour), and closing a pool or leaving the interpreter
must not hang on a server that is gone."""


def delete(session: Session) -> None:
    """Delete the session on the server; a session already gone is fine."""
    if session.session_id is None:
        return
    database = session._database
    with contextlib.suppress(exceptions.NotFound):
        database.spanner_api.delete_session(
            name=session.name, metadata=_metadata(database), retry=None, timeout=DELETE_TIMEOUT
        )


@dataclasses.dataclass(frozen=True)
class ListedSession:
    """A session as ``ListSessions`` reports it: full name, labels, and the server's times
    (seconds since the epoch) of its creation and approximate last use."""

    name: str
    labels: dict[str, str]
    created_at: float
    last_used: float


def list_sessions(database: Any, labels: dict[str, str]) -> list[ListedSession]:
    """The regular sessions of ``database`` that carry every one of ``labels``, all pages.

    Cloud Spanner's filter ``labels.key:value`` matches values that *contain* ``value``, so
    the labels are compared again here, exactly."""
    request = spanner_types.ListSessionsRequest(
        database=database.name,
        filter=" AND ".join(f"labels.{key}:{value}" for key, value in labels.items()),
    )
    found = []
    for session in database.spanner_api.list_sessions(
        request=request, metadata=_metadata(database)
    ):
        have = dict(session.labels)
        if session.multiplexed or any(have.get(k) != v for k, v in labels.items()):
            continue
        created = session.create_time.timestamp()
        last_used = session.approximate_last_use_time
        found.append(
            ListedSession(
                session.name,
                have,
                created,
                last_used.timestamp() if last_used else created,
            )
        )
    return found


def begin_transaction(session: Session) -> Any:
    """A read-write transaction of ``session``, begun on the server."""
    transaction = session.transaction()
    transaction.begin()
    return transaction


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
