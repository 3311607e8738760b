"""The bridge of :mod:`spanpool.bridge.client` for the official client's asyncio flavour
(``google.cloud.spanner_v1.AsyncClient``): the same functions, as coroutines, over the
asyncio ``Session`` and the asyncio gRPC stub. What does not talk to the server is shared with
the blocking bridge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from google.api_core import exceptions
from google.cloud.spanner_v1._async.session import Session
from google.cloud.spanner_v1.types import spanner as spanner_types

from .client import (
    DELETE_TIMEOUT,
    MAX_BATCH,
    PoolMember,
    detach,
    has_fresh_transaction,
    is_session_not_found,
    owner_of,
    session_database,
    transaction_is_usable,
)
from .client import _metadata as _metadata

__all__ = [
    "DELETE_TIMEOUT",
    "MAX_BATCH",
    "PooledSession",
    "batch_create",
    "begin_transaction",
    "create",
    "delete",
    "delete_at_exit",
    "detach",
    "exists",
    "has_fresh_transaction",
    "is_session_not_found",
    "new_session",
    "owner_of",
    "ping",
    "session_database",
    "transaction_is_usable",
]

log = logging.getLogger("spanpool")


class PooledSession(PoolMember, Session):
    """The official asyncio ``Session``, remembering which pool it belongs to."""

    async def run_in_transaction(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().run_in_transaction(func, *args, **kwargs)
        except exceptions.NotFound as exc:
            if is_session_not_found(exc):
                self._spanpool_gone = True
            raise

    async def exists(self) -> bool:
        found: bool = await super().exists()
        if not found and self._spanpool_owner is not None:
            self._spanpool_owner._session_gone(self)
        return found

    async def delete(self) -> None:
        owner = self._spanpool_owner
        try:
            await super().delete()
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

    ``on_created`` receives each batch as soon as it arrives. Returns how many were created;
    raises the first error once the calls in flight have finished.
    """
    role = role or database.database_role
    template = spanner_types.Session(labels=labels, creator_role=role or "")
    metadata = _metadata(database)
    api = database.spanner_api

    async def create_some(n: int) -> int:
        made = 0
        while made < n:
            request = spanner_types.BatchCreateSessionsRequest(
                database=database.name,
                session_count=min(n - made, MAX_BATCH),
                session_template=template,
            )
            response = await api.batch_create_sessions(request=request, metadata=metadata)
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
    # `parallelism` workers share the chunks, so at most that many calls are in flight.
    queue = list(chunks)

    async def worker() -> int:
        made = 0
        while queue:
            made += await create_some(queue.pop())
        return made

    outcomes = await asyncio.gather(
        *(worker() for _ in range(min(parallelism, len(chunks)))), return_exceptions=True
    )
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    if errors:
        raise errors[0]
    return sum(o for o in outcomes if isinstance(o, int))


async def create(session: Session) -> None:
    """Create ``session`` on the server with its labels and database role."""
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
    """Refresh the session with ``SELECT 1``; False when the server no longer has it (straight
    through the stub, as in the blocking bridge)."""
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


async def begin_transaction(session: Session) -> Any:
    """A read-write transaction of ``session``, begun on the server."""
    transaction = session.transaction()
    await transaction.begin()
    return transaction


def delete_at_exit(database: Any, sessions: list[Any]) -> int:
    """Delete sessions when the event loop that owned the asyncio channel is gone (at
    interpreter exit), through a blocking client made for the purpose. Best effort; returns
    how many were deleted."""
    names = [s.name for s in sessions if getattr(s, "session_id", None) is not None]
    if not names or database is None:
        return 0
    from google.cloud.spanner_v1 import Client

    try:
        async_client = database._instance._client
        client = Client(
            project=async_client.project,
            credentials=async_client.credentials,
            client_options=async_client._client_options,
            disable_builtin_metrics=True,
        )
        blocking = client.instance(database._instance.instance_id).database(database.database_id)
        api = blocking.spanner_api
        metadata = _metadata(blocking)
    except Exception as exc:
        log.warning("could not delete %d sessions at exit: %s", len(names), exc)
        return 0
    deleted = 0
    for name in names:
        try:
            # No retries, a short deadline: exit must not hang on a server that is gone.
            api.delete_session(name=name, metadata=metadata, retry=None, timeout=DELETE_TIMEOUT)
            deleted += 1
        except exceptions.NotFound:
            deleted += 1
        except Exception as exc:
            log.warning(
                "could not delete %d sessions at exit (%s): %s",
                len(names) - deleted,
                name,
                exc,
            )
            break  # the server is unreachable or failing: the rest would fail the same way
    return deleted
