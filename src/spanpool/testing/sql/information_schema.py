"""INFORMATION_SCHEMA views of constraints and index columns, built from the catalog as Cloud
Spanner shows them: what ORM introspection (django-spanner's ``get_constraints``, run by
migrations that alter fields) reads.

- ``TABLE_CONSTRAINTS``: ``PK_<table>`` (``PRIMARY KEY``) for every table, and
  ``CK_IS_NOT_NULL_<table>_<column>`` (``CHECK``) for every ``NOT NULL`` column;
- ``CONSTRAINT_COLUMN_USAGE`` and ``KEY_COLUMN_USAGE``: the columns of those constraints;
- ``REFERENTIAL_CONSTRAINTS``: empty (LocalSpanner has no foreign keys);
- ``INDEX_COLUMNS``: the key columns (``ASC``/``DESC``, with their position) and the stored
  columns (no position) of every index, ``PRIMARY_KEY`` included.
"""

from __future__ import annotations

from typing import Any

from . import values as v
from .schema import TableInfo
from .values import TypeMsg

__all__ = ["VIEWS", "spanner_type", "view"]

Rows = list[tuple[object, ...]]
INT64 = v.scalar_type(v.INT64)
STRING_T = v.scalar_type(v.STRING)


def spanner_type(type_: TypeMsg) -> str:
    """A column type as INFORMATION_SCHEMA spells it: ``STRING(MAX)``, ``ARRAY<INT64>``."""
    name = v.type_name(type_)
    for sized in ("STRING", "BYTES"):
        name = name.replace(sized, f"{sized}(MAX)")
    return name


def _not_null_checks(table: TableInfo) -> list[tuple[str, str]]:
    return [
        (f"CK_IS_NOT_NULL_{table.name}_{c.name}", c.name) for c in table.columns if not c.nullable
    ]


def table_constraints(catalog: Any) -> Rows:
    rows: Rows = []
    for table in catalog.tables:
        constraints = [(f"PK_{table.name}", "PRIMARY KEY")]
        constraints += [(name, "CHECK") for name, _ in _not_null_checks(table)]
        rows += [
            ("", "", name, "", "", table.name, kind, "NO", "NO", "YES")
            for name, kind in constraints
        ]
    return rows


def constraint_column_usage(catalog: Any) -> Rows:
    rows: Rows = []
    for table in catalog.tables:
        used = [(f"PK_{table.name}", column) for column in table.primary_key]
        used += [(name, column) for name, column in _not_null_checks(table)]
        rows += [("", "", table.name, column, "", "", name) for name, column in used]
    return rows


def key_column_usage(catalog: Any) -> Rows:
    return [
        ("", "", f"PK_{table.name}", "", "", table.name, column, position, None)
        for table in catalog.tables
        for position, column in enumerate(table.primary_key, 1)
    ]


def index_columns(catalog: Any) -> Rows:
    rows: Rows = []

    def add(table: TableInfo, index: str, kind: str, keys: Any, stored: list[str]) -> None:
        for position, (name, descending) in enumerate(keys, 1):
            column = table.column(name)
            ordering = "DESC" if descending else "ASC"
            nullable = "YES" if column.nullable else "NO"
            type_name = spanner_type(column.type)
            rows.append(
                (
                    "",
                    "",
                    table.name,
                    index,
                    kind,
                    column.name,
                    position,
                    ordering,
                    nullable,
                    type_name,
                )
            )
        for name in stored:
            column = table.column(name)
            nullable = "YES" if column.nullable else "NO"
            type_name = spanner_type(column.type)
            rows.append(
                ("", "", table.name, index, kind, column.name, None, None, nullable, type_name)
            )

    for table in catalog.tables:
        keys = zip(table.primary_key, table.key_descending, strict=True)
        add(table, "PRIMARY_KEY", "PRIMARY_KEY", keys, [])
    for index in catalog.indexes:
        table = catalog.table(index.table)
        keys = zip(index.columns, index.descending, strict=True)
        add(table, index.name, "INDEX", keys, list(index.storing))
    return rows


_CONSTRAINT = ["CONSTRAINT_CATALOG", "CONSTRAINT_SCHEMA", "CONSTRAINT_NAME"]
_TABLE = ["TABLE_CATALOG", "TABLE_SCHEMA", "TABLE_NAME"]
_INDEX_COLUMN = ["COLUMN_ORDERING", "IS_NULLABLE", "SPANNER_TYPE"]
_UNIQUE = ["UNIQUE_CONSTRAINT_CATALOG", "UNIQUE_CONSTRAINT_SCHEMA", "UNIQUE_CONSTRAINT_NAME"]

VIEWS: dict[str, tuple[list[str], list[Any], Any]] = {
    "TABLE_CONSTRAINTS": (
        [
            *_CONSTRAINT,
            *_TABLE,
            "CONSTRAINT_TYPE",
            "IS_DEFERRABLE",
            "INITIALLY_DEFERRED",
            "ENFORCED",
        ],
        [STRING_T] * 10,
        table_constraints,
    ),
    "CONSTRAINT_COLUMN_USAGE": (
        [*_TABLE, "COLUMN_NAME", *_CONSTRAINT],
        [STRING_T] * 7,
        constraint_column_usage,
    ),
    "KEY_COLUMN_USAGE": (
        [*_CONSTRAINT, *_TABLE, "COLUMN_NAME", "ORDINAL_POSITION", "POSITION_IN_UNIQUE_CONSTRAINT"],
        [STRING_T] * 7 + [INT64, INT64],
        key_column_usage,
    ),
    "REFERENTIAL_CONSTRAINTS": (
        [*_CONSTRAINT, *_UNIQUE, "MATCH_OPTION", "UPDATE_RULE", "DELETE_RULE", "SPANNER_STATE"],
        [STRING_T] * 10,
        lambda catalog: [],
    ),
    "INDEX_COLUMNS": (
        [*_TABLE, "INDEX_NAME", "INDEX_TYPE", "COLUMN_NAME", "ORDINAL_POSITION", *_INDEX_COLUMN],
        [STRING_T] * 6 + [INT64] + [STRING_T] * 3,
        index_columns,
    ),
}
"""Each view's column names, column types, and how its rows are made from a catalog."""


def view(catalog: Any, name: str) -> tuple[list[str], list[Any], Rows] | None:
    """The column names, types and rows of ``INFORMATION_SCHEMA.<name>``, or None when this
    module does not know that view."""
    known = VIEWS.get(name.upper())
    if known is None:
        return None
    names, types, make = known
    return names, types, make(catalog)
