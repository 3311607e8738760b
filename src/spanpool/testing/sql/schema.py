"""LocalSpanner schemas: GoogleSQL DDL parsed into a catalog and into SQLite tables and indexes.

The DDL statements applied to a database are kept, in order, in the private table
``_spanpool_ddl`` of its SQLite file; ``load_catalog`` replays them to rebuild the catalog.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from google.protobuf import descriptor_pb2

from . import values as v
from . import versions
from .tokens import (
    IDENT,
    NUMBER,
    QIDENT,
    STRING,
    Cursor,
    Group,
    Node,
    Token,
    is_group,
    is_op,
    is_word,
    parse_tree,
    quote_ident,
    split,
    sql_literal,
    text_of,
)
from .values import EngineError, TypeMsg

_Found = TypeVar("_Found")

DDL_TABLE = "_spanpool_ddl"

_DECLARED_TYPES = {
    v.INT64: "INT64",  # INTEGER affinity, but not a rowid alias
    v.FLOAT64: "FLOAT64",  # REAL affinity
    v.FLOAT32: "FLOAT32",
    v.BOOL: "BOOL",  # NUMERIC affinity; holds 0 and 1
    v.STRING: "TEXT",
    v.BYTES: "BLOB",
    v.DATE: "TEXT",
    v.TIMESTAMP: "TEXT",
    v.NUMERIC: "TEXT COLLATE SPANPOOL_NUMERIC",
    v.JSON: "TEXT",
    v.UUID: "TEXT",
    v.ARRAY: "TEXT",
    v.PROTO: "BLOB",
    v.ENUM: "INT64",
}
_KEYABLE = frozenset(_DECLARED_TYPES) - {v.ARRAY, v.JSON, v.PROTO}
PROTOS_TABLE = "_spanpool_proto_descriptors"


def _invalid(message: str) -> EngineError:
    return EngineError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _precondition(message: str) -> EngineError:
    return EngineError(grpc.StatusCode.FAILED_PRECONDITION, message)


def _not_found(message: str) -> EngineError:
    return EngineError(grpc.StatusCode.NOT_FOUND, message)


def _found(found: _Found | None, message: str) -> _Found:
    """``found``, unless it is None: then NOT_FOUND with ``message``."""
    if found is None:
        raise _not_found(message)
    return found


def _named(names: set[str], verb: Node, name: str) -> None:
    """Record a CREATE or ALTER (the name is kept) or a DROP (forgotten) of an object that
    LocalSpanner only knows by name."""
    if is_word(verb, "DROP"):
        names.discard(name)
    else:
        names.add(name)


def _unimplemented(message: str) -> EngineError:
    return EngineError(grpc.StatusCode.UNIMPLEMENTED, message)


# --- catalog -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnInfo:
    """A table column: its Spanner type and options."""

    name: str
    type: TypeMsg
    nullable: bool = True
    allow_commit_timestamp: bool = False
    default_sql: str | None = None  # SQLite DEFAULT expression, already in storage form
    generated: str | None = None  # SQLite expression of a generated column
    stored: bool = True  # whether a generated column is STORED


@dataclass(frozen=True)
class ForeignKeyInfo:
    """``CONSTRAINT name FOREIGN KEY (columns) REFERENCES table (referenced)``."""

    name: str
    columns: list[str]
    table: str
    referenced: list[str]
    on_delete_cascade: bool = False


@dataclass(frozen=True)
class TableInfo:
    """A table: columns in order, primary key, the parent it is interleaved in, and its
    foreign keys and check constraints (name, SQLite expression)."""

    name: str
    columns: list[ColumnInfo]
    primary_key: list[str]
    key_descending: list[bool] = field(default_factory=list)
    parent: str | None = None
    on_delete_cascade: bool = False
    foreign_keys: list[ForeignKeyInfo] = field(default_factory=list)
    checks: list[tuple[str, str]] = field(default_factory=list)
    _by_name: dict[str, ColumnInfo] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_name.update((c.name.lower(), c) for c in self.columns)
        if not self.key_descending:
            self.key_descending.extend(False for _ in self.primary_key)

    def find_column(self, name: str) -> ColumnInfo | None:
        return self._by_name.get(name.lower())

    def column(self, name: str) -> ColumnInfo:
        """The column called ``name`` (case-insensitive); NOT_FOUND if there is none."""
        return _found(self.find_column(name), f"Column not found in table {self.name}: {name}")

    @property
    def key_columns(self) -> list[ColumnInfo]:
        return [self._by_name[name.lower()] for name in self.primary_key]


@dataclass(frozen=True)
class IndexInfo:
    """A secondary index; its keys are ``columns`` followed by the table's primary key."""

    name: str
    table: str
    columns: list[str]
    descending: list[bool]
    unique: bool = False
    null_filtered: bool = False
    storing: list[str] = field(default_factory=list)
    parent: str | None = None


class LRUCache:
    """A small thread-safe LRU mapping."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._data: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


@dataclass(frozen=True)
class ViewInfo:
    """A view: its GoogleSQL query, and the name and type of each column."""

    name: str
    query: str
    columns: list[ColumnInfo]


@dataclass
class Objects:
    """Schema objects that LocalSpanner records but that do not change how data is stored."""

    roles: set[str] = field(default_factory=set)
    proto_types: set[str] = field(default_factory=set)  # of the proto bundle
    change_streams: set[str] = field(default_factory=set)
    sequences: set[str] = field(default_factory=set)
    options: dict[str, object] = field(default_factory=dict)
    proto_descriptors: bytes = b""  # a serialized FileDescriptorSet
    proto_kinds: dict[str, int] = field(default_factory=dict)  # name -> PROTO or ENUM

    def copy(self) -> Objects:
        return Objects(
            set(self.roles),
            set(self.proto_types),
            set(self.change_streams),
            set(self.sequences),
            dict(self.options),
            self.proto_descriptors,
            dict(self.proto_kinds),
        )

    def set_descriptors(self, data: bytes) -> None:
        """Take the message and enum names of a serialized ``FileDescriptorSet``."""
        try:
            files = descriptor_pb2.FileDescriptorSet.FromString(data).file
        except Exception:  # the protobuf runtime raises its own DecodeError
            raise _invalid("proto_descriptors is not a serialized FileDescriptorSet") from None
        kinds: dict[str, int] = {}

        def walk(prefix: str, messages: Any, enums: Any) -> None:
            for enum in enums:
                kinds[prefix + enum.name] = v.ENUM
            for message in messages:
                kinds[prefix + message.name] = v.PROTO
                walk(prefix + message.name + ".", message.nested_type, message.enum_type)

        for file in files:
            walk(file.package + "." if file.package else "", file.message_type, file.enum_type)
        self.proto_descriptors = data
        self.proto_kinds = kinds


class Catalog:
    """The schema of one database. Immutable: DDL returns a new catalog."""

    def __init__(
        self,
        statements: Sequence[str] = (),
        tables: Sequence[TableInfo] = (),
        indexes: Sequence[IndexInfo] = (),
        views: Sequence[ViewInfo] = (),
        objects: Objects | None = None,
    ) -> None:
        self.statements: list[str] = list(statements)
        self._tables = {t.name.lower(): t for t in tables}
        self._indexes = {i.name.lower(): i for i in indexes}
        self._views = {w.name.lower(): w for w in views}
        self.objects = objects if objects is not None else Objects()
        self.prepared = LRUCache(1024)  # translated statements, by the engine

    @property
    def tables(self) -> list[TableInfo]:
        return list(self._tables.values())

    @property
    def indexes(self) -> list[IndexInfo]:
        return list(self._indexes.values())

    def find_table(self, name: str) -> TableInfo | None:
        return self._tables.get(name.lower())

    def table(self, name: str) -> TableInfo:
        """The table called ``name`` (case-insensitive); NOT_FOUND if there is none."""
        return _found(self.find_table(name), f"Table not found: {name}")

    def find_index(self, name: str) -> IndexInfo | None:
        return self._indexes.get(name.lower())

    @property
    def views(self) -> list[ViewInfo]:
        return list(self._views.values())

    def find_view(self, name: str) -> ViewInfo | None:
        return self._views.get(name.lower())

    def index(self, table: str, name: str) -> IndexInfo:
        """The index ``name`` of ``table``; NOT_FOUND if there is none."""
        index = self._indexes.get(name.lower())
        if index is None or index.table.lower() != table.lower():
            raise _not_found(f"Index not found on table {table}: {name}")
        return index


# --- DDL parsing -------------------------------------------------------------------------------


def _parse_type(cur: Cursor, protos: Objects) -> TypeMsg:
    node = cur.peek()
    if not isinstance(node, Token) or node.kind not in (IDENT, QIDENT):
        raise cur.error("Expected a column type")
    cur.take()
    word = node.upper
    if is_op(cur.peek(), ".") or node.kind == QIDENT or word not in v.SCALAR_NAMES:
        path = [node.text]
        while is_op(cur.peek(), ".") and isinstance(cur.peek(1), Token):
            cur.take()
            path.append(text_of(cur.take()))
        name = ".".join(path)
        if name in protos.proto_types:
            return v.proto_type(protos.proto_kinds.get(name, v.PROTO), name)
        if len(path) > 1:
            raise _not_found(f"Proto type not found in the proto bundle: {name}")
    if word == "ARRAY":
        cur.expect_op("<")
        element = _parse_type(cur, protos)
        cur.expect_op(">")
        if int(element.code) == v.ARRAY:
            raise _invalid("Arrays of arrays are not supported")
        return v.array_type(element)
    code = v.SCALAR_NAMES.get(word)
    if code is None:
        if word in ("STRUCT", "PROTO", "ENUM", "INTERVAL", "TOKENLIST"):
            raise _unimplemented(f"Columns of type {word} are not supported by LocalSpanner")
        raise _invalid(f"Unknown column type: {word}")
    if code in (v.STRING, v.BYTES):
        length = cur.group()
        if not (
            len(length.items) == 1
            and isinstance(length.items[0], Token)
            and (length.items[0].upper == "MAX" or length.items[0].kind == NUMBER)
        ):
            raise _invalid(f"Expected {word}(MAX) or {word}(<length>)")
    return v.scalar_type(code)


def _parse_options(group: Group) -> dict[str, object]:
    options: dict[str, object] = {}
    for part in split(group.items):
        if len(part) != 3 or not is_op(part[1], "=") or not isinstance(part[0], Token):
            raise _invalid("Expected OPTIONS (name = value, ...)")
        value = part[2]
        if is_word(value, "TRUE", "FALSE", "NULL"):
            assert isinstance(value, Token)
            options[part[0].text.lower()] = {"TRUE": True, "FALSE": False, "NULL": None}[
                value.upper
            ]
        elif isinstance(value, Token):
            options[part[0].text.lower()] = value.value if value.kind == STRING else value.text
        else:
            raise _invalid("Expected OPTIONS (name = value, ...)")
    return options


IDENTITY_DEFAULT = "((random() & 4611686018427387903) + 1)"
"""What an identity column (``GENERATED BY DEFAULT AS IDENTITY``, ``AUTO_INCREMENT``) gets when
an insert gives it no value: a random positive INT64, unique in practice and spread over the key
space as a bit-reversed sequence's values are."""


def _default_sql(nodes: list[Node], type_: TypeMsg) -> str:
    """SQLite DEFAULT expression for a GoogleSQL DEFAULT: a literal or CURRENT_TIMESTAMP()."""
    code = int(type_.code)
    sign = ""
    if nodes and is_op(nodes[0], "-", "+") and len(nodes) == 2:
        sign = "-" if is_op(nodes[0], "-") else ""
        nodes = nodes[1:]
    if (
        len(nodes) == 2
        and is_word(nodes[0], "CURRENT_TIMESTAMP", "PENDING_COMMIT_TIMESTAMP")
        and is_group(nodes[1])
        and code == v.TIMESTAMP
    ):
        return "(spanpool_now())"
    if len(nodes) == 2 and is_word(nodes[0], "DATE", "TIMESTAMP", "NUMERIC", "JSON"):
        nodes = nodes[1:]
    if len(nodes) == 1 and isinstance(nodes[0], Token):
        token = nodes[0]
        try:
            if is_word(token, "NULL"):
                return "NULL"
            if is_word(token, "TRUE", "FALSE") and code == v.BOOL:
                return "1" if token.upper == "TRUE" else "0"
            if token.kind == NUMBER and code in (v.INT64, v.FLOAT64, v.FLOAT32, v.NUMERIC):
                text = sign + token.text
                if code == v.INT64:
                    return sql_literal(int(text, 0))
                if code == v.NUMERIC:
                    return sql_literal(v.canonical_numeric(text))
                return sql_literal(float(text))
            if token.kind == STRING and not sign:
                assert isinstance(token.value, str)
                wire = v.Value(string_value=token.value)
                return sql_literal(v.to_storage(wire, type_))
        except ValueError as exc:
            raise _invalid(f"Invalid DEFAULT value: {exc}") from None
    raise _unimplemented(
        "LocalSpanner supports only literals and CURRENT_TIMESTAMP() as DEFAULT values"
    )


def _generated_columns(
    sql: str, columns: list[ColumnInfo], expressions: dict[str, Group]
) -> list[ColumnInfo]:
    """Columns with the SQLite text of their generation expressions (which may use any column
    of the table, so they are translated once every column is known)."""
    from .translate import column_expression  # the translator needs this module's catalog

    done = []
    for column in columns:
        group = expressions.get(column.name.lower())
        if group is not None:
            text = column_expression(sql, group.items, columns)
            column = dataclasses.replace(column, generated=text)
        done.append(column)
    return done


def _parse_column(
    cur: Cursor, table: str, protos: Objects
) -> tuple[ColumnInfo, bool, Group | None]:
    """A column definition; also returns whether it says PRIMARY KEY."""
    name = cur.name("a column name")
    type_ = _parse_type(cur, protos)
    nullable, allow_commit_timestamp, default, primary = True, False, None, False
    generated: Group | None = None
    stored = False
    while not cur.at_end():
        if cur.accept("NOT", "NULL"):
            nullable = False
        elif cur.accept("PRIMARY", "KEY"):
            primary = True
        elif cur.accept("DEFAULT"):
            default = _default_sql(cur.group().items, type_)
        elif cur.accept("OPTIONS"):
            options = _parse_options(cur.group())
            for key, value in options.items():
                if key != "allow_commit_timestamp":
                    raise _invalid(f"Unknown column option: {key}")
                if int(type_.code) != v.TIMESTAMP and value:
                    raise _invalid(
                        f"Column {table}.{name}: allow_commit_timestamp needs a TIMESTAMP column"
                    )
                allow_commit_timestamp = bool(value)
        elif cur.accept("HIDDEN"):
            pass
        elif cur.accept("GENERATED", "BY", "DEFAULT", "AS", "IDENTITY") or cur.accept(
            "AUTO_INCREMENT"
        ):
            if is_group(cur.peek()):
                cur.group()  # the sequence's options: every kind gives unique positive values
            if int(type_.code) != v.INT64:
                raise _invalid(f"Column {table}.{name}: an identity column must be INT64")
            default = IDENTITY_DEFAULT
        elif cur.accept("GENERATED", "ALWAYS", "AS") or cur.accept("AS"):
            generated = cur.group()
            stored = cur.accept("STORED")
        else:
            raise cur.error(f"Unexpected text in the definition of column {name}")
    column = ColumnInfo(name, type_, nullable, allow_commit_timestamp, default)
    if generated is not None:
        if default is not None:
            raise _invalid(f"Column {table}.{name} cannot have both a DEFAULT and AS (...)")
        column = dataclasses.replace(column, generated="", stored=stored)
    return column, primary, generated


def _dotted_names(group: Group) -> list[str]:
    """``(a.b.C, d.E,)``: the dotted names of a proto bundle."""
    names = []
    for part in split(group.items):
        if not part:
            continue
        words = [text_of(n) for n in part if not is_op(n, ".")]
        if not words or len(part) != 2 * len(words) - 1:
            raise _invalid("Expected proto type names such as package.Message")
        names.append(".".join(words))
    return names


def _parse_key(group: Group) -> tuple[list[str], list[bool]]:
    names: list[str] = []
    descending: list[bool] = []
    for part in split(group.items):
        cur = Cursor("", part)
        names.append(cur.name("a key column"))
        descending.append(cur.accept("DESC"))
        if not descending[-1]:
            cur.accept("ASC")
        if not cur.at_end():
            raise _invalid("Expected a key column, optionally followed by ASC or DESC")
    return names, descending


# --- schema changes ----------------------------------------------------------------------------


def _null_key_guard(table: TableInfo) -> list[str]:
    """A trigger making NULL key parts unique, as in Cloud Spanner (SQLite keeps NULLs apart)."""
    nullable = [c.name for c in table.key_columns if c.nullable]
    if not nullable:
        return []
    quoted = quote_ident(table.name)
    any_null = " OR ".join(f"NEW.{quote_ident(k)} IS NULL" for k in nullable)
    same_key = " AND ".join(f"{quote_ident(k)} IS NEW.{quote_ident(k)}" for k in table.primary_key)
    message = "UNIQUE constraint failed: " + ", ".join(
        f"{table.name}.{k}" for k in table.primary_key
    )
    return [
        f"CREATE TRIGGER {quote_ident('_spanpool_null_key_' + table.name)} BEFORE INSERT ON "
        f"{quoted} WHEN {any_null} BEGIN SELECT RAISE(ABORT, {sql_literal(message)}) "
        f"WHERE EXISTS (SELECT 1 FROM {quoted} WHERE {same_key}); END"
    ]


def declared_type(column: ColumnInfo) -> str:
    """The SQLite type a column is declared with."""
    return _DECLARED_TYPES[int(column.type.code)]


def _column_sql(column: ColumnInfo) -> str:
    sql = f"{quote_ident(column.name)} {declared_type(column)}"
    if column.generated is not None:
        kind = "STORED" if column.stored else "VIRTUAL"
        sql += f" GENERATED ALWAYS AS ({column.generated}) {kind}"
    if not column.nullable:
        sql += " NOT NULL"
    if column.default_sql is not None:
        sql += f" DEFAULT {column.default_sql}"
    return sql


def _names(names: Sequence[str]) -> str:
    return ", ".join(quote_ident(name) for name in names)


class _Schema:
    """A schema being changed: applies DDL statements, returning the SQLite DDL for each."""

    def __init__(self, catalog: Catalog) -> None:
        self.statements = list(catalog.statements)
        self.tables = {t.name.lower(): t for t in catalog.tables}
        self.indexes = {i.name.lower(): i for i in catalog.indexes}
        self.views = {w.name.lower(): w for w in catalog.views}
        self.objects = catalog.objects.copy()

    def catalog(self) -> Catalog:
        return Catalog(
            self.statements,
            list(self.tables.values()),
            list(self.indexes.values()),
            list(self.views.values()),
            self.objects,
        )

    def apply(self, statement: str) -> list[str]:
        """Apply one DDL statement to the schema; returns the SQLite statements it needs."""
        nodes = parse_tree(statement)
        cur = Cursor(statement, nodes)
        sqlite: list[str]
        if cur.accept("CREATE", "TABLE"):
            sqlite = self._create_table(cur)
        elif is_word(cur.peek(), "CREATE") and self._is_index(cur):
            sqlite = self._create_index(cur)
        elif cur.accept("DROP", "TABLE"):
            sqlite = self._drop_table(cur)
        elif cur.accept("DROP", "INDEX"):
            sqlite = self._drop_index(cur)
        elif cur.accept("ALTER", "TABLE"):
            sqlite = self._alter_table(cur)
        elif cur.accept("ALTER", "DATABASE"):
            cur.name("a database name")
            cur.expect("SET", "OPTIONS")
            self.objects.options.update(_parse_options(cur.group()))
            if not cur.at_end():
                raise cur.error("Unexpected text after ALTER DATABASE ... SET OPTIONS (...)")
            sqlite = []  # database options do not matter to LocalSpanner
        elif self._view_statement(cur):
            sqlite = self._view(cur)
        elif self._other_object(cur):
            sqlite = []
        elif cur.accept("ANALYZE"):
            if not cur.at_end():
                raise cur.error("Unexpected text after ANALYZE")
            sqlite = []
        elif is_word(cur.peek(), "CREATE", "ALTER", "DROP", "GRANT", "REVOKE", "RENAME"):
            words = " ".join(n.text.upper() for n in nodes[:3] if isinstance(n, Token))
            raise _unimplemented(f"LocalSpanner does not support this DDL statement: {words} ...")
        else:
            raise _invalid(f"Not a DDL statement: {statement.strip()[:80]!r}")
        self.statements.append(statement)
        return sqlite

    @staticmethod
    def _view_statement(cur: Cursor) -> bool:
        return (
            is_word(cur.peek(), "CREATE")
            and (is_word(cur.peek(1), "VIEW") or is_word(cur.peek(3), "VIEW"))
        ) or (is_word(cur.peek(), "DROP") and is_word(cur.peek(1), "VIEW"))

    def _view(self, cur: Cursor) -> list[str]:
        if cur.accept("DROP", "VIEW"):
            name = cur.name("a view name")
            if not cur.at_end():
                raise cur.error("Unexpected text after DROP VIEW")
            view = _found(self.views.pop(name.lower(), None), f"View not found: {name}")
            return [f"DROP VIEW {quote_ident(view.name)}"]
        cur.expect("CREATE")
        replace = cur.accept("OR", "REPLACE")
        cur.expect("VIEW")
        name = cur.name("a view name")
        if cur.accept("SQL", "SECURITY"):
            if not (cur.accept("INVOKER") or cur.accept("DEFINER")):
                raise cur.error("Expected SQL SECURITY INVOKER or DEFINER")
        else:
            raise cur.error("Expected SQL SECURITY INVOKER")
        cur.expect("AS")
        first = cur.peek()
        if first is None:
            raise cur.error("Expected the view's query")
        query = self.statements_text(cur, first)
        old = self.views.get(name.lower())
        if old is not None and not replace:
            raise _precondition(f"Duplicate name in schema: {name}.")
        if old is None:
            self._check_new_name(name)
        from .translate import translate  # the translator needs this module's catalog

        translation = translate(query, self.catalog(), {})
        if translation.dml is not None or translation.params:
            raise _invalid(f"The query of view {name} must be a query without parameters")
        names = [c.name for c in translation.columns]
        if any(not n for n in names) or len({n.lower() for n in names}) != len(names):
            raise _invalid(f"Every column of view {name} needs a distinct name")
        columns = [
            ColumnInfo(c.name, c.type if c.type is not None else v.scalar_type(v.STRING))
            for c in translation.columns
        ]
        self.views[name.lower()] = ViewInfo(name, query, columns)
        drop = [f"DROP VIEW {quote_ident(old.name)}"] if old is not None else []
        return [*drop, f"CREATE VIEW {quote_ident(name)} AS {translation.sql}"]

    @staticmethod
    def statements_text(cur: Cursor, first: Node) -> str:
        """The statement's text from ``first`` to its end."""
        cur.rest()
        return cur.sql[first.pos :].strip().rstrip(";")

    def _other_object(self, cur: Cursor) -> bool:
        """Roles, grants, proto bundles, change streams, sequences and statistics: recorded
        (roles, proto types) or accepted, as they do not change what LocalSpanner stores."""
        objects = self.objects
        if cur.accept("CREATE", "ROLE"):
            name = cur.name("a role name")
            if name.lower() in {r.lower() for r in objects.roles}:
                raise _precondition(f"Duplicate name in schema: {name}.")
            objects.roles.add(name)
        elif cur.accept("DROP", "ROLE"):
            name = cur.name("a role name")
            match = [r for r in objects.roles if r.lower() == name.lower()]
            if not match:
                raise _not_found(f"Role not found: {name}")
            objects.roles.discard(match[0])
        elif cur.accept("GRANT") or cur.accept("REVOKE"):
            cur.rest()
        elif cur.accept("CREATE", "PROTO", "BUNDLE") or cur.accept("ALTER", "PROTO", "BUNDLE"):
            if is_group(cur.peek()):
                names = _dotted_names(cur.group())
                missing = [n for n in names if objects.proto_kinds and n not in objects.proto_kinds]
                if missing:
                    raise _invalid(
                        f"Proto type {missing[0]} is not in the proto_descriptors of the request"
                    )
                objects.proto_types.update(names)
            while cur.accept("INSERT") or cur.accept("UPDATE") or cur.accept("DELETE"):
                group = cur.group()
                if is_word(cur.nodes[cur.i - 2], "DELETE"):
                    objects.proto_types.difference_update(_dotted_names(group))
                else:
                    objects.proto_types.update(_dotted_names(group))
        elif cur.accept("DROP", "PROTO", "BUNDLE"):
            objects.proto_types.clear()
        elif is_word(cur.peek(1), "CHANGE") and is_word(cur.peek(2), "STREAM"):
            verb = cur.take()
            cur.expect("CHANGE", "STREAM")
            _named(objects.change_streams, verb, cur.name("a change stream name"))
            cur.rest()
        elif is_word(cur.peek(), "CREATE", "ALTER", "DROP") and is_word(cur.peek(1), "SEQUENCE"):
            verb = cur.take()
            cur.take()
            cur.accept("IF", "NOT", "EXISTS") or cur.accept("IF", "EXISTS")
            _named(objects.sequences, verb, cur.name("a sequence name"))
            cur.rest()
        elif cur.accept("ALTER", "STATISTICS"):
            cur.rest()
        else:
            return False
        if not cur.at_end():
            raise cur.error("Unexpected text at the end of the statement")
        return True

    @staticmethod
    def _is_index(cur: Cursor) -> bool:
        for ahead in range(1, 4):
            if is_word(cur.peek(ahead), "INDEX"):
                return True
            if not is_word(cur.peek(ahead), "UNIQUE", "NULL_FILTERED"):
                return False
        return False

    def _check_new_name(self, name: str) -> None:
        if name.lower() in (DDL_TABLE, PROTOS_TABLE) or name.lower().startswith("sqlite_"):
            raise _invalid(f"The name {name} is reserved by LocalSpanner")
        key = name.lower()
        if key in self.tables or key in self.indexes or key in self.views:
            raise _precondition(f"Duplicate name in schema: {name}.")

    def _table(self, name: str) -> TableInfo:
        return _found(self.tables.get(name.lower()), f"Table not found: {name}")

    def _create_table(self, cur: Cursor) -> list[str]:
        if_not_exists = cur.accept("IF", "NOT", "EXISTS")
        name = cur.name("a table name")
        if if_not_exists and name.lower() in self.tables:
            return []
        self._check_new_name(name)
        columns: list[ColumnInfo] = []
        expressions: dict[str, Group] = {}
        inline_key: list[str] = []
        definitions = split(cur.group().items)
        if len(definitions) > 1 and not definitions[-1]:
            definitions.pop()  # GoogleSQL allows a comma after the last column
        constraints: list[list[Node]] = []
        for part in definitions:
            if is_word(part[0] if part else None, "CONSTRAINT", "FOREIGN", "CHECK"):
                constraints.append(part)
                continue
            column, primary, generated = _parse_column(Cursor(cur.sql, part), name, self.objects)
            if column.name.lower() in {c.name.lower() for c in columns}:
                raise _invalid(f"Duplicate column name {name}.{column.name}")
            columns.append(column)
            if generated is not None:
                expressions[column.name.lower()] = generated
            if primary:
                inline_key.append(column.name)
        if expressions:
            columns = _generated_columns(cur.sql, columns, expressions)
        if cur.accept("PRIMARY", "KEY"):
            if inline_key:
                raise _invalid(f"Table {name} has two primary key definitions")
            key, descending = _parse_key(cur.group())
        elif inline_key:
            key, descending = inline_key, [False] * len(inline_key)
        else:
            raise cur.error("Expected PRIMARY KEY")
        parent, cascade = None, False
        while cur.accept_op(","):
            if cur.accept("INTERLEAVE", "IN"):
                enforced = cur.accept("PARENT")
                parent = cur.name("a parent table")
                if cur.accept("ON", "DELETE"):
                    cascade = cur.accept("CASCADE")
                    if not cascade:
                        cur.expect("NO", "ACTION")
                if not enforced:
                    raise _unimplemented(
                        "INTERLEAVE IN without PARENT is not supported by LocalSpanner"
                    )
            elif cur.accept("ROW", "DELETION", "POLICY"):
                cur.group()  # row deletion policies never run in LocalSpanner
            else:
                raise cur.error("Expected INTERLEAVE IN PARENT or ROW DELETION POLICY")
        if not cur.at_end():
            raise cur.error("Unexpected text after the table definition")
        by_name = {c.name.lower(): c for c in columns}
        for column_name in key:
            key_column = by_name.get(column_name.lower())
            if key_column is None:
                raise _invalid(f"Primary key column {column_name} is not a column of {name}")
            if int(key_column.type.code) not in _KEYABLE:
                raise _invalid(
                    f"Column {name}.{key_column.name} of type {v.type_name(key_column.type)} "
                    "cannot be part of a primary key"
                )
        if len({k.lower() for k in key}) != len(key):
            raise _invalid(f"Duplicate column in the primary key of {name}")
        key = [by_name[k.lower()].name for k in key]
        table = TableInfo(name, columns, key, descending, None, cascade)
        foreign_keys, checks, before = self._constraints(cur.sql, table, constraints)
        clauses = [_column_sql(c) for c in columns]
        if key:
            parts = [
                quote_ident(k) + (" DESC" if d else "")
                for k, d in zip(key, descending, strict=True)
            ]
            clauses.append(f"PRIMARY KEY ({', '.join(parts)})")
        if parent is not None:
            parent_table = self._table(parent)
            parent_key = parent_table.key_columns
            own = table.key_columns[: len(parent_key)]
            if len(own) < len(parent_key) or any(
                a.name.lower() != b.name.lower() or v.type_key(a.type) != v.type_key(b.type)
                for a, b in zip(own, parent_key, strict=False)
            ):
                raise _precondition(
                    f"The primary key of {name} must start with the primary key of its parent "
                    f"{parent_table.name}: {', '.join(parent_table.primary_key)}"
                )
            table = TableInfo(name, columns, key, descending, parent_table.name, cascade)
            action = "CASCADE" if cascade else "NO ACTION"
            clauses.append(
                f"FOREIGN KEY ({_names(parent_table.primary_key)}) REFERENCES "
                f"{quote_ident(parent_table.name)} ({_names(parent_table.primary_key)}) "
                f"ON DELETE {action}"
            )
        for foreign in foreign_keys:
            action = "CASCADE" if foreign.on_delete_cascade else "NO ACTION"
            clauses.append(
                f"CONSTRAINT {quote_ident(foreign.name)} FOREIGN KEY ({_names(foreign.columns)}) "
                f"REFERENCES {quote_ident(foreign.table)} ({_names(foreign.referenced)}) "
                f"ON DELETE {action}"
            )
        for check_name, check_sql in checks:
            clauses.append(f"CONSTRAINT {quote_ident(check_name)} CHECK ({check_sql})")
        table = dataclasses.replace(table, foreign_keys=foreign_keys, checks=checks)
        self.tables[name.lower()] = table
        return [
            *before,
            f"CREATE TABLE {quote_ident(name)} ({', '.join(clauses)})",
            *_null_key_guard(table),
            *versions.create_sql(table),
        ]

    def _constraints(
        self, sql: str, table: TableInfo, parts: list[list[Node]]
    ) -> tuple[list[ForeignKeyInfo], list[tuple[str, str]], list[str]]:
        """The foreign keys and check constraints of a new table, and the SQLite statements
        they need first (a unique index on referenced columns other than a primary key)."""
        from .translate import column_expression  # the translator needs this module's catalog

        foreign_keys: list[ForeignKeyInfo] = []
        checks: list[tuple[str, str]] = []
        before: list[str] = []
        for part in parts:
            cur = Cursor(sql, part)
            name = cur.name("a constraint name") if cur.accept("CONSTRAINT") else ""
            if cur.accept("CHECK"):
                expression = column_expression(sql, cur.group().items, table.columns)
                checks.append((name or f"CK_{table.name}_{len(checks) + 1}", expression))
            elif cur.accept("FOREIGN", "KEY"):
                columns = [table.column(c).name for c in _parse_key(cur.group())[0]]
                cur.expect("REFERENCES")
                target_name = cur.name("the referenced table")
                target = (
                    table if target_name.lower() == table.name.lower() else self._table(target_name)
                )
                referenced = [target.column(c).name for c in _parse_key(cur.group())[0]]
                cascade = False
                if cur.accept("ON", "DELETE"):
                    cascade = cur.accept("CASCADE")
                    if not cascade:
                        cur.expect("NO", "ACTION")
                enforced = not cur.accept("NOT", "ENFORCED")
                cur.accept("ENFORCED")
                if len(columns) != len(referenced):
                    raise _invalid(
                        f"Foreign key {name or ''} of {table.name} has {len(columns)} columns "
                        f"but references {len(referenced)}"
                    )
                if not enforced:
                    continue  # an informational foreign key: nothing to check
                name = name or f"FK_{table.name}_{target.name}_{len(foreign_keys) + 1}"
                if [r.lower() for r in referenced] != [k.lower() for k in target.primary_key]:
                    index = quote_ident(f"_spanpool_fk_{name}")
                    before.append(
                        f"CREATE UNIQUE INDEX IF NOT EXISTS {index} ON "
                        f"{quote_ident(target.name)} ({_names(referenced)})"
                    )
                foreign_keys.append(ForeignKeyInfo(name, columns, target.name, referenced, cascade))
            else:
                raise cur.error("Expected CHECK or FOREIGN KEY")
            if not cur.at_end():
                raise cur.error("Unexpected text after the constraint")
        return foreign_keys, checks, before

    def _create_index(self, cur: Cursor) -> list[str]:
        cur.expect("CREATE")
        unique = null_filtered = False
        while True:
            if cur.accept("UNIQUE"):
                unique = True
            elif cur.accept("NULL_FILTERED"):
                null_filtered = True
            else:
                break
        cur.expect("INDEX")
        if_not_exists = cur.accept("IF", "NOT", "EXISTS")
        name = cur.name("an index name")
        if if_not_exists and name.lower() in self.indexes:
            return []
        self._check_new_name(name)
        cur.expect("ON")
        table = self._table(cur.name("a table name"))
        columns, descending = _parse_key(cur.group())
        storing: list[str] = []
        parent = None
        if cur.accept("STORING"):
            storing = [table.column(n).name for n in _parse_key(cur.group())[0]]
        if cur.accept_op(","):
            cur.expect("INTERLEAVE", "IN")
            parent = self._table(cur.name("a table name")).name
        if cur.accept("WHERE"):
            null_filtered = True  # WHERE c IS NOT NULL [AND ...] filters NULLs like NULL_FILTERED
            cur.rest()
        if not cur.at_end():
            raise cur.error("Unexpected text after the index definition")
        columns = [table.column(c).name for c in columns]
        if len({c.lower() for c in columns}) != len(columns):
            raise _invalid(f"Duplicate column in index {name}")
        index = IndexInfo(
            name, table.name, columns, descending, unique, null_filtered, storing, parent
        )
        self.indexes[name.lower()] = index
        parts = [
            quote_ident(c) + (" DESC" if d else "")
            for c, d in zip(columns, descending, strict=True)
        ]
        sql = (
            f"CREATE {'UNIQUE ' if unique else ''}INDEX {quote_ident(name)} "
            f"ON {quote_ident(table.name)} ({', '.join(parts)})"
        )
        if null_filtered:
            sql += " WHERE " + " AND ".join(f"{quote_ident(c)} IS NOT NULL" for c in columns)
        return [sql]

    def _drop_table(self, cur: Cursor) -> list[str]:
        if_exists = cur.accept("IF", "EXISTS")
        name = cur.name("a table name")
        if not cur.at_end():
            raise cur.error("Unexpected text after DROP TABLE")
        if if_exists and name.lower() not in self.tables:
            return []
        table = self._table(name)
        indexes = [i.name for i in self.indexes.values() if i.table.lower() == name.lower()]
        if indexes:
            raise _precondition(
                f"Cannot drop table {table.name} with indices: {', '.join(indexes)}."
            )
        children = [
            t.name for t in self.tables.values() if (t.parent or "").lower() == name.lower()
        ]
        if children:
            raise _precondition(
                f"Cannot drop table {table.name} with interleaved tables: {', '.join(children)}."
            )
        referencing = [
            f.name
            for t in self.tables.values()
            if t is not table
            for f in t.foreign_keys
            if f.table.lower() == name.lower()
        ]
        if referencing:
            raise _precondition(
                f"Cannot drop table {table.name}: foreign keys refer to it: "
                f"{', '.join(referencing)}."
            )
        del self.tables[name.lower()]
        return [f"DROP TABLE {quote_ident(table.name)}", *versions.drop_sql(table)]

    def _drop_index(self, cur: Cursor) -> list[str]:
        if_exists = cur.accept("IF", "EXISTS")
        name = cur.name("an index name")
        if not cur.at_end():
            raise cur.error("Unexpected text after DROP INDEX")
        index = self.indexes.pop(name.lower(), None)
        if index is None:
            if if_exists:
                return []
            raise _not_found(f"Index not found: {name}")
        return [f"DROP INDEX {quote_ident(index.name)}"]

    def _alter_table(self, cur: Cursor) -> list[str]:
        table = self._table(cur.name("a table name"))
        quoted = quote_ident(table.name)
        if cur.accept("ADD", "COLUMN"):
            if_not_exists = cur.accept("IF", "NOT", "EXISTS")
            column, primary, generated = _parse_column(
                Cursor(cur.sql, cur.rest()), table.name, self.objects
            )
            if generated is not None:
                raise _unimplemented("LocalSpanner cannot add a generated column to a table")
            if table.find_column(column.name) is not None:
                if if_not_exists:
                    return []
                raise _precondition(f"Duplicate column name {table.name}.{column.name}.")
            if primary:
                raise _precondition("Cannot add a primary key column to an existing table")
            if not column.nullable and column.default_sql in (None, "NULL"):
                raise _precondition(
                    f"Cannot add NOT NULL column {table.name}.{column.name} to an existing "
                    "table without a DEFAULT value."
                )
            if column.default_sql is not None and column.default_sql.startswith("("):
                raise _unimplemented(
                    "LocalSpanner cannot add a column whose DEFAULT is not a literal"
                )
            changed = self._replace_table(table, columns=[*table.columns, column])
            return [
                *versions.add_column_sql(
                    table, f"{quote_ident(column.name)} {declared_type(column)}"
                ),
                f"ALTER TABLE {quoted} ADD COLUMN {_column_sql(column)}",
                *versions.triggers_sql(changed),
            ]
        if cur.accept("DROP", "COLUMN"):
            column = table.column(cur.name("a column name"))
            if not cur.at_end():
                raise cur.error("Unexpected text after DROP COLUMN")
            if column.name in table.primary_key:
                raise _precondition(f"Cannot drop key column {table.name}.{column.name}.")
            for index in self.indexes.values():
                if index.table == table.name and column.name in (*index.columns, *index.storing):
                    raise _precondition(
                        f"Cannot drop column {table.name}.{column.name}: index {index.name} "
                        "uses it."
                    )
            columns = [c for c in table.columns if c is not column]
            changed = self._replace_table(table, columns=columns)
            return [
                *versions.drop_column_sql(table, column.name),
                f"ALTER TABLE {quoted} DROP COLUMN {quote_ident(column.name)}",
                *versions.triggers_sql(changed),
            ]
        if cur.accept("ALTER", "COLUMN"):
            return self._alter_column(cur, table)
        raise _unimplemented(
            "LocalSpanner supports ALTER TABLE ... ADD COLUMN, DROP COLUMN and ALTER COLUMN only"
        )

    def _alter_column(self, cur: Cursor, table: TableInfo) -> list[str]:
        column = table.column(cur.name("a column name"))
        if cur.accept("SET", "OPTIONS"):
            options = _parse_options(cur.group())
            allow = bool(options.get("allow_commit_timestamp"))
            if allow and int(column.type.code) != v.TIMESTAMP:
                raise _invalid("allow_commit_timestamp needs a TIMESTAMP column")
            changed = dataclasses.replace(column, allow_commit_timestamp=allow)
        else:
            changed, _, _ = _parse_column(
                Cursor(cur.sql, [Token(QIDENT, column.name, 0), *cur.rest()]),
                table.name,
                self.objects,
            )
            if (
                v.type_key(changed.type) != v.type_key(column.type)
                or changed.nullable != column.nullable
            ):
                raise _unimplemented(
                    "LocalSpanner cannot change the type or nullability of a column"
                )
            changed = dataclasses.replace(
                column, allow_commit_timestamp=changed.allow_commit_timestamp
            )
        self._replace_table(table, columns=[changed if c is column else c for c in table.columns])
        return []

    def _replace_table(self, table: TableInfo, *, columns: list[ColumnInfo]) -> TableInfo:
        changed = dataclasses.replace(table, columns=columns, _by_name={})
        self.tables[table.name.lower()] = changed
        return changed


# --- loading and applying ----------------------------------------------------------------------


def _sqlite_ddl_error(exc: sqlite3.Error, statement: str) -> EngineError:
    if isinstance(exc, sqlite3.IntegrityError):
        return _precondition(f"Existing data violates {statement.strip()[:80]!r}: {exc}")
    return _invalid(f"Could not apply {statement.strip()[:80]!r}: {exc}")


def load_catalog(conn: sqlite3.Connection) -> Catalog:
    """The catalog stored in a database file (empty for a new file)."""
    try:
        rows = conn.execute(f"SELECT statement FROM {DDL_TABLE} ORDER BY seq").fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return Catalog()
        raise
    protos: list[Any] = []
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (PROTOS_TABLE,)).fetchone():
        protos = conn.execute(
            f"SELECT descriptors FROM {PROTOS_TABLE} ORDER BY seq DESC LIMIT 1"
        ).fetchall()
    schema = _Schema(Catalog())
    if protos:
        schema.objects.set_descriptors(protos[0][0])
    for (statement,) in rows:
        schema.apply(statement)
    catalog = schema.catalog()
    for table in catalog.tables:  # files written before tables had versions
        for sql in versions.create_sql(table):
            conn.execute(sql)
    return catalog


def apply_ddl(
    conn: sqlite3.Connection,
    catalog: Catalog,
    statements: Sequence[str],
    proto_descriptors: bytes = b"",
) -> Catalog:
    """Apply DDL statements atomically; returns the new catalog. ``proto_descriptors`` (a
    serialized ``FileDescriptorSet``) defines the types a proto bundle may name."""
    if not statements:
        raise _invalid("No DDL statements given")
    schema = _Schema(catalog)
    if proto_descriptors:
        schema.objects.set_descriptors(proto_descriptors)
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise EngineError(grpc.StatusCode.ABORTED, f"Cannot change the schema now: {exc}") from None
    try:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {DDL_TABLE} "
            "(seq INTEGER PRIMARY KEY, statement TEXT NOT NULL)"
        )
        if proto_descriptors:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {PROTOS_TABLE} "
                "(seq INTEGER PRIMARY KEY, descriptors BLOB NOT NULL)"
            )
            conn.execute(
                f"INSERT INTO {PROTOS_TABLE} (descriptors) VALUES (?)", (proto_descriptors,)
            )
        for statement in statements:
            for sql in schema.apply(statement):
                try:
                    conn.execute(sql)
                except sqlite3.Error as exc:
                    raise _sqlite_ddl_error(exc, statement) from None
            conn.execute(f"INSERT INTO {DDL_TABLE} (statement) VALUES (?)", (statement,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return schema.catalog()
