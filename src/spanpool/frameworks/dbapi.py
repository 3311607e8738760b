"""The Cloud Spanner DB-API (PEP 249) with one ``Client`` and ``Database`` per process.

``spanpool.dbapi.connect`` takes the arguments of ``google.cloud.spanner_dbapi.connect`` and
returns its ``Connection`` class (a subclass, :class:`spanpool.bridge.dbapi.Connection`: it
changes what the official class does with its private state), but:

- connections to the same (project, credentials, endpoint, instance, database, role, pool)
  share one ``Client`` and one ``Database``, made on the first ``connect``: a later
  ``connect`` sends no RPC and starts no thread;
- without ``pool=`` the shared ``Database`` gets spanpool's default pool (``store=`` shares it
  between processes), which every connection uses and none owns;
- ``close()`` never clears the pool, and inside a transaction rolls it back *and* returns the
  transaction's session to the pool (the official ``close()`` keeps it);
- ``with connect(...) as connection:`` commits when the block succeeds and rolls back when it
  raises (the official one commits either way).

Everything else (exceptions, type constructors, ``paramstyle``) is the official module's.
"""

from __future__ import annotations

from typing import Any

from google.cloud import spanner_dbapi as _official
from google.cloud.spanner_dbapi import (
    BINARY,
    DATETIME,
    DEFAULT_USER_AGENT,
    NUMBER,
    ROWID,
    STRING,
    Binary,
    Cursor,
    DatabaseError,
    DataError,
    Date,
    DateFromTicks,
    Error,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
    Time,
    TimeFromTicks,
    Timestamp,
    TimestampFromTicks,
    TimestampStr,
    Warning,
    get_param_types,
)

from ..bridge.common import client_of
from ..bridge.dbapi import Connection
from ._shared import close_all, shared_client, shared_database

__all__ = [
    "BINARY",
    "DATETIME",
    "DEFAULT_USER_AGENT",
    "NUMBER",
    "ROWID",
    "STRING",
    "Binary",
    "Connection",
    "Cursor",
    "DataError",
    "DatabaseError",
    "Date",
    "DateFromTicks",
    "Error",
    "IntegrityError",
    "InterfaceError",
    "InternalError",
    "NotSupportedError",
    "OperationalError",
    "ProgrammingError",
    "Time",
    "TimeFromTicks",
    "Timestamp",
    "TimestampFromTicks",
    "TimestampStr",
    "Warning",
    "apilevel",
    "close_all",
    "connect",
    "get_param_types",
    "paramstyle",
    "threadsafety",
]

apilevel = _official.apilevel
paramstyle = _official.paramstyle
threadsafety = _official.threadsafety


def _check_id(name: str, value: Any, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty")


def _make_client(**settings: Any) -> Any:
    # The official connect() with no database builds its Client exactly as it always does
    # (service-account files, anonymous credentials with client_options, Spanner Omni) and
    # sends nothing; only that Client is kept.
    options = settings.pop("client_options", None)
    extra = {} if options is None else {"client_options": options}
    return client_of(_official.connect("unused", None, **settings, **extra).instance)


def connect(
    instance_id: str,
    database_id: str | None = None,
    project: str | None = None,
    credentials: Any = None,
    pool: Any = None,
    user_agent: str | None = None,
    client: Any = None,
    route_to_leader_enabled: bool = True,
    database_role: str | None = None,
    experimental_host: str | None = None,
    use_plain_text: bool = False,
    ca_certificate: str | None = None,
    client_certificate: str | None = None,
    client_key: str | None = None,
    instance_type: str | None = None,
    data_boost_enabled: bool = False,
    auto_partition_mode: bool = False,
    *,
    store: Any = None,
    **kwargs: Any,
) -> Connection:
    """A DB-API connection to ``database_id``, on the process's shared ``Client`` and
    ``Database`` for these arguments (made by the first call).

    The arguments are those of ``google.cloud.spanner_dbapi.connect``. ``pool`` is the session
    pool of the shared ``Database`` (the caller keeps owning it); without one, spanpool's
    default pool is made once, with ``store`` (a ``spanpool.stores`` store) to share it
    between processes. ``**kwargs`` are the connection's variables, as in the official
    ``connect`` (``client_options`` is also used to build the client with anonymous
    credentials, ``logger`` for the ``Database``).
    """
    _check_id("instance_id", instance_id)
    _check_id("database_id", database_id, optional=True)
    _check_id("database_role", database_role, optional=True)
    if pool is not None and store is not None:
        raise ValueError("give pool= or store=, not both (store= is for the default pool)")
    if client is None:
        client = shared_client(
            _make_client,
            project=project,
            credentials=credentials,
            user_agent=user_agent,
            route_to_leader_enabled=route_to_leader_enabled,
            experimental_host=experimental_host,
            use_plain_text=use_plain_text,
            ca_certificate=ca_certificate,
            client_certificate=client_certificate,
            client_key=client_key,
            instance_type=instance_type,
            client_options=kwargs.get("client_options"),
        )
    elif project is not None and client.project != project:
        raise ValueError("project in url does not match client object project")
    database = None
    if database_id:
        database = shared_database(
            client,
            instance_id,
            database_id,
            pool=pool,
            store=store,
            database_role=database_role,
            logger=kwargs.get("logger"),
        )
    return Connection(
        client.instance(instance_id),
        database,
        data_boost_enabled=data_boost_enabled,
        auto_partition_mode=auto_partition_mode,
        **kwargs,
    )
