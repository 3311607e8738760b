"""spanpool.dbapi.connect against LocalSpanner, through the unmodified official DB-API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from google.cloud import spanner_dbapi

from spanpool import FixedSizePool, dbapi
from spanpool.testing import LocalSpanner

from ._support import INSTANCE, client_kwargs, client_threads, session_rpcs

DDL = ["CREATE TABLE Items (Id INT64 NOT NULL, Name STRING(MAX)) PRIMARY KEY (Id)"]


@pytest.fixture
def items_server() -> Iterator[LocalSpanner]:
    with LocalSpanner(ddl=DDL) as server:
        yield server


def _names(connection: Any) -> list[str]:
    cursor = connection.cursor()
    cursor.execute("SELECT Name FROM Items ORDER BY Id")
    names = [row[0] for row in cursor.fetchall()]
    connection.commit()
    return names


def _cycle(connection: Any, i: int) -> None:
    """Query, DML, commit, DML, rollback: the work of one request."""
    cursor = connection.cursor()
    cursor.execute("SELECT COUNT(*) FROM Items")
    assert cursor.fetchone() == (i,)
    cursor.execute("INSERT INTO Items (Id, Name) VALUES (%s, %s)", (i, f"kept-{i}"))
    connection.commit()
    cursor.execute("INSERT INTO Items (Id, Name) VALUES (%s, %s)", (1000 + i, f"undone-{i}"))
    connection.rollback()


def _hundred_cycles(server: LocalSpanner, **connect_kwargs: Any) -> tuple[dict[str, int], int]:
    """100 cycles of connect, work and close; the session RPCs and thread growth after the first."""
    kwargs = {**client_kwargs(server.endpoint), **connect_kwargs}
    threads_after_first = 0
    for i in range(100):
        connection = dbapi.connect(INSTANCE, "db", **kwargs)
        _cycle(connection, i)
        connection.close()
        if i == 0:
            server.control.reset_counts()
            threads_after_first = client_threads()
    growth = client_threads() - threads_after_first
    connection = dbapi.connect(INSTANCE, "db", **kwargs)
    assert _names(connection) == [f"kept-{i}" for i in range(100)]
    connection.close()
    return session_rpcs(server), growth


def test_hundred_connections_on_multiplexed_sessions_cost_no_session_rpc(
    items_server: LocalSpanner,
) -> None:
    rpcs, thread_growth = _hundred_cycles(items_server)
    assert rpcs == {}
    assert thread_growth == 0


def test_hundred_connections_on_a_given_pool_cost_no_session_rpc(
    items_server: LocalSpanner, regular_sessions: None
) -> None:
    pool = FixedSizePool(size=2, default_timeout=5)
    rpcs, thread_growth = _hundred_cycles(items_server, pool=pool)
    assert rpcs == {}
    assert thread_growth == 0
    stats = pool.get_stats()
    assert stats["sessions_deleted"] == 0  # no connection close cleared the pool
    assert stats["pool_in_use"] == 0
    pool.close()


def test_the_official_dbapi_pays_a_session_per_connection(items_server: LocalSpanner) -> None:
    """What spanpool.dbapi is for: the official connect builds a Database per connection."""
    kwargs = client_kwargs(items_server.endpoint)
    for _ in range(3):
        connection = spanner_dbapi.connect(INSTANCE, "db", **kwargs)
        _names(connection)
        connection.close()
    assert session_rpcs(items_server).get("CreateSession") == 3


def test_connections_share_one_client_and_database(items_server: LocalSpanner) -> None:
    kwargs = client_kwargs(items_server.endpoint)
    first = dbapi.connect(INSTANCE, "db", **kwargs)
    second = dbapi.connect(INSTANCE, "db", **kwargs)
    other = dbapi.connect(INSTANCE, "other", **kwargs)
    assert isinstance(first, spanner_dbapi.Connection)
    assert first.database is second.database
    assert first.spanner_client is second.spanner_client is other.spanner_client
    assert other.database is not first.database
    for connection in (first, second, other):
        connection.close()


def test_close_inside_a_transaction_rolls_back_and_returns_the_session(
    items_server: LocalSpanner, regular_sessions: None
) -> None:
    pool = FixedSizePool(size=1, default_timeout=5)
    kwargs = {**client_kwargs(items_server.endpoint), "pool": pool}
    connection = dbapi.connect(INSTANCE, "db", **kwargs)
    connection.cursor().execute("INSERT INTO Items (Id, Name) VALUES (1, 'never')")
    assert pool.get_stats()["pool_in_use"] == 1
    connection.close()
    connection.close()  # a second close does nothing
    assert pool.get_stats()["pool_in_use"] == 0
    with pytest.raises(spanner_dbapi.InterfaceError):
        connection.cursor()
    # The one session is back, so the next connection gets it at once.
    again = dbapi.connect(INSTANCE, "db", **kwargs)
    assert _names(again) == []
    again.close()
    assert pool.get_stats()["sessions_deleted"] == 0
    pool.close()


def test_close_of_a_read_only_transaction_returns_the_session(
    items_server: LocalSpanner, regular_sessions: None
) -> None:
    pool = FixedSizePool(size=1, default_timeout=5)
    connection = dbapi.connect(INSTANCE, "db", pool=pool, **client_kwargs(items_server.endpoint))
    connection.read_only = True
    cursor = connection.cursor()
    cursor.execute("SELECT COUNT(*) FROM Items")
    assert cursor.fetchone() == (0,)
    assert pool.get_stats()["pool_in_use"] == 1
    connection.close()
    assert pool.get_stats()["pool_in_use"] == 0
    pool.close()


def test_with_block_commits_on_success_and_rolls_back_on_error(
    items_server: LocalSpanner,
) -> None:
    kwargs = client_kwargs(items_server.endpoint)
    with dbapi.connect(INSTANCE, "db", **kwargs) as connection:
        connection.cursor().execute("INSERT INTO Items (Id, Name) VALUES (1, 'committed')")
    assert connection.is_closed
    with (
        pytest.raises(RuntimeError),
        dbapi.connect(INSTANCE, "db", **kwargs) as connection,
    ):
        connection.cursor().execute("INSERT INTO Items (Id, Name) VALUES (2, 'rolled back')")
        raise RuntimeError("boom")
    assert connection.is_closed
    check = dbapi.connect(INSTANCE, "db", **kwargs)
    assert _names(check) == ["committed"]
    check.close()


def test_the_module_is_a_dbapi_module() -> None:
    assert dbapi.apilevel == "2.0"
    assert dbapi.paramstyle == spanner_dbapi.paramstyle
    assert dbapi.IntegrityError is spanner_dbapi.IntegrityError
    assert issubclass(dbapi.Connection, spanner_dbapi.Connection)


def test_bad_arguments_are_refused(items_server: LocalSpanner) -> None:
    kwargs = client_kwargs(items_server.endpoint)
    with pytest.raises(TypeError, match="instance_id"):
        dbapi.connect(42, "db", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="database_id"):
        dbapi.connect(INSTANCE, "", **kwargs)
    with pytest.raises(ValueError, match="pool= or store="):
        dbapi.connect(INSTANCE, "db", pool=FixedSizePool(size=1), store=object(), **kwargs)
    pool = FixedSizePool(size=1)
    dbapi.connect(INSTANCE, "db", pool=pool, **kwargs).close()
    with pytest.raises(ValueError, match="another database"):
        dbapi.connect(INSTANCE, "elsewhere", pool=pool, **kwargs)
    pool.close()
