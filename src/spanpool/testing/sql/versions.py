"""Multi-version rows: what each table looked like at an earlier timestamp.

A table ``T`` holds the latest committed version of each row. Beside it, the history table
``_spanpool_v_T`` keeps the versions that commits replaced: when a commit at timestamp ``C``
changes a row, the row as it was before (or a marker that it did not exist) is kept with
``_spanpool_end = C``. The state of ``T`` at a timestamp ``R`` is then, for each key, the history
version with the smallest end after ``R`` if there is one, and the row of ``T`` otherwise
(``source_sql``).

Triggers on ``T`` report every changed row (cascaded deletes included) to the Python function
``spanpool_changed(table, op, values...)`` while ``spanpool_tracking()`` is true; the model uses
these reports both for the write set of a read-write transaction and, at commit, for the old
versions that go into the history table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .tokens import quote_ident, sql_literal

if TYPE_CHECKING:
    from .schema import TableInfo

PREFIX = "_spanpool_v_"
END = "_spanpool_end"
ABSENT = "_spanpool_absent"
INSERTED, UPDATED, DELETED = "I", "U", "D"


def history_table(table: str) -> str:
    return PREFIX + table


def _trigger(kind: str, table: str) -> str:
    return quote_ident(f"_spanpool_t{kind}_{table}")


def _declared(table: TableInfo) -> list[str]:
    from .schema import declared_type  # schema imports this module

    return [f"{quote_ident(c.name)} {declared_type(c)}" for c in table.columns]


def create_sql(table: TableInfo) -> list[str]:
    """SQLite DDL of the history table and the change triggers of a new table."""
    history = quote_ident(history_table(table.name))
    columns = ", ".join(_declared(table))
    keys = ", ".join(quote_ident(k) for k in table.primary_key)
    index = quote_ident(f"_spanpool_vi_{table.name}")
    return [
        f"CREATE TABLE IF NOT EXISTS {history} ({columns}, {END} INTEGER NOT NULL, "
        f"{ABSENT} INTEGER NOT NULL)",
        f"CREATE INDEX IF NOT EXISTS {index} ON {history} ({keys + ', ' if keys else ''}{END})",
        *triggers_sql(table),
    ]


def triggers_sql(table: TableInfo) -> list[str]:
    quoted = quote_ident(table.name)
    name = sql_literal(table.name)
    new = ", ".join(f"NEW.{quote_ident(c.name)}" for c in table.columns)
    old = ", ".join(f"OLD.{quote_ident(c.name)}" for c in table.columns)
    when = "WHEN spanpool_tracking()"
    return [
        f"CREATE TRIGGER IF NOT EXISTS {_trigger('i', table.name)} AFTER INSERT ON {quoted} "
        f"{when} BEGIN SELECT spanpool_changed({name}, '{INSERTED}', {new}); END",
        f"CREATE TRIGGER IF NOT EXISTS {_trigger('u', table.name)} AFTER UPDATE ON {quoted} "
        f"{when} BEGIN SELECT spanpool_changed({name}, '{UPDATED}', {new}, {old}); END",
        f"CREATE TRIGGER IF NOT EXISTS {_trigger('d', table.name)} AFTER DELETE ON {quoted} "
        f"{when} BEGIN SELECT spanpool_changed({name}, '{DELETED}', {old}); END",
    ]


def drop_triggers_sql(table: TableInfo) -> list[str]:
    return [f"DROP TRIGGER IF EXISTS {_trigger(kind, table.name)}" for kind in "iud"]


def add_column_sql(table: TableInfo, column_sql: str) -> list[str]:
    """Before ``ALTER TABLE ... ADD COLUMN`` (``table`` is the table as it was)."""
    return [
        *drop_triggers_sql(table),
        f"ALTER TABLE {quote_ident(history_table(table.name))} ADD COLUMN {column_sql}",
    ]


def drop_column_sql(table: TableInfo, column: str) -> list[str]:
    return [
        *drop_triggers_sql(table),
        f"ALTER TABLE {quote_ident(history_table(table.name))} DROP COLUMN {quote_ident(column)}",
    ]


def drop_sql(table: TableInfo) -> list[str]:
    return [f"DROP TABLE IF EXISTS {quote_ident(history_table(table.name))}"]


def insert_sql(table: TableInfo) -> str:
    """Insert one old version: the table's columns, then its end and whether it is absent."""
    history = quote_ident(history_table(table.name))
    columns = ", ".join([*(quote_ident(c.name) for c in table.columns), END, ABSENT])
    marks = ", ".join("?" for _ in range(len(table.columns) + 2))
    return f"INSERT INTO {history} ({columns}) VALUES ({marks})"


def prune_sql(table: TableInfo) -> str:
    """Forget versions that ended before a timestamp (the one argument)."""
    return f"DELETE FROM {quote_ident(history_table(table.name))} WHERE {END} < ?"


def _same_key(keys: Sequence[str], left: str, right: str) -> str:
    return " AND ".join(f"{left}.{k} IS {right}.{k}" for k in keys) or "1"


def source_sql(table: TableInfo) -> str:
    """A subquery with the rows of ``table`` as of ``spanpool_read_ts()``."""
    quoted = quote_ident(table.name)
    history = quote_ident(history_table(table.name))
    keys = [quote_ident(k) for k in table.primary_key]
    columns = ", ".join(quote_ident(c.name) for c in table.columns)
    at = "spanpool_read_ts()"
    later = f"SELECT 1 FROM {history} AS _h WHERE {_same_key(keys, '_h', '_t')} AND _h.{END} > {at}"
    first = (
        f"SELECT _g.rowid FROM {history} AS _g WHERE {_same_key(keys, '_g', '_h')} "
        f"AND _g.{END} > {at} ORDER BY _g.{END}, _g.rowid LIMIT 1"
    )
    current = f"SELECT {columns} FROM {quoted} AS _t WHERE NOT EXISTS ({later})"
    old = (
        f"SELECT {columns} FROM {history} AS _h WHERE _h.{END} > {at} AND _h.{ABSENT} = 0 "
        f"AND _h.rowid = ({first})"
    )
    return f"({current} UNION ALL {old})"


def locking_source_sql(table: TableInfo) -> str:
    """A subquery with the rows of ``table`` that reports each row it yields to
    ``spanpool_lock`` (what a read-write transaction read, so that it can lock it)."""
    keys = ", ".join(quote_ident(k) for k in table.primary_key)
    args = sql_literal(table.name) + (", " + keys if keys else "")
    return f"(SELECT * FROM {quote_ident(table.name)} WHERE spanpool_lock({args}))"
