"""One ``Client`` and one ``Database`` per process for every place the frameworks connect to.

The official DB-API builds a new ``Client`` and ``Database`` for each connection, so each
connection pays for a session (and, with multiplexed sessions, a maintenance thread). Here a
``Database`` is made once per (client, instance, database, role, pool) and handed to every
connection after that: a connection then costs no RPC and no thread.

A forked child forgets its parent's clients and databases (their gRPC channels belong to the
parent) and makes its own on first use.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

from google.auth.credentials import AnonymousCredentials
from google.cloud.spanner_v1.client import Client
from google.cloud.spanner_v1.instance import Instance

from ..bridge.common import client_of, emulator_host
from ..pools import MultiplexedPool

__all__ = [
    "SharedClient",
    "SharedInstance",
    "close_all",
    "default_pool",
    "shared_client",
    "shared_database",
]


@dataclass
class _Shared:
    database: Any
    pool: Any
    owns_pool: bool


_lock = threading.Lock()
_clients: dict[tuple[Any, ...], Any] = {}
_databases: dict[tuple[Any, ...], _Shared] = {}


def default_pool(store: Any = None) -> Any:
    """The pool a shared ``Database`` gets when the caller gives none: a ``MultiplexedPool``,
    sharing its session between processes through ``store`` when one is given."""
    return MultiplexedPool(store=store)


def _options_key(options: Any) -> Any:
    if options is None:
        return None
    items = options.items() if isinstance(options, dict) else vars(options).items()
    return tuple(sorted((str(name), repr(value)) for name, value in items))


def _credentials_key(credentials: Any) -> Any:
    if credentials is None or isinstance(credentials, str):
        return credentials
    if isinstance(credentials, AnonymousCredentials):
        return AnonymousCredentials  # every anonymous credential is the same
    return credentials  # by identity: the key keeps the object alive, so its id stays its own


def _key_part(name: str, value: Any) -> Any:
    if name == "credentials":
        return _credentials_key(value)
    if name == "client_options":
        return _options_key(value)
    return value


def shared_client(make: Any, **settings: Any) -> Any:
    """The client for ``settings`` (project, credentials, endpoint, ...), made once per process
    by ``make(**settings)``."""
    key = tuple(sorted((name, _key_part(name, value)) for name, value in settings.items()))
    key += (("SPANNER_EMULATOR_HOST", os.environ.get("SPANNER_EMULATOR_HOST")), ("make", make))
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = make(**settings)
        return client


def shared_database(
    client: Any,
    instance_id: str,
    database_id: str,
    *,
    pool: Any = None,
    store: Any = None,
    database_role: str | None = None,
    logger: Any = None,
) -> Any:
    """The process's ``Database`` for ``database_id`` on ``client``, with ``pool`` (spanpool's
    default pool over ``store`` when None), made on first use."""
    if pool is not None and store is not None:
        raise ValueError("give pool= or store=, not both (store= is for the default pool)")
    source = ("pool", pool) if pool is not None else ("store", store)
    key = (client, instance_id, database_id, database_role, source)
    with _lock:
        shared = _databases.get(key)
        if shared is None:
            if pool is not None and any(entry.pool is pool for entry in _databases.values()):
                raise ValueError(
                    f"pool already serves another database than {database_id!r}: "
                    "give each database its own pool"
                )
            owns_pool = pool is None
            if owns_pool:
                pool = default_pool(store)
            # The official Instance.database: a SharedInstance would come back here.
            database = Instance.database(
                client.instance(instance_id),
                database_id,
                pool=pool,
                database_role=database_role,
                logger=logger,
            )
            shared = _databases[key] = _Shared(database, pool, owns_pool)
        return shared.database


def close_all() -> None:
    """Forget every shared client and database, closing the pools spanpool made for them.

    Pools given by the caller are left to the caller. Connections still open keep working
    only if their pool does.
    """
    with _lock:
        shared = list(_databases.values())
        _databases.clear()
        _clients.clear()
    for entry in shared:
        if entry.owns_pool:
            entry.pool.close()


def _forget_after_fork() -> None:
    global _lock
    _lock = threading.Lock()
    _clients.clear()
    _databases.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


class SharedInstance(Instance):
    """An ``Instance`` whose ``database(database_id, pool=..., database_role=...)`` hands back
    the process's shared ``Database`` (see :func:`shared_database`)."""

    def database(self, database_id: str, *args: Any, **kwargs: Any) -> Any:
        sharable = {"pool", "logger", "database_role"}
        if args or not sharable.issuperset(kwargs):
            return super().database(database_id, *args, **kwargs)  # type: ignore[no-untyped-call]
        return shared_database(client_of(self), self.instance_id, database_id, **kwargs)


class SharedClient(Client):
    """A ``Client`` whose ``instance(instance_id)`` is a :class:`SharedInstance`, so that
    ``client.instance(i).database(d, pool=p)`` is one ``Database`` per process.

    For code (django-spanner's backend) that builds its connections through
    ``client.instance(...).database(...)``.
    """

    def instance(self, instance_id: str, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            return super().instance(instance_id, *args, **kwargs)  # type: ignore[no-untyped-call]
        # As the official instance(): the client's emulator host goes to the instance.
        instance: Any = SharedInstance  # its __init__ is the official one, untyped
        return instance(instance_id, self, emulator_host=emulator_host(self))
