"""Worker processes for ``test_multiplexed_shared.py``: each makes its own store, client,
``Database`` and ``MultiplexedPool``, as a new worker process of an application would.

They run in child processes started by ``multiprocessing`` ("forkserver" or "spawn"), so they
take only plain arguments and report through their return value or a queue.
"""

from __future__ import annotations

from typing import Any

from spanpool import MultiplexedPool
from spanpool.testing import connect

from ..stores import open_store


def _query(database: Any) -> list[list[Any]]:
    with database.snapshot() as snapshot:
        return [list(row) for row in snapshot.execute_sql("SELECT 1")]


def first_result(endpoint: str, db_id: str, kind: str, address: str) -> dict[str, Any]:
    """A new worker: from ``instance.database`` to its first result."""
    pool = MultiplexedPool(store=open_store(kind, address))
    database = connect(endpoint, db_id, pool=pool)
    rows = _query(database)
    return {"rows": rows, "session": pool.session_name, **pool.get_stats()}


def query_twice(
    endpoint: str, db_id: str, kind: str, address: str, between: Any, report: Any
) -> None:
    """Query, wait for ``between`` (the session is lost meanwhile), query again."""
    pool = MultiplexedPool(store=open_store(kind, address))
    database = connect(endpoint, db_id, pool=pool)
    first = _query(database)
    report.put(("first", pool.session_name))
    if not between.wait(60):
        report.put(("error", "never released"))
        return
    try:
        second = _query(database)
    except Exception as exc:
        report.put(("error", repr(exc)))
        return
    report.put(("second", pool.session_name, first == second == [[1]]))
