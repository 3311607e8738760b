"""LocalSpanner's data engine: GoogleSQL queries, DML, reads and mutations on SQLite.

Each database is one SQLite file (see ``schema`` for its tables and ``values`` for how values
are stored). Statements are translated once per catalog and text (``translate``) and kept in
the catalog's LRU cache together with the encoders of their result columns.
"""

from __future__ import annotations

import base64
import functools
import re
import sqlite3
import threading
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from . import values as v
from . import versions
from .schema import Catalog, ColumnInfo, IndexInfo, TableInfo, apply_ddl, load_catalog
from .tokens import comment_end, quote_ident
from .translate import LOCKING, PLAIN, VERSIONED, Translation, translate
from .values import EngineError, TypeMsg

__all__ = [
    "LOCKING",
    "PLAIN",
    "VERSIONED",
    "Catalog",
    "ColumnInfo",
    "EngineError",
    "IndexInfo",
    "Result",
    "TableInfo",
    "apply_ddl",
    "apply_mutations",
    "connect",
    "execute",
    "execute_sql",
    "load_catalog",
    "prepare",
    "read",
    "statement_kind",
]

_Field = v.StructTypePb.Field
_SAVEPOINT = "spanpool_mutations"


@dataclass
class Result:
    """Rows of a query, read or DML statement, with their Cloud Spanner types.

    In ``LOCKING`` mode a result also says what the statement read, for the read-write
    transaction to lock: the tables it scanned (not only looked rows up in by primary key),
    and for reads by key the keys it looked up.
    """

    fields: list[Any]  # google.spanner.v1.StructType.Field messages
    rows: list[list[Any]]  # google.protobuf.Value messages
    row_count: int | None = None
    scans: frozenset[str] = frozenset()
    keys: list[tuple[str, tuple[object, ...]]] = field(default_factory=list)


def _invalid(message: str) -> EngineError:
    return EngineError(grpc.StatusCode.INVALID_ARGUMENT, message)


# --- connections and SQL functions -------------------------------------------------------------

_function_errors = threading.local()


def _reporting(function: Callable[..., Any]) -> Callable[..., Any]:
    """Keep the message of an error raised inside SQLite, which only says that one happened."""

    @functools.wraps(function)
    def call(*args: object) -> Any:
        try:
            return function(*args)
        except (ValueError, TypeError, OverflowError, ArithmeticError) as exc:
            _function_errors.message = str(exc)
            raise

    return call


def _safe_cast(value: object, target: int, source: int) -> object:
    try:
        return v.cast_value(value, target, source)
    except (ValueError, ArithmeticError):
        return None


def _affix(method: str, text: object, affix: object) -> bool | None:
    """STARTS_WITH or ENDS_WITH (``method``: ``"startswith"`` or ``"endswith"``), of strings or
    of bytes; NULL when either side is NULL."""
    if text is None or affix is None:
        return None
    if not (isinstance(text, bytes) and isinstance(affix, bytes)):
        text, affix = str(text), str(affix)
    return bool(getattr(text, method)(affix))


@functools.lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _regexp_contains(text: object, pattern: object) -> bool | None:
    if text is None or pattern is None:
        return None
    try:
        return _regex(str(pattern)).search(str(text)) is not None
    except re.error as exc:
        raise ValueError(f"Cannot parse regular expression: {exc}") from None


def _unbase64(text: object) -> object:
    if isinstance(text, str):
        return base64.b64decode(text)
    return text


def _array_to_string(array: object, delimiter: object, null_text: object = None) -> object:
    """GoogleSQL's ARRAY_TO_STRING: NULL elements are skipped, or replaced by ``null_text``."""
    if array is None or delimiter is None:
        return None
    parts = []
    for element in v.load_array(array):
        if element is None:
            if null_text is None:
                continue
            element = null_text
        parts.append(element if isinstance(element, str) else str(element))
    return str(delimiter).join(parts)


def _base64(raw: object) -> object:
    if isinstance(raw, bytes):
        return base64.b64encode(raw).decode("ascii")
    return raw


def _numeric_collation(left: str, right: str) -> int:
    return v.compare_numeric(left, right)


_FUNCTIONS: list[tuple[str, int, Callable[..., Any], bool]] = [
    ("spanpool_now", 0, v.timestamp_now, False),
    ("spanpool_today", 0, v.date_today, False),
    ("spanpool_uuid", 0, lambda: str(uuid.uuid4()), False),
    ("spanpool_cast", 3, v.cast_value, True),
    ("spanpool_safe_cast", 3, _safe_cast, True),
    ("spanpool_store", 3, v.store_value, True),
    ("spanpool_starts_with", 2, functools.partial(_affix, "startswith"), True),
    ("spanpool_ends_with", 2, functools.partial(_affix, "endswith"), True),
    ("spanpool_regexp_contains", 2, _regexp_contains, True),
    ("spanpool_unbase64", 1, _unbase64, True),
    ("spanpool_base64", 1, _base64, True),
    ("spanpool_array_to_string", -1, _array_to_string, True),
]


class Connection(sqlite3.Connection):
    """A connection to one database file, with what the engine's SQL functions report to.

    - ``read_ts``: the timestamp ``VERSIONED`` statements read at (``spanpool_read_ts()``);
    - ``tracking``: whether the tables' triggers report changed rows (``spanpool_tracking()``);
    - ``changes``: what they reported: (table, ``I``/``U``/``D``, values), see ``versions``;
    - ``rows_read``: (table, key) of each row a ``LOCKING`` statement read, when not None.
    """

    read_ts: int = 0
    tracking: bool = False
    rows_read: list[tuple[str, tuple[object, ...]]] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.changes: list[tuple[str, str, tuple[object, ...]]] = []


def _bind_reporters(conn: Connection) -> None:
    ref = weakref.ref(conn)

    def read_ts() -> int:
        c = ref()
        return c.read_ts if c is not None else 0

    def tracking() -> int:
        c = ref()
        return 1 if c is not None and c.tracking else 0

    def changed(table: str, op: str, *values: object) -> None:
        c = ref()
        if c is not None:
            c.changes.append((table, op, values))

    def lock(table: str, *key: object) -> int:
        c = ref()
        if c is not None and c.rows_read is not None:
            c.rows_read.append((table, key))
        return 1

    conn.create_function("spanpool_read_ts", 0, read_ts)
    conn.create_function("spanpool_tracking", 0, tracking)
    conn.create_function("spanpool_changed", -1, changed)
    conn.create_function("spanpool_lock", -1, lock)


def connect(path: str) -> Connection:
    """Open (or create) the SQLite file of one database, ready for the engine."""
    conn = sqlite3.connect(
        path,
        isolation_level=None,
        check_same_thread=False,
        cached_statements=512,
        factory=Connection,
    )
    assert isinstance(conn, Connection)
    _bind_reporters(conn)
    conn.execute("PRAGMA busy_timeout = 2000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA case_sensitive_like = ON")
    for name, arity, function, deterministic in _FUNCTIONS:
        conn.create_function(name, arity, _reporting(function), deterministic=deterministic)
    conn.create_collation("SPANPOOL_NUMERIC", _numeric_collation)
    return conn


# --- statements --------------------------------------------------------------------------------

_DML_WORDS = frozenset({"INSERT", "UPDATE", "DELETE"})
_DDL_WORDS = frozenset({"CREATE", "ALTER", "DROP", "GRANT", "REVOKE", "RENAME", "ANALYZE"})


@functools.lru_cache(maxsize=4096)
def statement_kind(sql: str) -> str:
    """``"query"``, ``"dml"`` or ``"ddl"``, from the first word of a statement."""
    i, n = 0, len(sql)
    while i < n:
        char = sql[i]
        if char.isspace() or char == "(":
            i += 1
        elif (end := comment_end(sql, i)) is not None:
            i = n if end < 0 else end
        elif sql.startswith("@{", i):
            end = sql.find("}", i)
            i = n if end < 0 else end + 1
        else:
            break
    end = i
    while end < n and (sql[end].isalnum() or sql[end] == "_"):
        end += 1
    word = sql[i:end].upper()
    if word in _DML_WORDS:
        return "dml"
    if word in _DDL_WORDS:
        return "ddl"
    return "query"


class _Prepared:
    """A translated statement with the encoders and metadata of its result columns."""

    __slots__ = ("encoders", "fields", "names", "scans", "translation", "types")

    def __init__(self, translation: Translation) -> None:
        self.translation = translation
        self.names = [c.name for c in translation.columns]
        self.types: list[TypeMsg | None] = [c.type for c in translation.columns]
        self.fields: list[Any] | None = None
        self.encoders: list[v.Encoder] = []
        self.scans: frozenset[str] | None = None  # LOCKING: tables read other than by key
        if all(t is not None for t in self.types):
            self.fields = _fields(self.names, self.types)
            self.encoders = [v.encoder(t) for t in self.types]

    def bind(self, params: Any, param_types: Mapping[str, TypeMsg]) -> list[object]:
        fields = params.fields if params is not None else {}
        args = []
        for bound in self.translation.params:
            name, *path = bound.split(".")  # struct fields: name.position.position...
            if name in fields:
                value = fields[name]
            else:
                value = next((fields[k] for k in fields if k.lower() == name.lower()), None)
                if value is None:
                    raise _invalid(f"No parameter found for binding: {name}")
            type_ = param_types.get(name)
            if type_ is None:
                lowered = name.lower()
                type_ = next((t for k, t in param_types.items() if k.lower() == lowered), None)
            try:
                if path and type_ is not None:
                    value, type_ = v.field_value(value, type_, (int(p) for p in path))
                args.append(v.to_storage(value, type_))
            except ValueError as exc:
                raise _invalid(f"Invalid value for bind parameter {name}: {exc}") from None
        return args

    def result(self, rows: list[Any], row_count: int | None) -> Result:
        if self.fields is not None:
            try:
                return Result(self.fields, _encode(self.encoders, rows), row_count)
            except (ValueError, TypeError, OverflowError):
                pass  # a type guessed from the statement's shape was wrong: infer from values
        types = [
            t if t is not None and self.fields is None else v.infer_type(row[j] for row in rows)
            for j, t in enumerate(self.types)
        ]
        fields = _fields(self.names, types)
        try:
            return Result(fields, _encode([v.encoder(t) for t in types], rows), row_count)
        except (ValueError, TypeError, OverflowError) as exc:
            raise EngineError(
                grpc.StatusCode.INTERNAL, f"LocalSpanner cannot encode a result value: {exc}"
            ) from None


def _encode(encoders: Sequence[v.Encoder], rows: list[Any]) -> list[list[Any]]:
    return [[encode(value) for encode, value in zip(encoders, row, strict=True)] for row in rows]


def _fields(names: Sequence[str], types: Sequence[TypeMsg]) -> list[Any]:
    return [_Field(name=name, type_=type_) for name, type_ in zip(names, types, strict=True)]


def _types_key(param_types: Mapping[str, TypeMsg]) -> tuple[tuple[str, bytes], ...]:
    """The parameter types a translation depends on (struct fields and proto names too)."""
    return tuple((name, type_.SerializeToString()) for name, type_ in param_types.items())


def prepare(
    catalog: Catalog, sql: str, param_types: Mapping[str, TypeMsg], mode: str = PLAIN
) -> _Prepared:
    """The translation of a statement, from the catalog's cache when it was translated before."""
    if mode == PLAIN:
        key: Any = (sql, _types_key(param_types)) if param_types else sql
    else:
        key = (mode, sql, _types_key(param_types))
    prepared: _Prepared | None = catalog.prepared.get(key)
    if prepared is None:
        prepared = _Prepared(translate(sql, catalog, param_types, mode))
        catalog.prepared.put(key, prepared)
    return prepared


def execute(
    conn: sqlite3.Connection,
    catalog: Catalog,
    prepared: _Prepared,
    params: Any,
    param_types: Mapping[str, TypeMsg],
) -> Result:
    """Run a prepared statement (``params`` is a ``google.protobuf.Struct``)."""
    translation = prepared.translation
    args = prepared.bind(params, param_types) if translation.params else ()
    scans = frozenset[str]()
    try:
        if translation.tables and translation.sql is not None and _locking(prepared):
            if prepared.scans is None:
                prepared.scans = _scanned_tables(conn, catalog, translation)
            scans = prepared.scans
        cursor = conn.execute(translation.sql, args)
        rows = cursor.fetchall()
    except sqlite3.Error as exc:
        raise _sql_error(exc, translation, catalog) from None
    if translation.dml is None:
        result = prepared.result(rows, None)
    elif not translation.returning:
        result = Result([], [], cursor.rowcount)
    else:
        result = prepared.result(rows, len(rows))
    result.scans = scans
    return result


def execute_sql(
    conn: sqlite3.Connection,
    catalog: Catalog,
    sql: str,
    params: Any,
    param_types: Mapping[str, TypeMsg],
    mode: str = PLAIN,
) -> Result:
    """Run a GoogleSQL query or DML statement (``params`` is a ``google.protobuf.Struct``)."""
    return execute(conn, catalog, prepare(catalog, sql, param_types, mode), params, param_types)


def _locking(prepared: _Prepared) -> bool:
    return "spanpool_lock(" in prepared.translation.sql or prepared.translation.dml is not None


_PLAN_STEP = re.compile(
    r"(?:SCAN|SEARCH) (\S+)(?: AS \S+)?(?: USING (?:COVERING )?INDEX (\S+) \((.*)\))?"
)


def _scanned_tables(
    conn: sqlite3.Connection, catalog: Catalog, translation: Translation
) -> frozenset[str]:
    """Tables the statement reads other than by looking rows up by their whole primary key,
    from SQLite's query plan: a read-write transaction locks the whole of each of them."""
    args = [None] * len(translation.params)
    plan = conn.execute("EXPLAIN QUERY PLAN " + translation.sql, args).fetchall()
    scans = set()
    for row in plan:
        match = _PLAN_STEP.match(row[3])
        if match is None:
            continue
        table = catalog.find_table(match.group(1))
        if table is None or table.name not in translation.tables:
            continue  # SQLite's own foreign key checks are not reads of the statement
        index, terms = match.group(2) or "", match.group(3) or ""
        equal = {t.split("=")[0].strip().lower() for t in terms.split(" AND ") if "=" in t}
        by_key = index.startswith("sqlite_autoindex_") and all(
            k.lower() in equal for k in table.primary_key
        )
        if not by_key:
            scans.add(table.name)
    return frozenset(scans)


def _constraint_parts(message: str) -> tuple[str, list[str]]:
    """(table, columns) of a SQLite ``... constraint failed: T.a, T.b`` message."""
    _, _, detail = message.partition(": ")
    names = [part.strip() for part in detail.split(",") if part.strip()]
    table = names[0].split(".")[0] if names else ""
    return table, [name.split(".", 1)[-1] for name in names]


def _foreign_key_error(
    catalog: Catalog | None, table_name: str | None, *, deleting: bool
) -> EngineError | None:
    """Cloud Spanner's error for a foreign key (not interleaving) that a change violates."""
    if catalog is None or table_name is None:
        return None
    table = catalog.find_table(table_name)
    if table is None:
        return None
    if deleting:
        for other in catalog.tables:
            for foreign in other.foreign_keys:
                if foreign.table.lower() == table.name.lower() and not foreign.on_delete_cascade:
                    return EngineError(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"Foreign key constraint `{foreign.name}` is violated on table "
                        f"`{other.name}`. Cannot delete referenced values in "
                        f"{table.name}({', '.join(foreign.referenced)}).",
                    )
        return None
    if table.foreign_keys:
        foreign = table.foreign_keys[0]
        return EngineError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"Foreign key constraint `{foreign.name}` is violated on table `{table.name}`. "
            f"Cannot find referenced values in {foreign.table}({', '.join(foreign.referenced)}).",
        )
    return None


def _check_error(catalog: Catalog | None, table_name: str | None, message: str) -> EngineError:
    name = message.partition(": ")[2].strip() or "?"
    return EngineError(
        grpc.StatusCode.OUT_OF_RANGE,
        f"Check constraint `{table_name or '?'}`.`{name}` is violated.",
    )


def _sql_error(
    exc: sqlite3.Error, translation: Translation | None, catalog: Catalog | None = None
) -> EngineError:
    message = str(exc)
    dml = translation.dml if translation is not None else None
    if isinstance(exc, sqlite3.IntegrityError):
        table, columns = _constraint_parts(message)
        if message.startswith("UNIQUE") or "PRIMARY KEY" in message:
            return EngineError(
                grpc.StatusCode.ALREADY_EXISTS,
                f"Row already exists in table {table}: duplicate value for {', '.join(columns)}",
            )
        if message.startswith("NOT NULL"):
            return EngineError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"Cannot specify a null value for NOT NULL column {', '.join(columns)} "
                f"in table {table}",
            )
        if message.startswith("FOREIGN KEY"):
            target = translation.table if translation is not None else None
            found = _foreign_key_error(catalog, target, deleting=dml == "DELETE")
            if found is not None:
                return found
            if dml == "DELETE":
                return EngineError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "Cannot delete a row that has rows in an interleaved table "
                    "(ON DELETE NO ACTION)",
                )
            return EngineError(
                grpc.StatusCode.NOT_FOUND,
                f"Parent row is missing: a row of table {translation.table if translation else ''}"
                " cannot be written without its parent row",
            )
        if message.startswith("CHECK"):
            return _check_error(catalog, translation.table if translation else None, message)
        return EngineError(grpc.StatusCode.FAILED_PRECONDITION, message)
    if "user-defined function raised exception" in message:
        detail = getattr(_function_errors, "message", "") or message
        _function_errors.message = ""
        return _invalid(detail)
    if message.startswith("no such table"):
        return _invalid(f"Table not found: {message.partition(': ')[2]}")
    if message.startswith("no such column"):
        return _invalid(f"Unrecognized name: {message.partition(': ')[2]}")
    if message.startswith("no such function"):
        return _invalid(f"Function not found: {message.partition(': ')[2]}")
    if "syntax error" in message or "incomplete input" in message:
        return _invalid(f"Syntax error: {message}")
    if message.startswith("ambiguous column name"):
        return _invalid(f"Column name {message.partition(': ')[2]} is ambiguous")
    if "integer overflow" in message:
        return EngineError(grpc.StatusCode.OUT_OF_RANGE, "int64 overflow")
    if "database is locked" in message or "database is busy" in message:
        return EngineError(grpc.StatusCode.ABORTED, f"Transaction was aborted: {message}")
    if isinstance(exc, (sqlite3.OperationalError, sqlite3.ProgrammingError, sqlite3.DataError)):
        return _invalid(message)
    return EngineError(grpc.StatusCode.INTERNAL, f"LocalSpanner storage error: {message}")


# --- keys --------------------------------------------------------------------------------------


def _key_value(table: TableInfo, column: ColumnInfo, value: Any) -> object:
    try:
        return v.to_storage(value, column.type)
    except ValueError as exc:
        raise _invalid(
            f"Invalid key value for column {column.name} in table {table.name}: {exc}"
        ) from None


def _key_text(values: Sequence[object]) -> str:
    """A key as Cloud Spanner prints it in errors: ``[1,abc]``."""
    return "[" + ",".join(map(_key_value_text, values)) + "]"


def _key_value_text(value: object) -> str:
    match value:
        case None:
            return "NULL"
        case bool():
            return "true" if value else "false"
        case bytes():
            return base64.b64encode(value).decode("ascii")
    return str(value)


def _any_of(terms: list[str]) -> str:
    """``t1 OR t2 OR ...`` as a balanced tree, so long lists stay within SQLite's depth limit."""
    if len(terms) == 1:
        return terms[0]
    middle = len(terms) // 2
    return f"({_any_of(terms[:middle])} OR {_any_of(terms[middle:])})"


def _bound(
    columns: Sequence[str],
    descending: Sequence[bool],
    values: list[object],
    *,
    lower: bool,
    inclusive: bool,
    args: list[object],
) -> str:
    """Condition that a key's prefix is at or past (lower) or before (upper) a range bound."""
    if not values:
        return "1" if inclusive else "0"
    if all(value is not None for value in values) and not any(descending[: len(values)]):
        operator = (">" if lower else "<") + ("=" if inclusive else "")
        args.extend(values)
        left = ", ".join(columns[: len(values)])
        right = ", ".join("?" for _ in values)
        if len(values) == 1:
            return f"{left} {operator} ?"
        return f"({left}) {operator} ({right})"
    # Lexicographic comparison column by column; NULL sorts first in ascending order.
    terms = []
    equal: list[str] = []
    equal_args: list[object] = []
    for column, desc, value in zip(columns, descending, values, strict=False):
        beyond_larger = lower != desc  # whether "past the bound" means a larger value
        if value is None:
            past = f"{column} IS NOT NULL" if beyond_larger else "0"
            past_args: list[object] = []
        else:
            past = f"({column} > ?)" if beyond_larger else f"({column} < ? OR {column} IS NULL)"
            past_args = [value]
        terms.append((" AND ".join([*equal, past]), [*equal_args, *past_args]))
        if value is None:
            equal.append(f"{column} IS NULL")
        else:
            equal.append(f"{column} = ?")
            equal_args.append(value)
    if inclusive:
        terms.append((" AND ".join(equal), list(equal_args)))
    texts = []
    for text, term_args in terms:
        texts.append(f"({text})")
        args.extend(term_args)
    return "(" + " OR ".join(texts) + ")"


def _key_set_condition(
    key_set: Any,
    table: TableInfo,
    key_columns: Sequence[ColumnInfo],
    descending: Sequence[bool],
    *,
    exact_keys: bool,
) -> tuple[str, list[object]]:
    """SQL condition selecting the rows of a KeySet, and its arguments."""
    if key_set.all_:
        return "1", []
    quoted = [quote_ident(c.name) for c in key_columns]
    terms: list[str] = []
    args: list[object] = []
    for key in key_set.keys:
        values = key.values
        if len(values) > len(key_columns) or (exact_keys and len(values) != len(key_columns)):
            raise _invalid(
                f"Wrong number of key parts for table {table.name}: expected "
                f"{len(key_columns)}, got {len(values)}"
            )
        parts = []
        for column, name, value in zip(key_columns, quoted, values, strict=False):
            stored = _key_value(table, column, value)
            if stored is None:
                parts.append(f"{name} IS NULL")
            else:
                parts.append(f"{name} = ?")
                args.append(stored)
        terms.append("(" + (" AND ".join(parts) or "1") + ")")
    for key_range in key_set.ranges:
        conditions = []
        for which, lower in (("start_key_type", True), ("end_key_type", False)):
            bound = key_range.WhichOneof(which)
            if bound is None:
                continue
            values = getattr(key_range, bound).values
            if len(values) > len(key_columns):
                raise _invalid(f"Too many key parts in a key range of table {table.name}")
            stored = [_key_value(table, c, x) for c, x in zip(key_columns, values, strict=False)]
            inclusive = bound.endswith("closed")
            conditions.append(
                _bound(quoted, descending, stored, lower=lower, inclusive=inclusive, args=args)
            )
        terms.append("(" + (" AND ".join(conditions) or "1") + ")")
    if not terms:
        return "0", []
    return _any_of(terms), args


# --- reads -------------------------------------------------------------------------------------


def read(
    conn: sqlite3.Connection,
    catalog: Catalog,
    table: str,
    index: str,
    columns: Sequence[str],
    key_set: Any,
    limit: int,
    mode: str = PLAIN,
) -> Result:
    """Cloud Spanner's Read: rows of ``table`` selected by ``key_set``, in key order."""
    info = catalog.table(table)
    if not columns:
        raise _invalid("A read must name at least one column")
    selected = [info.column(name) for name in columns]
    filters = []
    if index:
        index_info = catalog.index(info.name, index)
        key_columns = [info.column(name) for name in index_info.columns]
        descending = list(index_info.descending)
        for name, desc in zip(info.primary_key, info.key_descending, strict=True):
            if name not in index_info.columns:
                key_columns.append(info.column(name))
                descending.append(desc)
        if index_info.null_filtered:
            filters = [f"{quote_ident(name)} IS NOT NULL" for name in index_info.columns]
    else:
        key_columns = info.key_columns
        descending = list(info.key_descending)
    condition, args = _key_set_condition(
        key_set, info, key_columns, descending, exact_keys=not index
    )
    order = ", ".join(
        quote_ident(c.name) + (" DESC" if desc else "")
        for c, desc in zip(key_columns, descending, strict=True)
    )
    source = quote_ident(info.name)
    if mode == VERSIONED:
        source = f"{versions.source_sql(info)} AS {source}"
    sql = (
        f"SELECT {', '.join(quote_ident(c.name) for c in selected)} "
        f"FROM {source} WHERE {' AND '.join([condition, *filters])}"
    )
    if order:
        sql += f" ORDER BY {order}"
    if limit > 0:
        sql += " LIMIT ?"
        args.append(limit)
    try:
        rows = conn.execute(sql, args).fetchall()
    except sqlite3.Error as exc:
        raise _sql_error(exc, None) from None
    names = [c.name for c in selected]
    types = [c.type for c in selected]
    try:
        encoded = _encode([v.encoder(t) for t in types], rows)
    except (ValueError, TypeError, OverflowError) as exc:
        raise EngineError(
            grpc.StatusCode.INTERNAL, f"Table {info.name} holds a value of the wrong type: {exc}"
        ) from None
    result = Result(_fields(names, types), encoded, None)
    if mode == LOCKING:
        keys = _point_keys(info, key_set) if not index else None
        if keys is None:
            result.scans = frozenset({info.name})
        else:
            result.keys = keys
    return result


def _point_keys(table: TableInfo, key_set: Any) -> list[tuple[str, tuple[object, ...]]] | None:
    """The whole keys a key set names, or None when it names ranges or key prefixes."""
    if key_set.all_ or key_set.ranges:
        return None
    keys = []
    columns = table.key_columns
    for key in key_set.keys:
        if len(key.values) != len(columns):
            return None
        stored = tuple(_key_value(table, c, x) for c, x in zip(columns, key.values, strict=True))
        keys.append((table.name, stored))
    return keys


def mutation_count(mutations: Sequence[Any]) -> int:
    """Cloud Spanner counts each column of each row a mutation writes (a delete counts once
    per key or range)."""
    count = 0
    for mutation in mutations:
        kind = mutation.WhichOneof("operation")
        if kind == "delete":
            key_set = mutation.delete.key_set
            count += max(1, len(key_set.keys) + len(key_set.ranges))
        elif kind is not None:
            write = getattr(mutation, kind)
            count += len(write.columns) * len(write.values)
    return count


def mutation_locks(
    catalog: Catalog, mutations: Sequence[Any]
) -> tuple[list[tuple[str, tuple[object, ...]]], set[str]]:
    """What a commit's mutations write: whole keys, and the tables whose key ranges (or key
    prefixes) they delete."""
    keys: list[tuple[str, tuple[object, ...]]] = []
    tables: set[str] = set()
    for mutation in mutations:
        kind = mutation.WhichOneof("operation")
        if kind == "delete":
            table = catalog.table(mutation.delete.table)
            point = _point_keys(table, mutation.delete.key_set)
            if point is None:
                tables.add(table.name)
            else:
                keys.extend(point)
            continue
        if kind not in ("insert", "update", "insert_or_update", "replace"):
            continue
        write = getattr(mutation, kind)
        table = catalog.table(write.table)
        position = {name.lower(): i for i, name in enumerate(write.columns)}
        slots = [position.get(k.lower()) for k in table.primary_key]
        columns = table.key_columns
        for row in write.values:
            try:
                key = tuple(
                    None if slot is None else _key_value(table, column, row.values[slot])
                    for column, slot in zip(columns, slots, strict=True)
                )
            except (IndexError, EngineError):
                tables.add(table.name)  # a malformed row: the commit reports it
                continue
            keys.append((table.name, key))
    return keys, tables


# --- write sets and versions ------------------------------------------------------------------


def key_positions(table: TableInfo) -> list[int]:
    """Where each primary key column is among the table's columns."""
    index = {c.name: i for i, c in enumerate(table.columns)}
    return [index[k] for k in table.primary_key]


def _depth(catalog: Catalog, table: TableInfo, seen: frozenset[str] = frozenset()) -> int:
    """How many tables (interleaving parents, tables referenced by foreign keys) must have
    their rows before this one's."""
    parents = [table.parent] if table.parent else []
    parents += [f.table for f in table.foreign_keys]
    depth = 0
    for name in parents:
        parent = catalog.find_table(name)
        if parent is None or parent.name in seen or parent is table:
            continue
        depth = max(depth, 1 + _depth(catalog, parent, seen | {table.name}))
    return depth


def write_rows(
    conn: sqlite3.Connection,
    catalog: Catalog,
    rows: Sequence[tuple[str, tuple[object, ...], tuple[object, ...] | None]],
) -> None:
    """Make each (table, key) row hold the given values, or not exist (None): deletes first,
    children before parents, then writes, parents before children."""
    tables = {name: catalog.table(name) for name, _, _ in rows}
    depth = {name: _depth(catalog, table) for name, table in tables.items()}
    conn.execute("PRAGMA defer_foreign_keys = ON")  # checked when the transaction commits
    deletes = sorted((r for r in rows if r[2] is None), key=lambda r: -depth[r[0]])
    writes = sorted((r for r in rows if r[2] is not None), key=lambda r: depth[r[0]])
    for name, key, _ in deletes:
        table = tables[name]
        where = " AND ".join(f"{quote_ident(k)} IS ?" for k in table.primary_key) or "1"
        conn.execute(f"DELETE FROM {quote_ident(table.name)} WHERE {where}", key)
    for name, key, values in writes:
        assert values is not None
        table = tables[name]
        where = " AND ".join(f"{quote_ident(k)} IS ?" for k in table.primary_key) or "1"
        others = [
            i
            for i, c in enumerate(table.columns)
            if c.name not in table.primary_key and c.generated is None
        ]
        changed = 0
        if others:
            sets = ", ".join(f"{quote_ident(table.columns[i].name)} = ?" for i in others)
            changed = conn.execute(
                f"UPDATE {quote_ident(table.name)} SET {sets} WHERE {where}",
                [values[i] for i in others] + list(key),
            ).rowcount
        else:
            changed = len(
                conn.execute(
                    f"SELECT 1 FROM {quote_ident(table.name)} WHERE {where}", key
                ).fetchall()
            )
        if not changed:
            written = [i for i, c in enumerate(table.columns) if c.generated is None]
            names = ", ".join(quote_ident(table.columns[i].name) for i in written)
            marks = ", ".join("?" for _ in written)
            conn.execute(
                f"INSERT INTO {quote_ident(table.name)} ({names}) VALUES ({marks})",
                [values[i] for i in written],
            )


def write_history(
    conn: sqlite3.Connection,
    catalog: Catalog,
    rows: Sequence[tuple[str, tuple[object, ...], tuple[object, ...] | None]],
    end: int,
) -> None:
    """Keep the versions a commit at ``end`` replaced: (table, key, the row before, or None
    when there was none)."""
    for name, key, old in rows:
        table = catalog.find_table(name)
        if table is None:
            continue
        if old is None:
            values: list[object] = [None] * len(table.columns)
            for position, part in zip(key_positions(table), key, strict=True):
                values[position] = part
            values += [end, 1]
        else:
            values = [*old, end, 0]
        conn.execute(versions.insert_sql(table), values)


def prune_history(conn: sqlite3.Connection, catalog: Catalog, before: int) -> None:
    """Forget the versions that ended before ``before``."""
    for table in catalog.tables:
        conn.execute(versions.prune_sql(table), (before,))


# --- mutations ---------------------------------------------------------------------------------


def apply_mutations(
    conn: sqlite3.Connection, catalog: Catalog, mutations: Sequence[Any], commit_timestamp: str
) -> None:
    """Apply Cloud Spanner mutations; all or nothing (inside the caller's transaction)."""
    stored_commit_timestamp = v.canonical_timestamp(commit_timestamp)
    conn.execute(f"SAVEPOINT {_SAVEPOINT}")
    try:
        for mutation in mutations:
            _apply_mutation(conn, catalog, mutation, stored_commit_timestamp)
    except BaseException:
        conn.execute(f"ROLLBACK TO {_SAVEPOINT}")
        conn.execute(f"RELEASE {_SAVEPOINT}")
        raise
    conn.execute(f"RELEASE {_SAVEPOINT}")


def _apply_mutation(
    conn: sqlite3.Connection, catalog: Catalog, mutation: Any, commit_timestamp: str
) -> None:
    kind = mutation.WhichOneof("operation")
    if kind == "delete":
        table = catalog.table(mutation.delete.table)
        condition, args = _key_set_condition(
            mutation.delete.key_set,
            table,
            table.key_columns,
            table.key_descending,
            exact_keys=True,
        )
        _run(
            conn,
            f"DELETE FROM {quote_ident(table.name)} WHERE {condition}",
            args,
            table,
            "",
            catalog,
        )
        return
    if kind not in ("insert", "update", "insert_or_update", "replace"):
        raise EngineError(
            grpc.StatusCode.UNIMPLEMENTED, f"Mutation {kind} is not supported by LocalSpanner"
        )
    write = getattr(mutation, kind)
    table = catalog.table(write.table)
    columns = [table.column(name) for name in write.columns]
    for column in columns:
        if column.generated is not None:
            raise _invalid(f"Cannot write into generated column `{table.name}.{column.name}`.")
    names = {c.name for c in columns}
    if len(names) != len(columns):
        raise _invalid(f"Duplicate column in a mutation of table {table.name}")
    missing_keys = [k for k in table.primary_key if k not in names]
    if missing_keys and kind in ("update", "insert_or_update"):
        raise _invalid(
            f"A {kind} mutation of table {table.name} must write its primary key columns: "
            f"{', '.join(missing_keys)}"
        )
    if kind in ("insert", "replace"):
        _check_required(table, names)
    quoted = quote_ident(table.name)
    column_list = ", ".join(quote_ident(c.name) for c in columns)
    insert = f"INSERT INTO {quoted} ({column_list}) VALUES ({', '.join('?' for _ in columns)})"
    # A key column the mutation leaves out is NULL (only nullable key columns can be).
    position = {c.name: i for i, c in enumerate(columns)}
    key_positions = [position[k] for k in table.primary_key if k in position]
    key_where = " AND ".join(
        f"{quote_ident(k)} IS {'?' if k in position else 'NULL'}" for k in table.primary_key
    )
    key_where = key_where or "1"
    updated = [i for i, c in enumerate(columns) if c.name not in table.primary_key]
    update = (
        f"UPDATE {quoted} SET "
        + ", ".join(f"{quote_ident(columns[i].name)} = ?" for i in updated)
        + f" WHERE {key_where}"
    )
    exists = f"SELECT 1 FROM {quoted} WHERE {key_where}"
    for row in write.values:
        if len(row.values) != len(columns):
            raise _invalid(
                f"Mutation of table {table.name} has {len(row.values)} values for "
                f"{len(columns)} columns"
            )
        values = [
            _stored(table, column, value, commit_timestamp)
            for column, value in zip(columns, row.values, strict=True)
        ]
        key = [values[i] for i in key_positions]
        key_text = _key_text(
            [values[position[k]] if k in position else None for k in table.primary_key]
        )
        if kind == "insert":
            _run(conn, insert, values, table, key_text, catalog)
        elif kind == "replace":
            _run(conn, f"DELETE FROM {quoted} WHERE {key_where}", key, table, key_text, catalog)
            _run(conn, insert, values, table, key_text, catalog)
        else:
            if updated:
                changed = _run(
                    conn, update, [values[i] for i in updated] + key, table, key_text, catalog
                )
            else:
                changed = len(conn.execute(exists, key).fetchall())
            if changed == 0:
                if kind == "update":
                    raise EngineError(
                        grpc.StatusCode.NOT_FOUND,
                        f"Row {key_text} in table {table.name} is missing. Row cannot be updated.",
                    )
                _check_required(table, names)
                _run(conn, insert, values, table, key_text, catalog)


def _check_required(table: TableInfo, names: set[str]) -> None:
    required = [
        c.name
        for c in table.columns
        if not c.nullable and c.name not in names and c.default_sql is None and c.generated is None
    ]
    if required:
        raise EngineError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"A new row in table {table.name} does not specify a non-null value for these "
            f"NOT NULL columns: {', '.join(required)}",
        )


def _stored(table: TableInfo, column: ColumnInfo, value: Any, commit_timestamp: str) -> object:
    if (
        value.WhichOneof("kind") == "string_value"
        and value.string_value == v.COMMIT_TIMESTAMP_SENTINEL
        and int(column.type.code) == v.TIMESTAMP
    ):
        if not column.allow_commit_timestamp:
            raise EngineError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"Cannot write a commit timestamp into column {column.name} of table "
                f"{table.name}: it does not set allow_commit_timestamp=true",
            )
        return commit_timestamp
    try:
        stored = v.to_storage(value, column.type)
    except ValueError as exc:  # Cloud Spanner answers FAILED_PRECONDITION for these
        raise EngineError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"Invalid value for column {column.name} in table {table.name}: {exc}",
        ) from None
    if stored is None and not column.nullable:
        raise EngineError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"Cannot specify a null value for column: {table.name}.{column.name}",
        )
    return stored


def _run(
    conn: sqlite3.Connection,
    sql: str,
    args: Sequence[object],
    table: TableInfo,
    key: str,
    catalog: Catalog | None = None,
) -> int:
    """Execute one mutation statement; returns the number of rows it changed."""
    try:
        return conn.execute(sql, args).rowcount
    except sqlite3.IntegrityError as exc:
        message = str(exc)
        if message.startswith("UNIQUE") or "PRIMARY KEY" in message:
            _, columns = _constraint_parts(message)
            if [c.lower() for c in columns] == [k.lower() for k in table.primary_key]:
                text = f"Row {key} in table {table.name} already exists"
            else:
                text = f"Unique index violation in table {table.name} on {', '.join(columns)}"
            raise EngineError(grpc.StatusCode.ALREADY_EXISTS, text) from None
        if message.startswith("FOREIGN KEY"):
            found = _foreign_key_error(catalog, table.name, deleting=sql.startswith("DELETE"))
            if found is not None:
                raise found from None
            if sql.startswith("DELETE"):
                raise EngineError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"Cannot delete from table {table.name}: rows of an interleaved table "
                    "(ON DELETE NO ACTION) still refer to it",
                ) from None
            raise EngineError(
                grpc.StatusCode.NOT_FOUND,
                f"Parent row for row {key} in table {table.name} is missing. "
                "Row cannot be written.",
            ) from None
        if message.startswith("CHECK"):
            raise _check_error(catalog, table.name, message) from None
        raise _sql_error(exc, None, catalog) from None
    except sqlite3.Error as exc:
        raise _sql_error(exc, None, catalog) from None
