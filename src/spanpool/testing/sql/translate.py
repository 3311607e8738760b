"""GoogleSQL to SQLite for LocalSpanner: statements rewritten token by token, result types inferred.

``translate`` turns one query or DML statement into a SQLite statement with positional
parameters, plus the names and (where they are known before running it) the Cloud Spanner types
of its result columns. Column types come from the catalog for table columns and from the shape
of expressions otherwise; the engine infers what is left from the values SQLite returns.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import grpc

from . import information_schema, versions
from . import values as v
from .information_schema import spanner_type
from .schema import Catalog, ColumnInfo, TableInfo
from .tokens import (
    BYTES,
    IDENT,
    NUMBER,
    OP,
    PARAM,
    QIDENT,
    RESERVED,
    STRING,
    Group,
    Node,
    Token,
    find_word,
    is_group,
    is_name,
    is_op,
    is_word,
    located,
    parse_tree,
    position,
    quote_ident,
    split,
    sql_literal,
    syntax_error,
    text_of,
    word_of,
)
from .values import EngineError, TypeMsg

# Words SQLite reserves that GoogleSQL lets name columns and tables: quoted on output.
# fmt: off
_SQLITE_RESERVED = frozenset([
    "ABORT", "ACTION", "ADD", "AFTER", "ALTER", "ANALYZE", "ATTACH", "AUTOINCREMENT", "BEFORE",
    "BEGIN", "CHECK", "COLUMN", "COMMIT", "CONFLICT", "CONSTRAINT", "DATABASE", "DEFERRABLE",
    "DEFERRED", "DELETE", "DETACH", "DROP", "EACH", "EXCLUSIVE", "EXPLAIN", "FAIL", "FOREIGN",
    "GLOB", "IMMEDIATE", "INDEX", "INDEXED", "INITIALLY", "INSERT", "INSTEAD", "ISNULL", "KEY",
    "MATCH", "NOTHING", "NOTNULL", "OFFSET", "PLAN", "PRAGMA", "PRIMARY", "QUERY", "RAISE",
    "REFERENCES", "REGEXP", "REINDEX", "RELEASE", "RENAME", "REPLACE", "RESTRICT", "RETURNING",
    "ROLLBACK", "ROW", "SAVEPOINT", "TABLE", "TEMP", "TEMPORARY", "TRANSACTION", "TRIGGER",
    "UPDATE", "VACUUM", "VALUES", "VIEW", "VIRTUAL", "WITHOUT"
])
# fmt: on
# Non-reserved GoogleSQL words that are keywords where they appear in queries.
_CONTEXT_KEYWORDS = frozenset({"OFFSET", "FIRST", "LAST", "ROW", "KEY", "VALUES"})
_QUERY_CLAUSES = ("WHERE", "GROUP", "HAVING", "QUALIFY", "WINDOW", "ORDER", "LIMIT", "FOR")
_JOIN_WORDS = ("JOIN", "INNER", "CROSS", "LEFT", "RIGHT", "FULL", "NATURAL")
_COMPARISONS = frozenset({"=", "!=", "<>", "<", "<=", ">", ">="})
_COERCED_FROM_TEXT = frozenset({v.BYTES, v.TIMESTAMP, v.DATE, v.NUMERIC, v.PROTO})
_BOOLEAN_WORDS = frozenset({"AND", "OR", "NOT", "IS", "IN", "LIKE", "BETWEEN", "EXISTS"})
_ARITHMETIC = frozenset({"+", "-", "*", "%"})
_BITWISE = frozenset({"&", "|", "^", "~", "<<", ">>"})

INT64 = v.scalar_type(v.INT64)
FLOAT64 = v.scalar_type(v.FLOAT64)
BOOL = v.scalar_type(v.BOOL)
STRING_T = v.scalar_type(v.STRING)
BYTES_T = v.scalar_type(v.BYTES)
TIMESTAMP = v.scalar_type(v.TIMESTAMP)
DATE = v.scalar_type(v.DATE)


def _invalid(message: str) -> EngineError:
    return EngineError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _unimplemented(message: str) -> EngineError:
    return EngineError(grpc.StatusCode.UNIMPLEMENTED, message)


def _code(type_: TypeMsg | None) -> int:
    return v.TYPE_CODE_UNSPECIFIED if type_ is None else int(type_.code)


# --- result columns and name scopes ------------------------------------------------------------


@dataclass
class Column:
    """A result column: its name ("" for unnamed expressions) and type, if known statically."""

    name: str
    type: TypeMsg | None


class Source:
    """A FROM item: a table, subquery or UNNEST, with the columns it provides."""

    def __init__(self, alias: str, columns: list[Column]) -> None:
        self.alias = alias
        self.columns = columns
        self.hidden: set[str] = set()  # right-hand USING columns, which SELECT * skips
        self.by_name = {c.name.lower(): c for c in columns if c.name}
        self.struct: TypeMsg | None = None  # UNNEST of structs: the element type


class Scope:
    """The names visible in one SELECT: its FROM items, and those of enclosing queries."""

    def __init__(self, parent: Scope | None = None, ctes: dict[str, list[Column]] | None = None):
        self.parent = parent
        self.sources: list[Source] = []
        self.ctes: dict[str, list[Column]] = (
            ctes if ctes is not None else dict(parent.ctes) if parent else {}
        )

    def column(self, name: str) -> Column | None:
        key = name.lower()
        scope: Scope | None = self
        while scope is not None:
            for source in scope.sources:
                found = source.by_name.get(key)
                if found is not None:
                    return found
            scope = scope.parent
        return None

    def source(self, alias: str) -> Source | None:
        key = alias.lower()
        scope: Scope | None = self
        while scope is not None:
            for source in scope.sources:
                if source.alias.lower() == key:
                    return source
            scope = scope.parent
        return None


# --- functions ---------------------------------------------------------------------------------

Emitter = Callable[[list[str]], str]
Typer = Callable[[list[TypeMsg | None]], TypeMsg | None]


@dataclass(frozen=True)
class Function:
    emit: Emitter
    result: Typer
    min_args: int = 0
    max_args: int = 99


def _calls(name: str) -> Emitter:
    return lambda args: f"{name}({', '.join(args)})"


def _fixed(type_: TypeMsg) -> Typer:
    return lambda types: type_


def _first(types: list[TypeMsg | None]) -> TypeMsg | None:
    return types[0] if types else None


def _first_known(types: list[TypeMsg | None]) -> TypeMsg | None:
    return next((t for t in types if t is not None), None)


def _sum_type(types: list[TypeMsg | None]) -> TypeMsg | None:
    code = _code(_first(types))
    if code in (v.INT64, v.BOOL):
        return INT64
    if code == v.NUMERIC:
        return v.scalar_type(v.NUMERIC)
    return FLOAT64 if code in (v.FLOAT64, v.FLOAT32) else None


def _avg_type(types: list[TypeMsg | None]) -> TypeMsg | None:
    return v.scalar_type(v.NUMERIC) if _code(_first(types)) == v.NUMERIC else FLOAT64


def _float_unless_numeric(types: list[TypeMsg | None]) -> TypeMsg | None:
    return v.scalar_type(v.NUMERIC) if _code(_first(types)) == v.NUMERIC else FLOAT64


def _array_of_first(types: list[TypeMsg | None]) -> TypeMsg | None:
    first = _first(types)
    return v.array_type(first) if first is not None and _code(first) != v.ARRAY else None


def _concat_type(types: list[TypeMsg | None]) -> TypeMsg | None:
    return BYTES_T if _code(_first(types)) == v.BYTES else STRING_T


def _text_type(types: list[TypeMsg | None]) -> TypeMsg | None:
    return BYTES_T if _code(_first(types)) == v.BYTES else STRING_T


def _concat(args: list[str]) -> str:
    return "(" + " || ".join(f"({a})" for a in args) + ")"


def _extreme(name: str) -> Emitter:
    # SQLite's one-argument min()/max() are aggregates; GREATEST(x) is just x.
    return lambda args: args[0] if len(args) == 1 else f"{name}({', '.join(args)})"


FUNCTIONS: dict[str, Function] = {
    # aggregates
    "COUNT": Function(_calls("count"), _fixed(INT64), 1, 1),
    "COUNTIF": Function(lambda a: f"count(CASE WHEN {a[0]} THEN 1 END)", _fixed(INT64), 1, 1),
    "SUM": Function(_calls("sum"), _sum_type, 1, 1),
    "AVG": Function(_calls("avg"), _avg_type, 1, 1),
    "MIN": Function(_calls("min"), _first, 1, 1),
    "MAX": Function(_calls("max"), _first, 1, 1),
    "ANY_VALUE": Function(_calls("min"), _first, 1, 1),
    "LOGICAL_AND": Function(_calls("min"), _fixed(BOOL), 1, 1),
    "LOGICAL_OR": Function(_calls("max"), _fixed(BOOL), 1, 1),
    "STRING_AGG": Function(_calls("group_concat"), _text_type, 1, 2),
    "ARRAY_AGG": Function(_calls("json_group_array"), _array_of_first, 1, 1),
    # conditionals
    "IF": Function(_calls("iif"), lambda t: _first_known(t[1:]), 3, 3),
    "IFNULL": Function(_calls("ifnull"), _first_known, 2, 2),
    "COALESCE": Function(_calls("coalesce"), _first_known, 1),
    "NULLIF": Function(_calls("nullif"), _first, 2, 2),
    "GREATEST": Function(_extreme("max"), _first_known, 1),
    "LEAST": Function(_extreme("min"), _first_known, 1),
    # strings and bytes
    "CONCAT": Function(_concat, _concat_type, 1),
    "LENGTH": Function(_calls("length"), _fixed(INT64), 1, 1),
    "CHAR_LENGTH": Function(_calls("length"), _fixed(INT64), 1, 1),
    "CHARACTER_LENGTH": Function(_calls("length"), _fixed(INT64), 1, 1),
    "BYTE_LENGTH": Function(lambda a: f"length(CAST({a[0]} AS BLOB))", _fixed(INT64), 1, 1),
    "UPPER": Function(_calls("upper"), _text_type, 1, 1),
    "LOWER": Function(_calls("lower"), _text_type, 1, 1),
    "TRIM": Function(_calls("trim"), _text_type, 1, 2),
    "LTRIM": Function(_calls("ltrim"), _text_type, 1, 2),
    "RTRIM": Function(_calls("rtrim"), _text_type, 1, 2),
    "REPLACE": Function(_calls("replace"), _text_type, 3, 3),
    "SUBSTR": Function(_calls("substr"), _text_type, 2, 3),
    "SUBSTRING": Function(_calls("substr"), _text_type, 2, 3),
    "STRPOS": Function(_calls("instr"), _fixed(INT64), 2, 2),
    "STARTS_WITH": Function(_calls("spanpool_starts_with"), _fixed(BOOL), 2, 2),
    "ENDS_WITH": Function(_calls("spanpool_ends_with"), _fixed(BOOL), 2, 2),
    "REGEXP_CONTAINS": Function(_calls("spanpool_regexp_contains"), _fixed(BOOL), 2, 2),
    "GENERATE_UUID": Function(_calls("spanpool_uuid"), _fixed(STRING_T), 0, 0),
    # numbers
    "ABS": Function(_calls("abs"), _first, 1, 1),
    "SIGN": Function(_calls("sign"), _first, 1, 1),
    "MOD": Function(lambda a: f"(({a[0]}) % ({a[1]}))", _first, 2, 2),
    "DIV": Function(lambda a: f"CAST(({a[0]}) / ({a[1]}) AS INTEGER)", _fixed(INT64), 2, 2),
    "SAFE_DIVIDE": Function(
        lambda a: f"iif(({a[1]}) = 0, NULL, ({a[0]}) * 1.0 / ({a[1]}))", _fixed(FLOAT64), 2, 2
    ),
    "ROUND": Function(_calls("round"), _float_unless_numeric, 1, 2),
    "FLOOR": Function(_calls("floor"), _float_unless_numeric, 1, 1),
    "CEIL": Function(_calls("ceil"), _float_unless_numeric, 1, 1),
    "CEILING": Function(_calls("ceil"), _float_unless_numeric, 1, 1),
    "SQRT": Function(_calls("sqrt"), _fixed(FLOAT64), 1, 1),
    "POW": Function(_calls("pow"), _fixed(FLOAT64), 2, 2),
    "POWER": Function(_calls("pow"), _fixed(FLOAT64), 2, 2),
    "EXP": Function(_calls("exp"), _fixed(FLOAT64), 1, 1),
    "LN": Function(_calls("ln"), _fixed(FLOAT64), 1, 1),
    "LOG10": Function(_calls("log10"), _fixed(FLOAT64), 1, 1),
    # arrays
    "ARRAY_LENGTH": Function(_calls("json_array_length"), _fixed(INT64), 1, 1),
    "ARRAY_TO_STRING": Function(_calls("spanpool_array_to_string"), _text_type, 2, 3),
    # time
    "CURRENT_TIMESTAMP": Function(_calls("spanpool_now"), _fixed(TIMESTAMP), 0, 0),
    "PENDING_COMMIT_TIMESTAMP": Function(_calls("spanpool_now"), _fixed(TIMESTAMP), 0, 0),
    "CURRENT_DATE": Function(_calls("spanpool_today"), _fixed(DATE), 0, 0),
    # window functions
    "ROW_NUMBER": Function(_calls("row_number"), _fixed(INT64), 0, 0),
    "RANK": Function(_calls("rank"), _fixed(INT64), 0, 0),
    "DENSE_RANK": Function(_calls("dense_rank"), _fixed(INT64), 0, 0),
    "PERCENT_RANK": Function(_calls("percent_rank"), _fixed(FLOAT64), 0, 0),
    "CUME_DIST": Function(_calls("cume_dist"), _fixed(FLOAT64), 0, 0),
    "NTILE": Function(_calls("ntile"), _fixed(INT64), 1, 1),
    "LAG": Function(_calls("lag"), _first, 1, 3),
    "LEAD": Function(_calls("lead"), _first, 1, 3),
    "FIRST_VALUE": Function(_calls("first_value"), _first, 1, 1),
    "LAST_VALUE": Function(_calls("last_value"), _first, 1, 1),
    "NTH_VALUE": Function(_calls("nth_value"), _first, 2, 2),
}
_NO_PAREN_FUNCTIONS = frozenset({"CURRENT_TIMESTAMP", "CURRENT_DATE"})
_TYPED_LITERALS = {"DATE": v.DATE, "TIMESTAMP": v.TIMESTAMP, "NUMERIC": v.NUMERIC, "JSON": v.JSON}


# --- the translation ---------------------------------------------------------------------------


@dataclass
class Translation:
    """A statement ready for SQLite."""

    sql: str
    params: list[str]  # parameter names, bound as ?1, ?2, ... in this order
    columns: list[Column]
    dml: str | None = None  # "INSERT", "UPDATE" or "DELETE"
    table: str | None = None  # the table DML changes
    returning: bool = False
    tables: frozenset[str] = frozenset()  # every table the statement reads or writes


# How table references are translated: as the tables themselves (PLAIN), as their rows at
# spanpool_read_ts() (VERSIONED, for reads at a timestamp), or reporting each row read to
# spanpool_lock (LOCKING, for read-write transactions).
PLAIN, VERSIONED, LOCKING = "plain", "versioned", "locking"


def translate(
    sql: str, catalog: Catalog, param_types: Mapping[str, TypeMsg], mode: str = PLAIN
) -> Translation:
    """Translate one GoogleSQL query or DML statement."""
    nodes = parse_tree(sql)
    if not nodes:
        raise _invalid("Syntax error: the statement is empty")
    translator = _Translator(sql, catalog, param_types, mode)
    translation = _statement(translator, nodes)
    if translation is not None:
        translation.tables = frozenset(translator.tables)
        return translation
    first = nodes[0]
    if is_word(first, "CREATE", "ALTER", "DROP", "GRANT", "REVOKE", "RENAME", "ANALYZE"):
        raise _invalid("DDL statements are not supported by ExecuteSql; use UpdateDatabaseDdl.")
    found = first.text if isinstance(first, Token) else first.open
    raise syntax_error(sql, position(nodes), f"Unexpected {found!r}")


def column_expression(sql: str, nodes: Sequence[Node], columns: Sequence[ColumnInfo]) -> str:
    """SQLite text of the expression of a generated column, over the table's ``columns``."""
    translator = _Translator(sql, Catalog(), {})
    scope = Scope()
    scope.sources.append(Source("", [Column(c.name, c.type) for c in columns]))
    text = translator.expr(nodes, scope)
    if translator.params:
        raise _invalid("The expression of a generated column cannot use query parameters")
    return text


def _statement(translator: _Translator, nodes: Sequence[Node]) -> Translation | None:
    first = nodes[0]
    if is_word(first, "INSERT"):
        return translator.insert(nodes)
    if is_word(first, "UPDATE"):
        return translator.update(nodes)
    if is_word(first, "DELETE"):
        return translator.delete(nodes)
    if _is_query(nodes):
        text, columns = translator.query(nodes, None)
        return Translation(text, translator.params, columns)
    return None


def _is_query(nodes: Sequence[Node]) -> bool:
    """Whether ``nodes`` are a query: SELECT ..., WITH ..., or (query) [UNION | ORDER BY ...]."""
    if not nodes:
        return False
    first = nodes[0]
    if is_word(first, "SELECT", "WITH"):
        return True
    return (
        isinstance(first, Group)
        and first.open == "("
        and _is_query(first.items)
        and (len(nodes) == 1 or is_word(nodes[1], "UNION", "EXCEPT", "INTERSECT", "ORDER", "LIMIT"))
    )


class _Translator:
    def __init__(
        self, sql: str, catalog: Catalog, param_types: Mapping[str, TypeMsg], mode: str = PLAIN
    ) -> None:
        self.sql = sql
        self.catalog = catalog
        self.param_types = param_types
        self.mode = mode
        self.tables: set[str] = set()
        self.params: list[str] = []
        self._param_slots: dict[str, int] = {}
        self.renamed: dict[str, str] = {}  # alias -> table name, for RETURNING

    # -- leaves -----------------------------------------------------------------------------

    def param(self, name: str) -> str:
        slot = self._param_slots.get(name)
        if slot is None:
            self.params.append(name)
            slot = self._param_slots[name] = len(self.params)
        return f"?{slot}"

    def param_type(self, name: str) -> TypeMsg | None:
        type_ = self.param_types.get(name)
        if type_ is None:
            lowered = name.lower()
            type_ = next((t for k, t in self.param_types.items() if k.lower() == lowered), None)
        if type_ is None or _code(type_) == v.TYPE_CODE_UNSPECIFIED:
            return None
        return type_

    def error(self, node: Node | None, what: str) -> EngineError:
        return syntax_error(self.sql, node.pos if node is not None else len(self.sql), what)

    @staticmethod
    def identifier(name: str) -> str:
        return quote_ident(name) if name.upper() in _SQLITE_RESERVED else name

    def number(self, token: Token, *, negated: bool = False) -> str:
        text = token.text
        if text[:2].lower() == "0x" or text.isdigit():
            try:
                value = int(text, 16) if text[:2].lower() == "0x" else int(text)
            except ValueError:
                raise self.error(token, f"Invalid integer literal {text!r}") from None
            if value >= 2**63 + negated:
                raise _invalid(f"Invalid integer literal: {text} is out of range for INT64")
            return str(value)
        if not text[-1].isdigit() and text[-1] != ".":
            raise self.error(token, f"Invalid number literal {text!r}")
        return text

    def typed_literal(self, word: str, token: Token) -> str:
        assert isinstance(token.value, str)
        try:
            stored = v.to_storage(
                v.Value(string_value=token.value), v.scalar_type(_TYPED_LITERALS[word])
            )
        except ValueError as exc:
            raise _invalid(f"Invalid {word} literal: {exc}") from None
        return sql_literal(stored)

    # -- expressions ------------------------------------------------------------------------

    def expr(self, nodes: Sequence[Node], scope: Scope) -> str:
        """SQLite text of a GoogleSQL expression (or any run of clauses of a query)."""
        out: list[str] = []
        i, n = 0, len(nodes)
        while i < n:
            node = nodes[i]
            after = nodes[i + 1] if i + 1 < n else None
            if isinstance(node, Group):
                if node.open == "[":
                    out.append(self.array_literal(node.items, scope))
                elif _is_query(node.items):
                    out.append("(" + self.query(node.items, scope)[0] + ")")
                else:
                    out.append("(" + self.expr(node.items, scope) + ")")
                i += 1
                continue
            kind = node.kind
            if kind == IDENT:
                word = node.upper
                if is_group(after) and (word not in RESERVED or word in ("IF", "CAST")):
                    assert isinstance(after, Group)
                    out.append(self.call(node, after, scope))
                    i += 2
                    continue
                if word == "SAFE_CAST" or word == "CAST":
                    raise self.error(after, f"Expected '(' after {word}")
                if word == "IN" and is_word(after, "UNNEST") and i + 2 < n:
                    argument = nodes[i + 2]
                    if not isinstance(argument, Group):
                        raise self.error(argument, "Expected '(' after UNNEST")
                    out.append("IN " + self.unnest_values(argument.items, scope))
                    i += 3
                    continue
                if word in _TYPED_LITERALS and isinstance(after, Token) and after.kind == STRING:
                    out.append(self.typed_literal(word, after))
                    i += 2
                    continue
                if word == "ARRAY" and isinstance(after, Group) and _is_query(after.items):
                    out.append(self.array_subquery(after.items, scope)[0])
                    i += 2
                    continue
                if word == "STRUCT" and (is_op(after, "<") or is_group(after)):
                    text, i = self.struct_constructor(nodes, i, scope)
                    out.append(text)
                    continue
                if word == "ARRAY" and (is_op(after, "<") or is_group(after, "[")):
                    i += 1
                    if is_op(after, "<"):
                        while i < n and not is_op(nodes[i], ">"):
                            i += 1
                        i += 1
                    continue
                if word == "SAFE" and is_op(after, ".") and i + 2 < n:
                    i += 2  # SAFE.FUNCTION(...) runs FUNCTION(...)
                    continue
                if is_op(after, ".") and i + 3 < n and is_group(nodes[i + 3]):
                    raise _invalid(f"Function not found: {node.text}.{text_of(nodes[i + 2])}")
                if word in _NO_PAREN_FUNCTIONS:
                    out.append(FUNCTIONS[word].emit([]))
                elif word in ("STRUCT", "INTERVAL", "EXTRACT", "UNNEST", "ARRAY", "RECURSIVE"):
                    raise _unimplemented(f"{word} is not supported by LocalSpanner")
                elif word in RESERVED or word in _CONTEXT_KEYWORDS:
                    out.append(word)
                elif is_op(after, ".") and node.text.lower() in self.renamed:
                    out.append(quote_ident(self.renamed[node.text.lower()]))
                else:
                    out.append(self.identifier(node.text))
            elif kind == QIDENT:
                if is_op(after, ".") and node.text.lower() in self.renamed:
                    out.append(quote_ident(self.renamed[node.text.lower()]))
                else:
                    out.append(quote_ident(node.text))
            elif kind in (STRING, BYTES):
                out.append(sql_literal(node.value))
            elif kind == NUMBER:
                out.append(self.number(node, negated=bool(out) and out[-1] == "-"))
            elif kind == PARAM:
                type_ = self.param_type(node.text)
                if _code(type_) == v.STRUCT:
                    text, i = self.struct_param(nodes, i)
                    out.append(text)
                    continue
                compared = self.compared_type(nodes, i, scope) if type_ is None else None
                if _code(compared) in _COERCED_FROM_TEXT:
                    # An untyped parameter compared with a column takes the column's type, as
                    # on Cloud Spanner (the client sends bytes and timestamps as text).
                    code, element = v.type_key(compared)
                    out.append(f"spanpool_store({self.param(node.text)}, {code}, {element})")
                else:
                    out.append(self.param(node.text))
            elif node.text == "/":
                out.append("* 1.0 /")  # GoogleSQL divides INT64 values as FLOAT64
            elif node.text in ("{", "}", ":", "?", "!", "=>"):
                raise self.error(node, f"Unexpected {node.text!r}")
            else:
                out.append(node.text)
            i += 1
        return " ".join(out)

    def call(self, name: Token, group: Group, scope: Scope) -> str:
        word = name.upper
        if word in ("CAST", "SAFE_CAST"):
            return self.cast(group, scope, safe=word == "SAFE_CAST")
        function = FUNCTIONS.get(word)
        if function is None:
            if word in ("EXTRACT", "ARRAY", "STRUCT", "UNNEST"):
                raise _unimplemented(f"{word}(...) is not supported by LocalSpanner")
            raise _invalid(f"Function not found: {name.text}")
        parts = split(group.items)
        if not function.min_args <= len(parts) <= function.max_args:
            raise _invalid(f"Wrong number of arguments to {word}: {len(parts)}")
        return function.emit([self.expr(part, scope) for part in parts])

    def cast(self, group: Group, scope: Scope, *, safe: bool) -> str:
        items = group.items
        at = max((k for k, node in enumerate(items) if is_word(node, "AS")), default=-1)
        if at <= 0 or at == len(items) - 1:
            raise self.error(group, "Expected CAST(expression AS type)")
        target = self.cast_target(items[at + 1 :])
        source = self.type_of(items[:at], scope)
        operand = self.expr(items[:at], scope)
        if v.type_key(source) == v.type_key(target):
            return f"({operand})"
        function = "spanpool_safe_cast" if safe else "spanpool_cast"
        return f"{function}({operand}, {_code(target)}, {_code(source)})"

    def cast_target(self, nodes: Sequence[Node]) -> TypeMsg:
        if len(nodes) in (1, 2) and isinstance(nodes[0], Token) and nodes[0].kind == IDENT:
            code = v.SCALAR_NAMES.get(nodes[0].upper)
            if code is not None and (len(nodes) == 1 or is_group(nodes[1])):
                return v.scalar_type(code)
        raise _unimplemented(
            "LocalSpanner casts only to INT64, FLOAT64, FLOAT32, BOOL, STRING, BYTES, DATE, "
            "TIMESTAMP, NUMERIC and JSON"
        )

    def compared_type(self, nodes: Sequence[Node], i: int, scope: Scope) -> TypeMsg | None:
        """The type of the column that ``nodes[i]`` (a parameter) is compared with, if any."""
        if i >= 2 and is_op(nodes[i - 1], *_COMPARISONS):
            start = i - 4 if i >= 4 and is_op(nodes[i - 3], ".") else i - 2
            return self._column_type(nodes[start : i - 1], scope)
        if i + 2 < len(nodes) and is_op(nodes[i + 1], *_COMPARISONS):
            end = i + 5 if i + 4 < len(nodes) and is_op(nodes[i + 3], ".") else i + 3
            return self._column_type(nodes[i + 2 : end], scope)
        return None

    def _column_type(self, nodes: Sequence[Node], scope: Scope) -> TypeMsg | None:
        if not all(is_name(n) or _is_qident(n) or is_op(n, ".") for n in nodes):
            return None
        return self.type_of(nodes, scope)

    # -- structs ----------------------------------------------------------------------------

    def param_path(self, nodes: Sequence[Node], i: int) -> tuple[str, TypeMsg | None, int]:
        """A parameter and the struct fields after it (``@r.nested.weight``): the name it is
        bound under (``r.3.1``, field positions), its type, and the index after it."""
        token = nodes[i]
        assert isinstance(token, Token)
        name, type_ = token.text, self.param_type(token.text)
        i += 1
        while (
            _code(type_) == v.STRUCT
            and i + 1 < len(nodes)
            and is_op(nodes[i], ".")
            and isinstance(nodes[i + 1], Token)
        ):
            wanted = text_of(nodes[i + 1]).lower()
            fields = v.struct_fields(type_)
            found = [k for k, (field, _) in enumerate(fields) if field.lower() == wanted]
            if len(found) != 1:
                raise _invalid(
                    located(
                        self.sql,
                        nodes[i + 1].pos,
                        f"Field name {text_of(nodes[i + 1])} does not exist in "
                        f"{spanner_type(type_) if type_ is not None else 'STRUCT'}",
                    )
                )
            name += f".{found[0]}"
            type_ = fields[found[0]][1]
            i += 2
        return name, type_, i

    def struct_param(self, nodes: Sequence[Node], i: int) -> tuple[str, int]:
        """A struct parameter: one of its fields, whether it is NULL (``@r IS NULL``), or its
        fields as a row value (for comparisons)."""
        name, type_, end = self.param_path(nodes, i)
        if _code(type_) != v.STRUCT:
            return self.param(name), end
        if is_word(_at(nodes, end), "IS"):
            return self.param(name), end
        return "(" + ", ".join(self._flat_fields(name, type_)) + ")", end

    def _flat_fields(self, name: str, type_: TypeMsg) -> list[str]:
        out = []
        for k, (_, field_type) in enumerate(v.struct_fields(type_)):
            if _code(field_type) == v.STRUCT:
                out += self._flat_fields(f"{name}.{k}", field_type)
            else:
                out.append(self.param(f"{name}.{k}"))
        return out

    def struct_constructor(self, nodes: Sequence[Node], i: int, scope: Scope) -> tuple[str, int]:
        """``STRUCT<a INT64, b STRING>(1, "x")`` or ``STRUCT(1 AS a)``, as a row value."""
        i += 1
        if is_op(_at(nodes, i), "<"):
            depth = 0
            while i < len(nodes):
                if is_op(nodes[i], "<"):
                    depth += 1
                elif is_op(nodes[i], ">"):
                    depth -= 1
                    if depth == 0:
                        break
                elif is_op(nodes[i], ">>"):
                    depth -= 2
                    if depth <= 0:
                        break
                i += 1
            i += 1
        group = _at(nodes, i)
        if not isinstance(group, Group):
            raise self.error(group, "Expected STRUCT(...)")
        values = [self.expr(_split_alias(part)[0], scope) for part in split(group.items)]
        return "(" + ", ".join(values) + ")", i + 1

    def cast_struct_star(self, group: Group, scope: Scope) -> tuple[str, list[Column]]:
        """``CAST(t AS STRUCT<a INT64, b STRING>).*`` for ``t`` an UNNEST of structs: its
        fields, renamed."""
        items = group.items
        source = scope.source(text_of(items[0])) if items else None
        if (
            len(items) < 5
            or source is None
            or source.struct is None
            or not is_word(items[1], "AS")
            or not is_word(items[2], "STRUCT")
            or not is_op(items[3], "<")
        ):
            raise _unimplemented(
                "LocalSpanner casts to STRUCT only the range variable of an UNNEST of structs"
            )
        body = list(items[4:])
        if is_op(body[-1], ">"):
            body = body[:-1]
        targets = [part for part in split(body) if part]
        if len(targets) != len(source.columns):
            raise _invalid(
                f"Cannot cast a STRUCT of {len(source.columns)} fields to one of {len(targets)}"
            )
        out, columns = [], []
        for column, target in zip(source.columns, targets, strict=True):
            name = text_of(target[0]) if len(target) > 1 else column.name
            value = f"{quote_ident(source.alias)}.{quote_ident(column.name)}"
            out.append(f"{value} AS {quote_ident(name)}")
            columns.append(Column(name, column.type))
        return ", ".join(out), columns

    def array_subquery(self, items: Sequence[Node], scope: Scope) -> tuple[str, TypeMsg | None]:
        """``ARRAY(SELECT ...)`` and ``ARRAY(SELECT AS STRUCT ...)``: the rows as one array."""
        as_struct = is_word(_at(items, 1), "AS") and is_word(_at(items, 2), "STRUCT")
        query = [items[0], *items[3:]] if as_struct else list(items)
        sql, columns = self.query(query, scope)
        names = [c.name for c in columns]
        if not all(names) or len({n.lower() for n in names}) != len(names):
            names = [f"_c{k}" for k in range(len(columns))]
            sql = f"SELECT * FROM ({sql})"  # SQLite names them by position below
            listed = ", ".join(quote_ident(n) for n in names)
            source = f"(WITH _w({listed}) AS ({sql}) SELECT * FROM _w)"
        else:
            source = f"({sql})"
        type_: TypeMsg | None
        if as_struct:
            parts = [
                _json_element(f"_q.{quote_ident(n)}", c.type)
                for n, c in zip(names, columns, strict=True)
            ]
            element = "json_array(" + ", ".join(parts) + ")"
            known = [(c.name, c.type) for c in columns if c.type is not None]
            type_ = v.array_type(v.struct_type(known)) if len(known) == len(columns) else None
        else:
            if len(columns) != 1:
                raise _invalid(
                    "ARRAY subquery cannot have more than one column unless using SELECT AS "
                    "STRUCT to build STRUCT values"
                )
            element = _json_element(f"_q.{quote_ident(names[0])}", columns[0].type)
            first = columns[0].type
            type_ = v.array_type(first) if first is not None and _code(first) != v.ARRAY else None
        return f"(SELECT json_group_array({element}) FROM {source} AS _q)", type_

    def element_sql(self, array: Sequence[Node], scope: Scope) -> tuple[str, TypeMsg | None]:
        """(SQLite text of one element of json_each(array), element type)."""
        type_ = self.type_of(array, scope)
        element = (
            type_.array_element_type if type_ is not None and _code(type_) == v.ARRAY else None
        )
        if _code(element) == v.BYTES:
            return "spanpool_unbase64(value)", element
        return "value", element

    def unnest_values(self, array: Sequence[Node], scope: Scope) -> str:
        element, _ = self.element_sql(array, scope)
        return f"(SELECT {element} FROM json_each({self.expr(array, scope)}))"

    def array_literal(self, items: Sequence[Node], scope: Scope) -> str:
        elements = []
        for part in split(items):
            if len(part) == 1 and isinstance(part[0], Token) and part[0].kind == BYTES:
                assert isinstance(part[0].value, bytes)
                elements.append(sql_literal(v.dump_array([part[0].value])[2:-2]))
            else:
                elements.append(self.expr(part, scope))
        return f"json_array({', '.join(elements)})"

    # -- types ------------------------------------------------------------------------------

    def type_of(self, nodes: Sequence[Node], scope: Scope) -> TypeMsg | None:
        """The Spanner type of an expression, when its shape tells it."""
        if not nodes:
            return None
        if len(nodes) == 1:
            return self._atom_type(nodes[0], scope)
        first, second = nodes[0], nodes[1]
        if len(nodes) == 2:
            if isinstance(first, Token) and first.kind == IDENT and isinstance(second, Group):
                return self._call_type(first, second, scope)
            if is_word(first, *_TYPED_LITERALS) and isinstance(second, Token):
                return v.scalar_type(_TYPED_LITERALS[word_of(first)])
            if is_word(first, "NOT"):
                return BOOL
            if is_op(first, "-", "+"):
                return self.type_of(nodes[1:], scope)
            if is_word(first, "SAFE") or is_word(first, "ARRAY"):
                return None
        if isinstance(first, Token) and first.kind == PARAM and is_op(second, "."):
            _, path_type, end = self.param_path(nodes, 0)
            if end == len(nodes):
                return path_type
        if len(nodes) == 3 and is_op(second, ".") and (is_name(first) or _is_qident(first)):
            source = scope.source(text_of(first))
            if source is not None and isinstance(nodes[2], Token):
                column = source.by_name.get(nodes[2].text.lower())
                return column.type if column else None
        if is_word(first, "CASE") and is_word(nodes[-1], "END"):
            return self._case_type(nodes[1:-1], scope)
        if is_word(first, "ARRAY") and is_group(nodes[-1], "["):
            declared = nodes[2] if len(nodes) == 5 and is_op(second, "<") else None
            if isinstance(declared, Token) and declared.kind == IDENT:
                code = v.SCALAR_NAMES.get(declared.upper)
                if code is not None:
                    return v.array_type(v.scalar_type(code))
            return self._atom_type(nodes[-1], scope)
        operators = _top_operators(nodes)
        if operators & _COMPARISONS or operators & _BOOLEAN_WORDS:
            return BOOL
        if "||" in operators:
            return _concat_type([self.type_of(_operands(nodes, {"||"})[0], scope)])
        if "/" in operators:
            return FLOAT64
        if operators & _BITWISE:
            return INT64
        if operators & _ARITHMETIC:
            codes = set()
            for operand in _operands(nodes, _ARITHMETIC):
                if operand:
                    codes.add(_code(self.type_of(operand, scope)))
            if codes & {v.FLOAT64, v.FLOAT32}:
                return FLOAT64
            if v.NUMERIC in codes:
                return v.scalar_type(v.NUMERIC)
            if codes == {v.INT64}:
                return INT64
        return None

    def _atom_type(self, node: Node, scope: Scope) -> TypeMsg | None:
        if isinstance(node, Group):
            if node.open == "[":
                parts = split(node.items)
                element = _first_known([self.type_of(p, scope) for p in parts])
                return v.array_type(element) if element is not None else None
            if _is_query(node.items):
                columns = self.query(node.items, scope)[1]
                return columns[0].type if len(columns) == 1 else None
            return self.type_of(node.items, scope)
        kind = node.kind
        if kind == NUMBER:
            text = node.text.lower()
            is_int = text.startswith("0x") or text.isdigit()
            return INT64 if is_int else FLOAT64
        if kind == STRING:
            return STRING_T
        if kind == BYTES:
            return BYTES_T
        if kind == PARAM:
            return self.param_type(node.text)
        if kind == IDENT and node.upper in ("TRUE", "FALSE"):
            return BOOL
        if kind == IDENT and node.upper in _NO_PAREN_FUNCTIONS:
            return FUNCTIONS[node.upper].result([])
        if kind in (IDENT, QIDENT):
            column = scope.column(node.text)
            return column.type if column else None
        return None

    def _call_type(self, name: Token, group: Group, scope: Scope) -> TypeMsg | None:
        word = name.upper
        if word == "ARRAY" and _is_query(group.items):
            return self.array_subquery(group.items, scope)[1]
        if word in ("CAST", "SAFE_CAST"):
            at = max((k for k, node in enumerate(group.items) if is_word(node, "AS")), default=-1)
            return self.cast_target(group.items[at + 1 :]) if at > 0 else None
        if word == "EXISTS":
            return BOOL
        function = FUNCTIONS.get(word)
        if function is None:
            return None
        types = []
        for part in split(group.items):
            if is_word(part[0] if part else None, "DISTINCT"):
                part = part[1:]
            types.append(self.type_of(part, scope))
        return function.result(types)

    def _case_type(self, nodes: Sequence[Node], scope: Scope) -> TypeMsg | None:
        depth, start = 0, -1
        results: list[list[Node]] = []
        for k, node in enumerate(nodes):
            if is_word(node, "CASE"):
                depth += 1
            elif is_word(node, "END"):
                depth -= 1
            elif depth == 0 and is_word(node, "WHEN", "THEN", "ELSE"):
                if start >= 0:
                    results.append(list(nodes[start:k]))
                start = k + 1 if is_word(node, "THEN", "ELSE") else -1
        if start >= 0:
            results.append(list(nodes[start:]))
        return _first_known([self.type_of(r, scope) for r in results])

    # -- queries ----------------------------------------------------------------------------

    def query(self, nodes: Sequence[Node], outer: Scope | None) -> tuple[str, list[Column]]:
        """A query (WITH, SELECT, set operations, parenthesized queries): (SQL, columns)."""
        base = Scope(outer)
        prefix = ""
        i = 0
        if is_word(nodes[0], "WITH"):
            definitions, i = self.with_clause(nodes, base)
            prefix = "WITH " + ", ".join(definitions) + " "
        members: list[list[Node]] = [[]]
        operators: list[str] = []
        k = i
        while k < len(nodes):
            node = nodes[k]
            if is_word(node, "UNION", "EXCEPT", "INTERSECT"):
                assert isinstance(node, Token)
                mode = nodes[k + 1] if k + 1 < len(nodes) else None
                if is_group(mode) and node.upper == "EXCEPT":
                    raise _unimplemented("SELECT * EXCEPT (...) is not supported by LocalSpanner")
                if not is_word(mode, "ALL", "DISTINCT"):
                    raise self.error(mode, f"Expected ALL or DISTINCT after {node.upper}")
                if is_word(mode, "ALL") and node.upper != "UNION":
                    raise _unimplemented(f"{node.upper} ALL is not supported by LocalSpanner")
                operators.append("UNION ALL" if is_word(mode, "ALL") else node.upper)
                members.append([])
                k += 2
                continue
            members[-1].append(node)
            k += 1
        texts: list[str] = []
        columns: list[Column] = []
        for member in members:
            text, member_columns = self.member(member, base, alone=len(members) == 1)
            texts.append(text)
            if not columns:
                columns = list(member_columns)
            else:
                if len(member_columns) != len(columns):
                    raise _invalid(
                        "Queries in a set operation must have the same number of columns"
                    )
                for position_, column in enumerate(member_columns):
                    if columns[position_].type is None:
                        columns[position_] = Column(columns[position_].name, column.type)
        sql = texts[0]
        for operator, text in zip(operators, texts[1:], strict=True):
            sql += f" {operator} {text}"
        return prefix + sql, columns

    def with_clause(self, nodes: Sequence[Node], base: Scope) -> tuple[list[str], int]:
        if is_word(nodes[1] if len(nodes) > 1 else None, "RECURSIVE"):
            raise _unimplemented("WITH RECURSIVE is not supported by LocalSpanner")
        definitions = []
        i = 1
        while True:
            name, as_, body = (nodes[i + j] if i + j < len(nodes) else None for j in range(3))
            if not (is_name(name) or _is_qident(name)) or not is_word(as_, "AS"):
                raise self.error(name, "Expected name AS (query) in WITH")
            if not isinstance(body, Group) or not _is_query(body.items):
                raise self.error(body, "Expected (query) in WITH")
            assert isinstance(name, Token)
            sub_sql, sub_columns = self.query(body.items, base)
            base.ctes[name.text.lower()] = sub_columns
            definitions.append(f"{quote_ident(name.text)} AS ({sub_sql})")
            i += 3
            if i < len(nodes) and is_op(nodes[i], ","):
                i += 1
                continue
            return definitions, i

    def member(
        self, nodes: Sequence[Node], base: Scope, *, alone: bool
    ) -> tuple[str, list[Column]]:
        if not nodes:
            raise self.error(None, "Expected a query")
        first = nodes[0]
        if is_word(first, "SELECT"):
            return self.select(nodes, base)
        if isinstance(first, Group) and _is_query(first.items):
            sub_sql, columns = self.query(first.items, base)
            if alone and len(nodes) == 1:
                return sub_sql, columns
            scope = Scope(base)
            scope.sources.append(Source("", columns))
            rest = self.expr(nodes[1:], scope)
            return f"SELECT * FROM ({sub_sql})" + (f" {rest}" if rest else ""), columns
        raise self.error(first, "Expected SELECT")

    def select(self, nodes: Sequence[Node], parent: Scope) -> tuple[str, list[Column]]:
        scope = Scope(parent)
        head = "SELECT"
        i = 1
        if is_word(nodes[1] if len(nodes) > 1 else None, "AS"):
            raise _unimplemented("SELECT AS STRUCT and SELECT AS VALUE are not supported")
        if is_word(nodes[1] if len(nodes) > 1 else None, "ALL", "DISTINCT"):
            head += " " + word_of(nodes[1])
            i = 2
        list_end = find_word(nodes, "FROM", *_QUERY_CLAUSES, start=i)
        list_end = len(nodes) if list_end < 0 else list_end
        from_sql = ""
        rest_at = list_end
        if list_end < len(nodes) and is_word(nodes[list_end], "FROM"):
            rest_at = find_word(nodes, *_QUERY_CLAUSES, start=list_end + 1)
            rest_at = len(nodes) if rest_at < 0 else rest_at
            from_sql = " FROM " + self.from_clause(nodes[list_end + 1 : rest_at], scope)
        items_sql, columns = self.select_list(nodes[i:list_end], scope)
        rest = list(nodes[rest_at:])
        if len(rest) >= 2 and is_word(rest[-2], "FOR") and is_word(rest[-1], "UPDATE"):
            rest = rest[:-2]  # every read-write transaction here is serializable anyway
        rest_sql = self.expr(rest, scope)
        return f"{head} {items_sql}{from_sql}" + (f" {rest_sql}" if rest_sql else ""), columns

    def select_list(self, nodes: Sequence[Node], scope: Scope) -> tuple[str, list[Column]]:
        items = split(nodes)
        if not items:
            raise self.error(nodes[0] if nodes else None, "Expected a SELECT list")
        out: list[str] = []
        columns: list[Column] = []
        for item in items:
            if not item:
                raise self.error(None, "Empty item in a SELECT list")
            if is_op(item[0], "*"):
                if len(item) > 1:
                    raise _unimplemented("SELECT * EXCEPT/REPLACE is not supported by LocalSpanner")
                if not scope.sources:
                    raise _invalid("SELECT * must have a FROM clause")
                for source in scope.sources:
                    columns.extend(c for c in source.columns if c.name.lower() not in source.hidden)
                out.append("*")
                continue
            if (
                len(item) == 4
                and is_word(item[0], "CAST")
                and isinstance(item[1], Group)
                and is_op(item[2], ".")
                and is_op(item[3], "*")
            ):
                text, cast_columns = self.cast_struct_star(item[1], scope)
                out.append(text)
                columns.extend(cast_columns)
                continue
            if len(item) == 3 and is_op(item[1], ".") and is_op(item[2], "*"):
                assert isinstance(item[0], Token)
                star_source = scope.source(item[0].text)
                if star_source is None:
                    raise _invalid(
                        located(self.sql, item[0].pos, f"Unrecognized name: {item[0].text}")
                    )
                columns.extend(star_source.columns)
                name = self.renamed.get(star_source.alias.lower(), star_source.alias)
                out.append(f"{quote_ident(name)}.*")
                continue
            expression, alias = _split_alias(item)
            if (
                is_word(expression[0], "STRUCT")
                or _code(self.type_of(expression, scope)) == v.STRUCT
            ):
                raise _invalid(
                    "Unsupported query shape: A struct value cannot be returned as a column "
                    "value. Rewrite the query to flatten the struct fields in the result."
                )
            sql = self.expr(expression, scope)
            columns.append(
                Column(alias or _implicit_name(expression), self.type_of(expression, scope))
            )
            out.append(f"{sql} AS {quote_ident(alias)}" if alias else sql)
        return ", ".join(out), columns

    def from_clause(self, nodes: Sequence[Node], scope: Scope) -> str:
        out: list[str] = []
        k, n = 0, len(nodes)
        want_source = True
        while k < n:
            node = nodes[k]
            if want_source:
                text, k = self.source(nodes, k, scope)
                out.append(text)
                want_source = False
            elif is_op(node, ","):
                out.append(",")
                want_source = True
                k += 1
            elif is_word(node, *_JOIN_WORDS):
                words = []
                while k < n and is_word(nodes[k], *_JOIN_WORDS, "OUTER"):
                    words.append(word_of(nodes[k]))
                    k += 1
                    if words[-1] == "JOIN":
                        break
                if words[-1] != "JOIN":
                    raise self.error(nodes[k] if k < n else None, "Expected JOIN")
                out.append(" ".join(words))
                want_source = True
            elif is_word(node, "ON"):
                end = k + 1
                while end < n and not (is_op(nodes[end], ",") or is_word(nodes[end], *_JOIN_WORDS)):
                    end += 1
                out.append("ON " + self.expr(nodes[k + 1 : end], scope))
                k = end
            elif is_word(node, "USING") and isinstance(using := _at(nodes, k + 1), Group):
                names = [_single_name(self, part) for part in split(using.items)]
                scope.sources[-1].hidden.update(name.lower() for name in names)
                out.append("USING (" + ", ".join(quote_ident(name) for name in names) + ")")
                k += 2
            elif is_word(node, "TABLESAMPLE"):
                raise _unimplemented("TABLESAMPLE is not supported by LocalSpanner")
            else:
                raise self.error(node, "Unexpected text in FROM clause")
        if want_source:
            raise self.error(None, "Expected a table after FROM or JOIN")
        return " ".join(out)

    def source(self, nodes: Sequence[Node], k: int, scope: Scope) -> tuple[str, int]:
        """One FROM item starting at ``nodes[k]``: (SQLite text, index after it)."""
        node = nodes[k]
        after = nodes[k + 1] if k + 1 < len(nodes) else None
        if is_word(node, "UNNEST") and isinstance(after, Group):
            element_sql, element_type = self.element_sql(after.items, scope)
            array_sql = self.expr(after.items, scope)
            alias, k = self.alias(nodes, k + 2)
            if _code(element_type) == v.STRUCT:
                return self.unnest_structs(array_sql, element_type, alias, k, scope)
            offset = None
            if is_word(nodes[k] if k < len(nodes) else None, "WITH") and is_word(
                nodes[k + 1] if k + 1 < len(nodes) else None, "OFFSET"
            ):
                offset, k = self.alias(nodes, k + 2)
                offset = offset or "offset"
            columns = [Column(alias or "", element_type)]
            select = f"{element_sql} AS {quote_ident(alias or 'value')}"
            if offset is not None:
                columns.append(Column(offset, INT64))
                select += f", key AS {quote_ident(offset)}"
            table_alias = alias or f"unnest_{k}"
            scope.sources.append(Source(table_alias, columns))
            text = f"(SELECT {select} FROM json_each({array_sql})) AS {quote_ident(table_alias)}"
            return text, k
        if isinstance(node, Group):
            if not _is_query(node.items):
                return "(" + self.from_clause(node.items, scope) + ")", k + 1
            sub_sql, columns = self.query(node.items, scope.parent)
            alias, k = self.alias(nodes, k + 1)
            scope.sources.append(Source(alias or "", columns))
            return f"({sub_sql})" + (f" AS {quote_ident(alias)}" if alias else ""), k
        if not (is_name(node) or _is_qident(node)):
            raise self.error(node, "Expected a table, subquery or UNNEST")
        assert isinstance(node, Token)
        path = [node.text]
        k += 1
        while k + 1 < len(nodes) and is_op(nodes[k], ".") and isinstance(nodes[k + 1], Token):
            path.append(text_of(nodes[k + 1]))
            k += 2
        alias, k = self.alias(nodes, k)
        if len(path) == 2 and path[0].upper() == "INFORMATION_SCHEMA":
            text, columns = self.information_schema(path[1])
            alias = alias or path[1]
        elif len(path) == 1 and path[0].lower() in scope.ctes:
            text, columns = quote_ident(path[0]), scope.ctes[path[0].lower()]
        elif len(path) == 1 and self.catalog.find_table(path[0]) is not None:
            table = self.catalog.table(path[0])
            self.tables.add(table.name)
            columns = [Column(c.name, c.type) for c in table.columns]
            if self.mode == PLAIN:
                text = quote_ident(table.name)
            else:
                if self.mode == VERSIONED:
                    text = versions.source_sql(table)
                else:
                    text = versions.locking_source_sql(table)
                alias = alias or table.name
        elif len(path) == 1 and (view := self.catalog.find_view(path[0])) is not None:
            columns = [Column(c.name, c.type) for c in view.columns]
            if self.mode == PLAIN:
                text = quote_ident(view.name)
            else:  # the view's query, so that its tables are read the same way
                text = "(" + self.query(parse_tree(view.query), None)[0] + ")"
                alias = alias or view.name
        else:
            raise _invalid(located(self.sql, node.pos, f"Table not found: {'.'.join(path)}"))
        scope.sources.append(Source(alias or path[-1], columns))
        return text + (f" AS {quote_ident(alias)}" if alias else ""), k

    def unnest_structs(
        self, array_sql: str, element: TypeMsg, alias: str | None, k: int, scope: Scope
    ) -> tuple[str, int]:
        """``UNNEST(array of structs) AS a``: one column per field (``a.field``); fields
        without a name are ``_field_1``, ``_field_2``, ..."""
        columns = []
        selected = []
        for slot, (name, type_) in enumerate(v.struct_fields(element)):
            column = name or f"_field_{slot + 1}"
            value = f"json_extract(value, '$[{slot}]')"
            if _code(type_) in (v.BYTES, v.PROTO):
                value = f"spanpool_unbase64({value})"
            columns.append(Column(column, type_))
            selected.append(f"{value} AS {quote_ident(column)}")
        table_alias = alias or f"unnest_{k}"
        source = Source(table_alias, columns)
        source.struct = element
        scope.sources.append(source)
        text = (
            f"(SELECT {', '.join(selected) or 'NULL'} FROM json_each({array_sql})) "
            f"AS {quote_ident(table_alias)}"
        )
        return text, k

    def alias(self, nodes: Sequence[Node], k: int) -> tuple[str | None, int]:
        """An optional ``[AS] name`` at ``nodes[k]``."""
        node = nodes[k] if k < len(nodes) else None
        if is_word(node, "AS"):
            name = nodes[k + 1] if k + 1 < len(nodes) else None
            if not isinstance(name, Token) or name.kind not in (IDENT, QIDENT):
                raise self.error(name, "Expected an alias after AS")
            return name.text, k + 2
        if (is_name(node) and not is_word(node, *_QUERY_CLAUSES)) or _is_qident(node):
            return text_of(node), k + 1
        return None, k

    def information_schema(self, name: str) -> tuple[str, list[Column]]:
        """INFORMATION_SCHEMA.TABLES, COLUMNS and INDEXES, built from the catalog; the views
        of constraints and index columns come from :mod:`.information_schema`."""
        view = name.upper()
        tables = self.catalog.tables
        rows: list[tuple[object, ...]]
        if view == "TABLES":
            names = ["TABLE_CATALOG", "TABLE_SCHEMA", "TABLE_NAME", "PARENT_TABLE_NAME"]
            names += ["ON_DELETE_ACTION", "TABLE_TYPE", "SPANNER_STATE"]
            types = [STRING_T] * len(names)
            rows = [
                (
                    "",
                    "",
                    t.name,
                    t.parent,
                    None if t.parent is None else "CASCADE" if t.on_delete_cascade else "NO ACTION",
                    "BASE TABLE",
                    "COMMITTED",
                )
                for t in tables
            ]
            rows += [("", "", w.name, None, None, "VIEW", "COMMITTED") for w in self.catalog.views]
        elif view == "COLUMNS":
            names = ["TABLE_CATALOG", "TABLE_SCHEMA", "TABLE_NAME", "COLUMN_NAME"]
            names += ["ORDINAL_POSITION", "IS_NULLABLE", "SPANNER_TYPE"]
            types = [STRING_T] * 4 + [INT64, STRING_T, STRING_T]
            rows = [
                ("", "", t.name, c.name, n, "YES" if c.nullable else "NO", spanner_type(c.type))
                for t in tables
                for n, c in enumerate(t.columns, 1)
            ]
        elif view == "INDEXES":
            names = ["TABLE_CATALOG", "TABLE_SCHEMA", "TABLE_NAME", "INDEX_NAME", "INDEX_TYPE"]
            names += ["PARENT_TABLE_NAME", "IS_UNIQUE", "IS_NULL_FILTERED", "INDEX_STATE"]
            types = [STRING_T] * 6 + [BOOL, BOOL, STRING_T]
            rows = [("", "", t.name, "PRIMARY_KEY", "PRIMARY_KEY", "", 1, 0, None) for t in tables]
            for i in self.catalog.indexes:
                parent = i.parent or ""
                rows.append(
                    (
                        "",
                        "",
                        i.table,
                        i.name,
                        "INDEX",
                        parent,
                        i.unique,
                        i.null_filtered,
                        "READ_WRITE",
                    )
                )
        elif (known := information_schema.view(self.catalog, view)) is not None:
            names, types, rows = known
        else:
            raise _unimplemented(f"INFORMATION_SCHEMA.{name} is not supported by LocalSpanner")
        head = ", ".join(f"NULL AS {quote_ident(n)}" for n in names)
        text = f"(SELECT {head} WHERE 0"
        if rows:
            values = ", ".join("(" + ", ".join(sql_literal(x) for x in row) + ")" for row in rows)
            text += f" UNION ALL VALUES {values}"
        return text + ")", [Column(n, t) for n, t in zip(names, types, strict=True)]

    # -- DML --------------------------------------------------------------------------------

    def table(self, node: Node | None) -> TableInfo:
        if not (is_name(node) or _is_qident(node)):
            raise self.error(node, "Expected a table name")
        assert isinstance(node, Token)
        table = self.catalog.find_table(node.text)
        if table is None:
            raise _invalid(located(self.sql, node.pos, f"Table not found: {node.text}"))
        self.tables.add(table.name)
        return table

    def stored_value(self, nodes: Sequence[Node], column: ColumnInfo, scope: Scope) -> str:
        """SQLite text of a value written to ``column``, coerced to its storage form."""
        if len(nodes) == 1 and is_word(nodes[0], "DEFAULT"):
            return column.default_sql or "NULL"
        sql = self.expr(nodes, scope)
        source = self.type_of(nodes, scope)
        if v.type_key(source) == v.type_key(column.type):
            return sql
        code, element = v.type_key(column.type)
        return f"spanpool_store({sql}, {code}, {element})"

    def insert(self, nodes: Sequence[Node]) -> Translation:
        k = 1
        mode = None
        if is_word(_at(nodes, 1), "OR"):
            if not is_word(_at(nodes, 2), "UPDATE", "IGNORE"):
                raise self.error(_at(nodes, 2), "Expected INSERT OR UPDATE or INSERT OR IGNORE")
            mode = word_of(nodes[2])
            k = 3
        if is_word(_at(nodes, k), "INTO"):
            k += 1
        table = self.table(_at(nodes, k))
        names_group = _at(nodes, k + 1)
        if not isinstance(names_group, Group):
            raise self.error(names_group, "Expected the list of columns to insert")
        columns: list[ColumnInfo] = []
        for part in split(names_group.items):
            name = _single_name(self, part)
            column = table.find_column(name)
            if column is None:
                raise _invalid(f"Column not found in table {table.name}: {name}")
            if any(c is column for c in columns):
                raise _invalid(f"INSERT has columns with duplicate name: {column.name}")
            columns.append(column)
        k += 2
        end = _then_return(nodes, k)
        body = nodes[k:end]
        scope = Scope()
        if is_word(_at(body, 0), "VALUES"):
            rows = []
            for part in split(body[1:]):
                if len(part) != 1 or not isinstance(part[0], Group):
                    raise self.error(_at(part, 0), "Expected (values) after VALUES")
                values = split(part[0].items)
                if len(values) != len(columns):
                    raise _invalid(
                        f"Inserted row has wrong column count; Has {len(values)}, "
                        f"expected {len(columns)}"
                    )
                rows.append(
                    "("
                    + ", ".join(
                        self.stored_value(x, c, scope) for x, c in zip(values, columns, strict=True)
                    )
                    + ")"
                )
            if not rows:
                raise self.error(None, "Expected (values) after VALUES")
            source = "VALUES " + ", ".join(rows)
        elif _is_query(body):
            source = self.query(body, None)[0]
            if mode is not None:  # SQLite's upsert needs the SELECT to have a WHERE clause
                source = f"SELECT * FROM ({source}) WHERE true"
        else:
            raise self.error(_at(body, 0), "Expected VALUES or a query")
        names = ", ".join(quote_ident(c.name) for c in columns)
        sql = f"INSERT INTO {quote_ident(table.name)} ({names}) {source}"
        if mode == "IGNORE":
            sql += " ON CONFLICT DO NOTHING"
        elif mode == "UPDATE":
            keys = ", ".join(quote_ident(k) for k in table.primary_key)
            changed = [c for c in columns if c.name not in table.primary_key]
            if changed and keys:
                sets = ", ".join(
                    f"{quote_ident(c.name)} = excluded.{quote_ident(c.name)}" for c in changed
                )
                sql += f" ON CONFLICT ({keys}) DO UPDATE SET {sets}"
            else:
                sql += " ON CONFLICT DO NOTHING"
        returning, result = self.returning(nodes[end:], table, None, "INSERT")
        return Translation(
            sql + returning, self.params, result, "INSERT", table.name, bool(returning)
        )

    def update(self, nodes: Sequence[Node]) -> Translation:
        table = self.table(_at(nodes, 1))
        alias, k = self.alias(nodes, 2)
        if is_word(_at(nodes, 2), "SET"):
            alias, k = None, 2
        if not is_word(_at(nodes, k), "SET"):
            raise self.error(_at(nodes, k), "Expected SET")
        where = find_word(nodes, "WHERE", start=k)
        if where < 0:
            raise _invalid("UPDATE must have a WHERE clause")
        end = _then_return(nodes, where)
        scope = Scope()
        scope.sources.append(
            Source(alias or table.name, [Column(c.name, c.type) for c in table.columns])
        )
        assignments = []
        for part in split(nodes[k + 1 : where]):
            equals = next((j for j, node in enumerate(part) if is_op(node, "=")), -1)
            target = part[:equals]
            if equals < 0 or not target or len(target) not in (1, 3):
                raise self.error(_at(part, 0), "Expected column = value")
            name = _single_name(self, target[-1:])
            column = table.find_column(name)
            if column is None:
                raise _invalid(f"Column not found in table {table.name}: {name}")
            if column.name in table.primary_key:
                raise _invalid(f"Cannot UPDATE value on non-writable column: {column.name}")
            value = self.stored_value(part[equals + 1 :], column, scope)
            assignments.append(f"{quote_ident(column.name)} = {value}")
        if not assignments:
            raise self.error(_at(nodes, k + 1), "Expected column = value after SET")
        condition = self.expr(nodes[where + 1 : end], scope)
        sql = f"UPDATE {quote_ident(table.name)}"
        if alias:
            sql += f" AS {quote_ident(alias)}"
        sql += f" SET {', '.join(assignments)} WHERE {condition}"
        returning, result = self.returning(nodes[end:], table, alias, "UPDATE")
        return Translation(
            sql + returning, self.params, result, "UPDATE", table.name, bool(returning)
        )

    def delete(self, nodes: Sequence[Node]) -> Translation:
        k = 2 if is_word(_at(nodes, 1), "FROM") else 1
        table = self.table(_at(nodes, k))
        alias, k = self.alias(nodes, k + 1)
        if not is_word(_at(nodes, k), "WHERE"):
            if k < len(nodes):
                raise self.error(nodes[k], "Expected WHERE")
            raise _invalid("DELETE must have a WHERE clause")
        end = _then_return(nodes, k)
        scope = Scope()
        scope.sources.append(
            Source(alias or table.name, [Column(c.name, c.type) for c in table.columns])
        )
        sql = f"DELETE FROM {quote_ident(table.name)}"
        if alias:
            sql += f" AS {quote_ident(alias)}"
        sql += " WHERE " + self.expr(nodes[k + 1 : end], scope)
        returning, result = self.returning(nodes[end:], table, alias, "DELETE")
        return Translation(
            sql + returning, self.params, result, "DELETE", table.name, bool(returning)
        )

    def returning(
        self, nodes: Sequence[Node], table: TableInfo, alias: str | None, action: str
    ) -> tuple[str, list[Column]]:
        """SQLite RETURNING for ``THEN RETURN [WITH ACTION [AS name]] items`` (or nothing)."""
        if not nodes:
            return "", []
        nodes = nodes[2:]  # THEN RETURN
        action_name = None
        if is_word(_at(nodes, 0), "WITH") and is_word(_at(nodes, 1), "ACTION"):
            action_name, k = self.alias(nodes, 2)
            action_name = action_name or "ACTION"
            nodes = nodes[k:]
        if alias:
            self.renamed[alias.lower()] = table.name
        scope = Scope()
        scope.sources.append(
            Source(alias or table.name, [Column(c.name, c.type) for c in table.columns])
        )
        items, columns = self.select_list(nodes, scope)
        if action_name is not None:
            items += f", {sql_literal(action)} AS {quote_ident(action_name)}"
            columns.append(Column(action_name, STRING_T))
        return " RETURNING " + items, columns


# --- helpers -----------------------------------------------------------------------------------


def _at(nodes: Sequence[Node], k: int) -> Node | None:
    return nodes[k] if 0 <= k < len(nodes) else None


def _is_qident(node: Node | None) -> bool:
    return isinstance(node, Token) and node.kind == QIDENT


def _single_name(translator: _Translator, nodes: Sequence[Node]) -> str:
    if len(nodes) != 1 or not (is_name(nodes[0]) or _is_qident(nodes[0])):
        raise translator.error(_at(nodes, 0), "Expected a column name")
    return text_of(nodes[0])


def _then_return(nodes: Sequence[Node], start: int) -> int:
    """Index of a top-level ``THEN RETURN``, or the length of ``nodes``."""
    for k in range(start, len(nodes) - 1):
        if is_word(nodes[k], "THEN") and is_word(nodes[k + 1], "RETURN"):
            return k
    return len(nodes)


def _outside_case(nodes: Sequence[Node]) -> list[tuple[int, Node]]:
    """The top-level nodes with their indexes, skipping what is inside CASE ... END."""
    out = []
    depth = 0
    for k, node in enumerate(nodes):
        if is_word(node, "CASE"):
            depth += 1
        elif is_word(node, "END") and depth:
            depth -= 1
        elif depth == 0:
            out.append((k, node))
    return out


def _top_operators(nodes: Sequence[Node]) -> set[str]:
    found = set()
    for _, node in _outside_case(nodes):
        if isinstance(node, Token) and node.kind == OP:
            found.add(node.text)
        elif isinstance(node, Token) and node.kind == IDENT and node.upper in _BOOLEAN_WORDS:
            found.add(node.upper)
    return found


def _operands(nodes: Sequence[Node], operators: frozenset[str] | set[str]) -> list[list[Node]]:
    cuts = [k for k, node in _outside_case(nodes) if is_op(node, *operators)]
    bounds = [-1, *cuts, len(nodes)]
    return [list(nodes[a + 1 : b]) for a, b in itertools.pairwise(bounds)]


def _split_alias(item: list[Node]) -> tuple[list[Node], str | None]:
    """Split ``expression [AS] alias``."""
    if len(item) >= 3 and is_word(item[-2], "AS"):
        last = item[-1]
        if isinstance(last, Token) and last.kind in (IDENT, QIDENT):
            return item[:-2], last.text
    if len(item) >= 2 and (is_name(item[-1]) or _is_qident(item[-1])):
        before = item[-2]
        if isinstance(before, Group) or (
            isinstance(before, Token)
            and before.kind != OP
            and (
                before.kind != IDENT
                or before.upper not in RESERVED
                or before.upper in ("END", "NULL", "TRUE", "FALSE")
            )
        ):
            return item[:-1], text_of(item[-1])
    return item, None


def _json_element(sql: str, type_: TypeMsg | None) -> str:
    """SQLite text putting a value into a JSON array as arrays of structs keep it."""
    code = _code(type_)
    if code in (v.ARRAY, v.STRUCT):
        return f"json({sql})"
    if code in (v.BYTES, v.PROTO):
        return f"spanpool_base64({sql})"
    return sql


def _implicit_name(nodes: Sequence[Node]) -> str:
    """The name GoogleSQL gives an unaliased column: the last name of a path, else ""."""
    last = nodes[-1]
    if not (is_name(last) or _is_qident(last)):
        return ""
    if len(nodes) == 1 or (len(nodes) >= 3 and is_op(nodes[-2], ".")):
        return text_of(last)
    return ""
