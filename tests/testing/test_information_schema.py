"""LocalSpanner's INFORMATION_SCHEMA views of constraints and index columns, as ORM
introspection reads them (django-spanner's get_constraints)."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def ddl() -> list[str]:
    return [
        "CREATE TABLE Items (Id INT64 NOT NULL, Name STRING(50) NOT NULL, Note STRING(MAX)) "
        "PRIMARY KEY (Id)",
        "CREATE UNIQUE INDEX ItemsByName ON Items (Name DESC) STORING (Note)",
    ]


def _query(database: Any, sql: str) -> list[tuple[Any, ...]]:
    with database.snapshot() as snapshot:
        return [tuple(row) for row in snapshot.execute_sql(sql)]


def test_table_constraints_and_their_columns(database: Any) -> None:
    constraints = _query(
        database,
        "SELECT CONSTRAINT_NAME, CONSTRAINT_TYPE FROM INFORMATION_SCHEMA.TABLE_CONSTRAINTS "
        "WHERE TABLE_NAME = 'Items' AND TABLE_SCHEMA = '' ORDER BY CONSTRAINT_NAME",
    )
    assert constraints == [
        ("CK_IS_NOT_NULL_Items_Id", "CHECK"),
        ("CK_IS_NOT_NULL_Items_Name", "CHECK"),
        ("PK_Items", "PRIMARY KEY"),
    ]
    used = _query(
        database,
        "SELECT CONSTRAINT_NAME, COLUMN_NAME FROM INFORMATION_SCHEMA.CONSTRAINT_COLUMN_USAGE "
        "WHERE TABLE_NAME = 'Items' ORDER BY CONSTRAINT_NAME",
    )
    assert used == [
        ("CK_IS_NOT_NULL_Items_Id", "Id"),
        ("CK_IS_NOT_NULL_Items_Name", "Name"),
        ("PK_Items", "Id"),
    ]


def test_primary_key_columns_through_a_right_join(database: Any) -> None:
    # django-spanner's get_primary_key_column, as it is written.
    rows = _query(
        database,
        "SELECT ccu.COLUMN_NAME FROM INFORMATION_SCHEMA.TABLE_CONSTRAINTS AS tc "
        "RIGHT JOIN INFORMATION_SCHEMA.KEY_COLUMN_USAGE AS ccu "
        "ON tc.CONSTRAINT_NAME = ccu.CONSTRAINT_NAME "
        "WHERE tc.TABLE_NAME = 'Items' AND tc.CONSTRAINT_TYPE = 'PRIMARY KEY'",
    )
    assert rows == [("Id",)]
    assert _query(database, "SELECT COUNT(*) FROM INFORMATION_SCHEMA.REFERENTIAL_CONSTRAINTS") == [
        (0,)
    ]


def test_index_columns(database: Any) -> None:
    rows = _query(
        database,
        "SELECT INDEX_NAME, COLUMN_NAME, ORDINAL_POSITION, COLUMN_ORDERING, IS_NULLABLE, "
        "SPANNER_TYPE FROM INFORMATION_SCHEMA.INDEX_COLUMNS WHERE TABLE_NAME = 'Items' "
        "ORDER BY INDEX_NAME, COLUMN_NAME",
    )
    assert rows == [
        ("ItemsByName", "Name", 1, "DESC", "NO", "STRING(MAX)"),
        ("ItemsByName", "Note", None, None, "YES", "STRING(MAX)"),
        ("PRIMARY_KEY", "Id", 1, "ASC", "NO", "INT64"),
    ]
