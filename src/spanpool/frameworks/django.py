"""Django on ``django-google-spanner`` with connections on one shared ``Database``.

In ``settings.py``::

    from spanpool.frameworks.django import options

    DATABASES = {
        "default": {
            "ENGINE": "django_spanner",
            "INSTANCE": "my-instance",
            "NAME": "my-db",
            "OPTIONS": options(project="my-project"),   # or options(store=..., pool=...)
        }
    }

How it works, with no code of django-spanner or of the client replaced:

- ``OPTIONS["client"]`` is a :class:`~spanpool.frameworks._shared.SharedClient`: django-spanner
  builds every connection through ``client.instance(i).database(d, pool=...)``, which then
  hands back the one ``Database`` of the process instead of a new one (a new ``Database`` per
  connection would pay a ``CreateSession`` and leave a thread behind each time);
- ``OPTIONS["pool"]`` is that ``Database``'s pool, given, so the DB-API connection django-spanner
  makes does not claim it;
- django-spanner re-initialises each new connection in a way that makes it claim the pool
  again (and clear it on close). Django's ``connection_created`` signal, sent right after,
  lets a receiver registered by this module give the Django connection a
  :class:`spanpool.dbapi.Connection` on the same ``Database`` instead: it never clears the
  pool, and returns its session even when closed inside a transaction.
"""

from __future__ import annotations

import os
from typing import Any

from django.db.backends.signals import connection_created

from . import dbapi
from ._shared import SharedClient, default_pool, shared_client

__all__ = ["options"]


def options(
    *,
    project: str | None = None,
    credentials: Any = None,
    client_options: Any = None,
    pool: Any = None,
    store: Any = None,
    database_role: str | None = None,
) -> dict[str, Any]:
    """``DATABASES[alias]["OPTIONS"]`` for ``"ENGINE": "django_spanner"``.

    ``project``, ``credentials`` and ``client_options`` make the process's client (as for
    ``google.cloud.spanner.Client``; the project defaults to django-spanner's choice:
    ``GOOGLE_CLOUD_PROJECT``, else ``test-project``). ``pool`` is
    the session pool of the shared ``Database`` (the caller keeps owning it); without one,
    spanpool's default pool is made, shared between processes through ``store``. Call it once
    per database alias: a pool serves one database.
    """
    if pool is not None and store is not None:
        raise ValueError("give pool= or store=, not both (store= is for the default pool)")
    if database_role is not None and not isinstance(database_role, str):
        raise TypeError(f"database_role must be a str, not {type(database_role).__name__}")
    if project is None:
        project = os.environ.get("GOOGLE_CLOUD_PROJECT", "test-project")  # as django-spanner
    client = shared_client(
        SharedClient, project=project, credentials=credentials, client_options=client_options
    )
    settings: dict[str, Any] = {
        "client": client,
        # django-spanner passes its own guess of the project unless OPTIONS has one, and the
        # DB-API refuses a client of another project.
        "project": client.project,
        "pool": pool if pool is not None else default_pool(store),
    }
    if database_role is not None:
        settings["database_role"] = database_role
    return settings


def _adopt(sender: Any, connection: Any, **kwargs: Any) -> None:
    """Give a new Django connection that uses :func:`options` a spanpool DB-API connection on
    the same shared ``Database`` and in the same autocommit mode."""
    settings = connection.settings_dict.get("OPTIONS") or {}
    official = connection.connection
    if not isinstance(settings.get("client"), SharedClient) or isinstance(
        official, dbapi.Connection
    ):
        return
    adopted = dbapi.Connection(official.instance, official.database, read_only=official.read_only)
    adopted.autocommit = official.autocommit
    connection.connection = adopted


connection_created.connect(_adopt, dispatch_uid="spanpool.frameworks.django")
