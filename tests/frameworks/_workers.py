"""One worker process of an application using a spanpool store, for the cross-process tests:
``python -m tests.frameworks._workers dbapi|sqlalchemy ENDPOINT STORE_PATH``.

Each connects through its framework, runs a query and exits; the test reads the server's
counts between workers.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any


def session_source(store_path: str) -> dict[str, Any]:
    """``connect`` arguments that share the multiplexed session through the SQLite store at
    ``store_path``."""
    from spanpool.stores import SQLiteStore

    return {"store": SQLiteStore(store_path)}


def run_dbapi(endpoint: str, store_path: str) -> int:
    from spanpool import dbapi

    from ._support import INSTANCE, client_kwargs

    connection = dbapi.connect(
        INSTANCE, "shared", **session_source(store_path), **client_kwargs(endpoint)
    )
    cursor = connection.cursor()
    cursor.execute("SELECT 41 + 1")
    (answer,) = cursor.fetchone()
    connection.commit()
    connection.close()
    return int(answer)


def run_sqlalchemy(endpoint: str, store_path: str) -> int:
    from sqlalchemy import create_engine, text

    from spanpool.frameworks.sqlalchemy import creator

    from ._support import INSTANCE, PROJECT, client_kwargs

    url = f"spanner+spanner:///projects/{PROJECT}/instances/{INSTANCE}/databases/shared"
    make = creator(url, **session_source(store_path), **client_kwargs(endpoint))
    engine = create_engine(url, creator=make)
    with engine.connect() as connection:
        answer = connection.execute(text("SELECT 41 + 1")).scalar()
    engine.dispose()
    return int(answer)


if __name__ == "__main__":
    try:
        kind, endpoint, store_path = sys.argv[1:]
        result = {"dbapi": run_dbapi, "sqlalchemy": run_sqlalchemy}[kind](endpoint, store_path)
        print(result, flush=True)
        code = 0
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.exit(code)
