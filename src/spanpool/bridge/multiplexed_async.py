"""How a ``MultiplexedPool`` takes over the multiplexed session of the official client's
``Database``.

``install(database, pool)``, called by the pool's ``bind``, changes two things of the
``Database``, both private fields that only this module knows:

- ``database._sessions_manager``, through which every operation of the ``Database`` gets and
  returns its session (snapshots, ``batch()``, ``run_in_transaction``, partitioned DML, batch
  snapshots, ``mutation_groups()``), becomes a :class:`SessionSource`: the pool's multiplexed
  session for the operation types the client's environment variables route to multiplexed
  sessions, the pool's regular-session fallback for the others. The client's own
  ``DatabaseSessionsManager`` has not done anything yet at that point (it creates its session
  on the first request), so nothing of it is left running.
- ``database._spanner_api``, the gRPC client every request goes through, is wrapped
  (:class:`SpannerApi`): an answer saying that one of the pool's multiplexed sessions is gone
  tells the pool at once, and a request that cannot have done anything on the server yet is
  sent again on the successor. Its channel starts connecting at once, so that the first
  request does not wait for the connection either.
"""

# The asyncio flavour; ``multiplexed.py`` is generated from this file.  # async only

from __future__ import annotations

import re
from typing import Any

from google.api_core import exceptions
from google.cloud.spanner_v1.types import spanner as spanner_types

from .client_async import _metadata
from .common import client_of, emulator_host, start_connecting
from .routing import forces_multiplexed, uses_multiplexed

# isort: off
# fmt: off
from google.cloud.spanner_v1._async.session import Session  # sync: from google.cloud.spanner_v1.session import Session
# fmt: on
# isort: on

__all__ = [
    "MultiplexedSession",
    "SessionSource",
    "SpannerApi",
    "create_multiplexed",
    "install",
    "lost_session_name",
    "multiplexed_key",
    "session_for",
]

_SESSION_RESOURCE = "type.googleapis.com/google.spanner.v1.Session"
_NAME_IN_MESSAGE = re.compile(r"Session not found: (projects/[^\s,]+/sessions/[^\s,]+)")
_END = object()

LOST_RETRIES = 2
"""How many times ``run_in_transaction`` starts again on the successor of a lost session."""


def lost_session_name(exc: BaseException) -> str | None:
    """The full name of the session ``exc`` says the server no longer has, else None."""
    if not isinstance(exc, exceptions.NotFound):
        return None
    for detail in getattr(exc, "details", None) or ():
        if getattr(detail, "resource_type", None) == _SESSION_RESOURCE:
            name = getattr(detail, "resource_name", "")
            if name:
                return str(name)
    found = _NAME_IN_MESSAGE.search(str(exc))
    return found.group(1) if found else None


def multiplexed_key(database: Any, role: str | None) -> str:
    """What identifies one multiplexed session: the server (the emulator host or API endpoint
    the client talks to; empty for Cloud Spanner's default), the database and the role."""
    instance = database._instance
    client = client_of(instance)
    endpoint = getattr(instance, "emulator_host", None) or emulator_host(client)
    if not endpoint:
        options = getattr(client, "_client_options", None)
        endpoint = getattr(options, "api_endpoint", None)
        if endpoint is None and isinstance(options, dict):
            endpoint = options.get("api_endpoint")
    return f"multiplexed:{endpoint or ''}/{database.name}/{role or ''}"


async def create_multiplexed(database: Any, role: str | None, timeout: float) -> str:
    """Create a multiplexed session for ``database`` with ``role``; its full name.

    One attempt with a deadline of ``timeout`` seconds, no retries: the pool retries with
    backoff, and every request waiting meanwhile sees this call's error."""
    request = spanner_types.CreateSessionRequest(
        database=database.name,
        session=spanner_types.Session(multiplexed=True, creator_role=role or ""),
    )
    api = database.spanner_api
    created = await api.create_session(
        request=request, metadata=_metadata(database), retry=None, timeout=timeout
    )
    return str(created.name)


class MultiplexedSession(Session):
    """The client's ``Session`` for one generation of the pool's multiplexed session.

    Transactions begun on it keep it, even after the pool moved on to a successor (a rotated
    session stays valid for weeks)."""

    _spanpool_pool: Any = None
    _spanpool_record: Any = None

    async def exists(self) -> bool:
        # After a NotFound inside `with database.snapshot()` (or mutation_groups()) the
        # client's checkout asks exists() and, on False, stands a regular session in for the
        # multiplexed one: it creates one and hands it to the pool (which a full FixedSizePool
        # answers with queue.Full, hiding the real error). A lost multiplexed session is the
        # pool's to replace (it learnt of the loss from the error itself, see SpannerApi), so
        # no GetSession here, and never False.
        return True

    async def delete(self) -> None:
        # Multiplexed sessions cannot be deleted (the server refuses): never try.
        return None

    async def run_in_transaction(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        """``Session.run_in_transaction``, started again on the successor when the server
        lost this session (nothing was committed then)."""
        session: Any = self
        for attempt in range(LOST_RETRIES + 1):
            try:
                return await Session.run_in_transaction(session, func, *args, **kwargs)
            except exceptions.NotFound as exc:
                if attempt == LOST_RETRIES or lost_session_name(exc) != session.name:
                    raise
                session = await self._spanpool_pool._successor_of(session.name)
        raise AssertionError("unreachable")


def session_for(database: Any, record: Any, pool: Any) -> MultiplexedSession:
    """The session object of ``database`` for the multiplexed session ``record`` names."""
    session = MultiplexedSession(database=database, database_role=None, is_multiplexed=True)  # type: ignore[no-untyped-call]
    session._session_id = record.name.rsplit("/", 1)[-1]
    session._spanpool_pool = pool
    session._spanpool_record = record
    return session


class SessionSource:
    """Stands in for the ``Database``'s ``DatabaseSessionsManager``: the same methods, with
    the pool behind them."""

    def __init__(self, database: Any, pool: Any) -> None:
        self._pool = pool  # the client's DB-API reads `_pool` (Connection.close clears it)
        self._everything_multiplexed = forces_multiplexed(database)

    @staticmethod
    def _use_multiplexed(transaction_type: Any) -> bool:
        return uses_multiplexed(transaction_type)

    async def get_session(self, transaction_type: Any) -> Any:
        if self._everything_multiplexed or uses_multiplexed(transaction_type):
            return await self._pool._multiplexed_session()
        return await self._pool._regular_session()

    async def put_session(self, session: Any) -> None:
        if not isinstance(session, MultiplexedSession):
            await self._pool._put_regular(session)

    async def close(self) -> None:
        await self._pool.close()


def _single_use_read(request: Any) -> bool:
    """A read or query in a single-use transaction, not resumed after rows came back: when it
    fails at once, nothing happened on the server."""
    try:
        pb = type(request).pb(request)
        return bool(pb.transaction.HasField("single_use") and not pb.resume_token)
    except (AttributeError, TypeError, ValueError):
        return False


def _single_use_commit(request: Any) -> bool:
    """A commit of mutations in a single-use transaction (``batch()``): refused, it did
    nothing."""
    try:
        return bool(type(request).pb(request).HasField("single_use_transaction"))
    except (AttributeError, TypeError, ValueError):
        return False


async def _chain(first: Any, stream: Any) -> Any:
    if first is _END:
        return
    yield first
    async for item in stream:  # sync: yield from stream
        yield item  # async only


def _telling_losses(name: str) -> Any:
    """A method of :class:`SpannerApi` that calls the wrapped client's ``name`` and, when the
    answer says that one of the pool's sessions is gone, tells the pool before raising."""

    async def call(self: SpannerApi, *args: Any, **kwargs: Any) -> Any:
        try:
            return await getattr(self._api, name)(*args, **kwargs)
        except exceptions.NotFound as exc:
            self._pool._report_lost(exc)
            raise

    call.__name__ = name
    call.__qualname__ = f"SpannerApi.{name}"
    return call


class SpannerApi:
    """The ``Database``'s gRPC client, wrapped for the pool (see the module's documentation).

    Every other attribute is the wrapped client's."""

    def __init__(self, api: Any, pool: Any) -> None:
        self._api = api
        self._pool = pool

    def __getattr__(self, name: str) -> Any:
        return getattr(self._api, name)

    async def _stream(self, name: str, request: Any, kwargs: dict[str, Any]) -> Any:
        method = getattr(self._api, name)
        for attempt in range(2):
            try:
                stream = await method(request=request, **kwargs)
                items = aiter(stream)  # sync: items = iter(stream)
                first = await anext(items, _END)  # sync: first = next(items, _END)
            except exceptions.NotFound as exc:
                if attempt or not await self._pool._resend(exc, request, _single_use_read):
                    raise
                continue
            return _chain(first, items)
        raise AssertionError("unreachable")

    async def execute_streaming_sql(self, request: Any = None, **kwargs: Any) -> Any:
        return await self._stream("execute_streaming_sql", request, kwargs)

    async def streaming_read(self, request: Any = None, **kwargs: Any) -> Any:
        return await self._stream("streaming_read", request, kwargs)

    async def commit(self, request: Any = None, **kwargs: Any) -> Any:
        try:
            return await self._api.commit(request=request, **kwargs)
        except exceptions.NotFound as exc:
            if not await self._pool._resend(exc, request, _single_use_commit):
                raise
        return await self._api.commit(request=request, **kwargs)

    # The other requests on a session: a loss they meet is told to the pool, not retried.
    execute_sql = _telling_losses("execute_sql")
    read = _telling_losses("read")
    execute_batch_dml = _telling_losses("execute_batch_dml")
    begin_transaction = _telling_losses("begin_transaction")
    rollback = _telling_losses("rollback")
    partition_query = _telling_losses("partition_query")
    partition_read = _telling_losses("partition_read")


def install(database: Any, pool: Any) -> None:
    """Make ``pool`` the source of every session of ``database`` (see the module's
    documentation)."""
    database._sessions_manager = SessionSource(database, pool)
    api = database.spanner_api
    if isinstance(api, SpannerApi):
        api._pool = pool
    else:
        database._spanner_api = SpannerApi(api, pool)
        # The client connects on the first request; a bound pool's first request should find
        # the connection (TCP, TLS, HTTP/2) made, as it finds the session.
        start_connecting(api)
