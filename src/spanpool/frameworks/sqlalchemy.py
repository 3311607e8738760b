"""SQLAlchemy on ``sqlalchemy-spanner`` with connections from :func:`spanpool.dbapi.connect`.

::

    from sqlalchemy import create_engine
    from spanpool.frameworks.sqlalchemy import creator

    URL = "spanner+spanner:///projects/my-project/instances/my-instance/databases/my-db"
    engine = create_engine(URL, creator=creator(URL), pool_size=5)

The dialect still reads the URL (and gives every connection its user agent); ``creator``
only changes where a new DB-API connection comes from. SQLAlchemy's own connection pool may
then open and close connections as often as it likes: each costs no Spanner RPC, and closing
one never clears the session pool.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import URL, make_url

from . import dbapi

__all__ = ["creator"]


def creator(
    url: str | URL, *, pool: Any = None, store: Any = None, **connect_args: Any
) -> Callable[[], dbapi.Connection]:
    """A ``creator=`` for ``sqlalchemy.create_engine(url, ...)``: connections to the database
    that ``url`` names, through :func:`spanpool.dbapi.connect`.

    ``pool`` (a session pool the caller owns) or ``store`` (to share spanpool's default pool
    between processes), and ``connect_args`` (``credentials``, ``client``,
    ``database_role``, ``client_options``, ...), go to every ``connect``.
    """
    if not isinstance(url, (str, URL)):
        raise TypeError(f"url must be a str or sqlalchemy URL, not {type(url).__name__}")
    parsed = make_url(url)
    dialect = parsed.get_dialect()()
    args, params = dialect.create_connect_args(parsed)
    if len(args) != 3 or not args[1]:
        raise ValueError(
            "url must name a database: spanner+spanner:///projects/P/instances/I/databases/D"
        )
    instance_id, database_id, project = args
    params.update(connect_args)
    project = params.pop("project", project)

    def connect() -> dbapi.Connection:
        return dbapi.connect(instance_id, database_id, project, pool=pool, store=store, **params)

    return connect
