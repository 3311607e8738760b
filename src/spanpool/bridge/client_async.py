"""The RPCs the pools send through the official client's objects: build a session object,
create sessions in batches, check, ping and delete one, begin a transaction. What does not
talk to the server is in ``common.py``. When the official client changes, this folder changes.
"""

# begin async only
# This module speaks to the client's asyncio objects (``AsyncClient``), and is the source of
# ``client.py`` (the blocking objects), which ``tools/async_to_sync.py`` generates from it.
# end async only

from __future__ import annotations

import asyncio  # async only
import contextlib
from collections.abc import Callable
from typing import Any

from google.api_core import exceptions
from google.api_core.gapic_v1.method import DEFAULT
from google.cloud.spanner_v1._async.session import Session  # async only
from google.cloud.spanner_v1.types import spanner as spanner_types

# sync: from google.cloud.spanner_v1.session import Session
from .common import (
    DELETE_TIMEOUT,
    MAX_BATCH,
    ListedSession,
    PoolMember,
    database_ids,
    detach,
    has_fresh_transaction,
    is_session_not_found,
    owner_of,
    resource_info,
    session_database,
    transaction_is_usable,
)
from .common import _metadata as _metadata

# sync: from .common import run_lanes

__all__ = [
    "DELETE_TIMEOUT",
    "MAX_BATCH",
    "ListedSession",
    "PooledSession",
    "SessionRpcs",
    "batch_create",
    "begin_transaction",
    "create",
    "database_ids",
    "delete",
    "detach",
    "exists",
    "has_fresh_transaction",
    "install",
    "is_session_not_found",
    "list_sessions",
    "new_session",
    "owner_of",
    "ping",
    "resource_info",
    "session_database",
    "session_for_name",
    "transaction_is_usable",
]

CREATE_RETRY: Any = DEFAULT
"""The retry policy of each BatchCreateSessions call (the client's own by default: about 60 s of
retries while the server is unavailable). Tests may set a shorter one."""


class PooledSession(PoolMember, Session):
    """The official ``Session``, remembering which pool it belongs to.

    The pool learns through ``exists()`` and ``delete()`` when a checked-out session is gone,
    so it can replace it instead of handing it out again.
    """

    async def run_in_transaction(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        """The client's ``run_in_transaction``; when the server has lost this session, once
        more on a fresh session of the pool (a transaction refused for that committed
        nothing), so that a lost session costs no request of ``Database.run_in_transaction``."""
        owner = self._spanpool_owner
        try:
            return await self.run_in_transaction_here(func, *args, **kwargs)
        except exceptions.NotFound as exc:
            if owner is None or not is_session_not_found(exc):
                raise
            owner._session_gone(self)  # its place goes to the fresh session
        return await owner._run_in_fresh_transaction(func, args, kwargs)

    async def run_in_transaction_here(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        """The client's ``run_in_transaction`` on this session only."""
        session: Any = super()
        try:
            return await session.run_in_transaction(func, *args, **kwargs)
        except exceptions.NotFound as exc:
            if is_session_not_found(exc):
                self._spanpool_gone = True
            raise

    async def exists(self) -> bool:
        session: Any = super()
        found = bool(await session.exists())
        if not found and self._spanpool_owner is not None:
            self._spanpool_owner._session_gone(self)
        return found

    async def delete(self) -> None:
        owner = self._spanpool_owner
        session: Any = super()
        try:
            await session.delete()
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


async def batch_create(
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

    ``on_created`` receives each batch as soon as it arrives, so a later failure loses nothing
    already created. Returns how many were created. The first call that fails (after the
    client's retries) stops the others from starting more: its error is raised once the calls
    in flight have finished, so that a server that is down fails a bind of any size as fast
    as one call.
    """
    role = role or database.database_role
    template = spanner_types.Session(labels=labels, creator_role=role or "")
    metadata = _metadata(database)
    api = database.spanner_api
    retry = CREATE_RETRY

    async def create_some(n: int) -> int:
        made = 0
        while made < n:
            request = spanner_types.BatchCreateSessionsRequest(
                database=database.name,
                session_count=min(n - made, MAX_BATCH),
                session_template=template,
            )
            response = await api.batch_create_sessions(
                request=request, metadata=metadata, retry=retry
            )
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
        return await create_some(count) if count else 0
    failed: list[BaseException] = []

    async def lane() -> int:
        """Take chunks until none is left or one failed (here or in another lane)."""
        made = 0
        while chunks and not failed:
            try:
                made += await create_some(chunks.pop())
            except BaseException as exc:
                failed.append(exc)
                raise
        return made

    lanes = min(parallelism, len(chunks))
    # begin async only
    outcomes = await asyncio.gather(*(lane() for _ in range(lanes)), return_exceptions=True)
    # end async only
    # sync: outcomes = run_lanes(lane, lanes)
    if failed:
        raise failed[0]
    return sum(outcome for outcome in outcomes if isinstance(outcome, int))


async def create(session: Session) -> None:
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
    created = await database.spanner_api.create_session(
        request=request, metadata=_metadata(database)
    )
    session._session_id = created.name.rsplit("/", 1)[-1]


async def exists(session: Session) -> bool:
    return bool(await Session.exists(session))


async def ping(session: Session) -> bool:
    """Refresh the session with ``SELECT 1``; False when the server no longer has it.

    Sent straight through the stub, as ``Session.ping`` would, without the client's tracing
    and metrics around it: pings run beside the application's work, so they should hold the
    interpreter as little as possible.
    """
    database = session._database
    request = spanner_types.ExecuteSqlRequest(session=session.name, sql="SELECT 1")
    try:
        await database.spanner_api.execute_sql(request=request, metadata=_metadata(database))
    except exceptions.NotFound as exc:
        if is_session_not_found(exc):
            return False
        raise
    return True


async def delete(session: Session) -> None:
    """Delete the session on the server; a session already gone is fine."""
    if session.session_id is None:
        return
    database = session._database
    with contextlib.suppress(exceptions.NotFound):
        await database.spanner_api.delete_session(
            name=session.name, metadata=_metadata(database), retry=None, timeout=DELETE_TIMEOUT
        )


async def list_sessions(database: Any, labels: dict[str, str]) -> list[ListedSession]:
    """The regular sessions of ``database`` that carry every one of ``labels``, all pages.

    Cloud Spanner's filter ``labels.key:value`` matches values that *contain* ``value``, so
    the labels are compared again here, exactly."""
    request = spanner_types.ListSessionsRequest(
        database=database.name,
        filter=" AND ".join(f"labels.{key}:{value}" for key, value in labels.items()),
    )
    found = []
    async for session in await database.spanner_api.list_sessions(
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


# begin async only
def _watched(name: str, *, streaming: bool = False) -> Callable[..., Any]:
    """A method of :class:`SessionRpcs` sending ``name``, which tells the pool when the
    cancellation of its task cuts the request short (for a stream: while it is read)."""

    async def method(self: SessionRpcs, request: Any = None, **kwargs: Any) -> Any:
        try:
            answer = await getattr(self._api, name)(request=request, **kwargs)
        except asyncio.CancelledError:
            self._pool._interrupted(request.session)
            raise
        return _watched_stream(answer, self._pool, request.session) if streaming else answer

    return method


async def _watched_stream(stream: Any, pool: Any, session_name: str) -> Any:
    try:
        async for item in stream:
            yield item
    except asyncio.CancelledError:
        pool._interrupted(session_name)
        raise


# end async only


class SessionRpcs:
    """The gRPC client of a ``Database`` whose sessions come from a pool, wrapped for it
    (``install``): every other attribute is the wrapped client's.

    - A ``batch()`` commit (mutations in a single-use transaction) refused because the server
      lost the session did nothing: it is sent once more, on a fresh session of the pool, and
      the pool forgets the lost one. So a lost session costs no request of
      ``Database.batch()``.
    """

    # begin async only
    # - A request cut short by the cancellation of its task may still run on the server, and
    #   end the transaction of whoever holds the session next: the pool is told, and deletes
    #   that session when it comes back rather than hand it to another task.
    # end async only

    def __init__(self, api: Any, pool: Any) -> None:
        self._api = api
        self._pool = pool

    def __getattr__(self, name: str) -> Any:
        return getattr(self._api, name)

    async def commit(self, request: Any = None, **kwargs: Any) -> Any:
        try:
            return await self._api.commit(request=request, **kwargs)
        except exceptions.NotFound as exc:
            if not (is_session_not_found(exc) and _single_use_commit(request)):
                raise
        except asyncio.CancelledError:  # async only
            self._pool._interrupted(request.session)  # async only
            raise  # async only
        self._pool._session_lost(request.session)
        fresh = await self._pool.get()
        again = type(request)(request)
        again.session = fresh.name
        try:
            response = await self._api.commit(request=again, **kwargs)
        except BaseException as exc:
            await self._pool._check_in(fresh, exc)
            raise
        await self._pool.put(fresh)
        return response

    # begin async only
    execute_sql = _watched("execute_sql")
    execute_batch_dml = _watched("execute_batch_dml")
    begin_transaction = _watched("begin_transaction")
    read = _watched("read")
    execute_streaming_sql = _watched("execute_streaming_sql", streaming=True)
    streaming_read = _watched("streaming_read", streaming=True)
    # end async only


def _single_use_commit(request: Any) -> bool:
    """A commit of mutations in a single-use transaction (``batch()``)."""
    try:
        return bool(type(request).pb(request).HasField("single_use_transaction"))
    except (AttributeError, TypeError, ValueError):
        return False


def install(database: Any, pool: Any) -> None:
    """Wrap the gRPC client of ``database`` for ``pool`` (see :class:`SessionRpcs`)."""
    api = database.spanner_api
    if isinstance(api, SessionRpcs):
        api._pool = pool
    elif database._spanner_api is api:
        database._spanner_api = SessionRpcs(api, pool)


async def begin_transaction(session: Session) -> Any:
    """A read-write transaction of ``session``, begun on the server."""
    transaction = session.transaction()
    await transaction.begin()
    return transaction
