"""GoogleSQL tokens for LocalSpanner: a tokenizer and a tree of bracketed groups.

Both the DDL parser and the query translator work on this tree: a list of ``Token`` and
``Group`` nodes, where a ``Group`` holds what stood between matching ``(``/``)`` or ``[``/``]``.
Comments and hints (``@{...}``) are dropped; string literals are decoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import grpc

from .values import EngineError

IDENT = "ident"  # a bare word: keyword, identifier or function name
QIDENT = "qident"  # a `quoted` identifier (text is the name)
STRING = "string"
BYTES = "bytes"
NUMBER = "number"
PARAM = "param"  # @name (text is the name)
OP = "op"  # operators and punctuation

_TWO_CHAR_OPS = frozenset({"||", "<=", ">=", "<>", "!=", "<<", ">>", "=>"})
_ONE_CHAR_OPS = frozenset("+-*/%=<>&|^~(),.;[]{}:?!")
_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    "?": "?",
    "'": "'",
    '"': '"',
    "`": "`",
}
_HEX_ESCAPES = {"x": 2, "X": 2, "u": 4, "U": 8}
_OCTAL = frozenset("01234567")

# Words that cannot name a column or table unquoted, and are not function calls when followed
# by a parenthesis.
# fmt: off
RESERVED = frozenset([
    "ALL", "AND", "ANY", "ARRAY", "AS", "ASC", "ASSERT_ROWS_MODIFIED", "AT", "BETWEEN", "BY",
    "CASE", "CAST", "COLLATE", "CONTAINS", "CREATE", "CROSS", "CUBE", "CURRENT", "DEFAULT",
    "DEFINE", "DESC", "DISTINCT", "ELSE", "END", "ENUM", "ESCAPE", "EXCEPT", "EXCLUDE", "EXISTS",
    "EXTRACT", "FALSE", "FETCH", "FOLLOWING", "FOR", "FROM", "FULL", "GROUP", "GROUPING", "GROUPS",
    "HASH", "HAVING", "IF", "IGNORE", "IN", "INNER", "INTERSECT", "INTERVAL", "INTO", "IS", "JOIN",
    "LATERAL", "LEFT", "LIKE", "LIMIT", "LOOKUP", "MERGE", "NATURAL", "NEW", "NO", "NOT", "NULL",
    "NULLS", "OF", "ON", "OR", "ORDER", "OUTER", "OVER", "PARTITION", "PRECEDING", "PROTO",
    "RANGE", "RECURSIVE", "RESPECT", "RIGHT", "ROLLUP", "ROWS", "SELECT", "SET", "SOME", "STRUCT",
    "TABLESAMPLE", "THEN", "TO", "TREAT", "TRUE", "UNBOUNDED", "UNION", "UNNEST", "USING", "WHEN",
    "WHERE", "WINDOW", "WITH", "WITHIN"
])
# fmt: on


class Token:
    """One token; ``upper`` is the upper-cased text of words, for keyword tests."""

    __slots__ = ("kind", "pos", "text", "upper", "value")

    def __init__(self, kind: str, text: str, pos: int, value: str | bytes | None = None) -> None:
        self.kind = kind
        self.text = text
        self.pos = pos
        self.upper = text.upper() if kind == IDENT else ""
        self.value = value

    def __repr__(self) -> str:
        return f"Token({self.kind}, {self.text!r})"


class Group:
    """The nodes between an opening bracket (``(`` or ``[``) and its match."""

    __slots__ = ("items", "open", "pos")

    def __init__(self, open_: str, pos: int) -> None:
        self.open = open_
        self.pos = pos
        self.items: list[Node] = []

    def __repr__(self) -> str:
        return f"Group({self.open}{self.items!r})"


Node: TypeAlias = "Token | Group"


def located(sql: str, pos: int, message: str) -> str:
    """``message`` as Cloud Spanner places it: ``[at line:column]``, then the statement's line
    and a caret under the column."""
    pos = max(0, min(pos, len(sql)))
    start = sql.rfind("\n", 0, pos) + 1
    end = sql.find("\n", pos)
    text = sql[start : end if end >= 0 else len(sql)]
    line = sql.count("\n", 0, pos) + 1
    column = pos - start + 1
    return f"{message} [at {line}:{column}]\n{text}\n{' ' * (column - 1)}^"


def syntax_error(sql: str, pos: int, what: str) -> EngineError:
    """INVALID_ARGUMENT with Cloud Spanner's ``[at line:column]`` and the line in question."""
    return EngineError(grpc.StatusCode.INVALID_ARGUMENT, located(sql, pos, f"Syntax error: {what}"))


def _read_quoted(sql: str, start: int, *, raw: bool, as_bytes: bool) -> tuple[str | bytes, int]:
    """Decode the string literal whose opening quote is at ``start``; returns (value, end)."""
    quote = sql[start]
    delimiter = quote * 3 if sql.startswith(quote * 3, start) else quote
    i = start + len(delimiter)
    text: list[str] = []
    data = bytearray()

    def put(chunk: str) -> None:
        if as_bytes:
            data.extend(chunk.encode("utf-8"))
        else:
            text.append(chunk)

    while True:
        if i >= len(sql) or (sql[i] == "\n" and len(delimiter) == 1):
            raise syntax_error(sql, start, "Unclosed string literal")
        if sql.startswith(delimiter, i):
            end = i + len(delimiter)
            return (bytes(data) if as_bytes else "".join(text)), end
        char = sql[i]
        if char != "\\":
            put(char)
            i += 1
            continue
        if i + 1 >= len(sql):
            raise syntax_error(sql, start, "Unclosed string literal")
        escape = sql[i + 1]
        if raw:
            put(sql[i : i + 2])
            i += 2
        elif escape in _SIMPLE_ESCAPES:
            put(_SIMPLE_ESCAPES[escape])
            i += 2
        elif escape in _HEX_ESCAPES or escape in _OCTAL:
            if escape in _OCTAL:
                digits, base, width = sql[i + 1 : i + 4], 8, 3
            else:
                width = _HEX_ESCAPES[escape]
                digits, base = sql[i + 2 : i + 2 + width], 16
            try:
                code = int(digits, base) if len(digits) == width else -1
            except ValueError:
                code = -1
            if code < 0 or code > 0x10FFFF:
                raise syntax_error(sql, i, "Illegal escape sequence in string literal")
            if as_bytes and escape not in "uU":
                data.append(code & 0xFF)
            else:
                put(chr(code))
            i += 1 + width + (0 if escape in _OCTAL else 1)
        else:
            raise syntax_error(sql, i, f"Illegal escape sequence: \\{escape}")


def _skip_hint(sql: str, start: int) -> int:
    """End of the ``@{...}`` hint starting at ``start``."""
    depth = 0
    for i in range(start, len(sql)):
        if sql[i] == "{":
            depth += 1
        elif sql[i] == "}":
            depth -= 1
            if depth == 0:
                return i + 1
    raise syntax_error(sql, start, "Unclosed hint")


def comment_end(sql: str, i: int) -> int | None:
    """Where the comment that starts at ``i`` ends (``#`` or ``--`` to the end of the line,
    ``/* */``): the index after it, or -1 for a ``/*`` never closed; None when no comment
    starts at ``i``."""
    if sql.startswith(("#", "--"), i):
        end = sql.find("\n", i)
        return len(sql) if end < 0 else end + 1
    if sql.startswith("/*", i):
        end = sql.find("*/", i + 2)
        return -1 if end < 0 else end + 2
    return None


def _word_end(sql: str, i: int) -> int:
    while i < len(sql) and (sql[i].isalnum() or sql[i] == "_"):
        i += 1
    return i


def _number_end(sql: str, i: int) -> int:
    n = len(sql)
    if sql.startswith(("0x", "0X"), i):
        return _word_end(sql, i + 2)
    while i < n and sql[i].isdigit():
        i += 1
    if i < n and sql[i] == ".":
        i += 1
        while i < n and sql[i].isdigit():
            i += 1
    if i < n and sql[i] in "eE":
        j = i + 1
        if j < n and sql[j] in "+-":
            j += 1
        if j < n and sql[j].isdigit():
            i = j
            while i < n and sql[i].isdigit():
                i += 1
    return i


def tokenize(sql: str) -> list[Token]:
    """The tokens of a GoogleSQL statement (INVALID_ARGUMENT on lexical errors)."""
    tokens: list[Token] = []
    i, n = 0, len(sql)
    while i < n:
        char = sql[i]
        if char.isspace():
            i += 1
        elif char in "#-/" and (end := comment_end(sql, i)) is not None:
            if end < 0:
                raise syntax_error(sql, i, "Unclosed comment")
            i = end
        elif char.isalpha() or char == "_":
            end = _word_end(sql, i)
            word = sql[i:end]
            prefix = word.upper()
            if end < n and sql[end] in "'\"" and prefix in ("R", "B", "RB", "BR"):
                value, end2 = _read_quoted(sql, end, raw="R" in prefix, as_bytes="B" in prefix)
                kind = BYTES if "B" in prefix else STRING
                tokens.append(Token(kind, sql[i:end2], i, value))
                end = end2
            else:
                tokens.append(Token(IDENT, word, i))
            i = end
        elif char.isdigit() or (char == "." and i + 1 < n and sql[i + 1].isdigit()):
            end = _number_end(sql, i)
            tokens.append(Token(NUMBER, sql[i:end], i))
            i = end
        elif char in "'\"":
            value, end = _read_quoted(sql, i, raw=False, as_bytes=False)
            tokens.append(Token(STRING, sql[i:end], i, value))
            i = end
        elif char == "`":
            end = sql.find("`", i + 1)
            if end < 0:
                raise syntax_error(sql, i, "Unclosed identifier literal")
            if end == i + 1:
                raise syntax_error(sql, i, "Invalid empty identifier")
            tokens.append(Token(QIDENT, sql[i + 1 : end], i))
            i = end + 1
        elif char == "@":
            if sql.startswith("@{", i):
                i = _skip_hint(sql, i + 1)
                continue
            if sql.startswith("@@", i):
                raise EngineError(
                    grpc.StatusCode.UNIMPLEMENTED, "System variables are not supported"
                )
            end = _word_end(sql, i + 1)
            if end == i + 1:
                raise syntax_error(sql, i, "Expected a parameter name after @")
            tokens.append(Token(PARAM, sql[i + 1 : end], i))
            i = end
        elif sql[i : i + 2] in _TWO_CHAR_OPS:
            tokens.append(Token(OP, sql[i : i + 2], i))
            i += 2
        elif char in _ONE_CHAR_OPS:
            tokens.append(Token(OP, char, i))
            i += 1
        else:
            raise syntax_error(sql, i, f"Illegal input character {char!r}")
    return tokens


_CLOSERS = {"(": ")", "[": "]"}


def parse_tree(sql: str) -> list[Node]:
    """Tokens of ``sql`` nested by brackets; a trailing ``;`` is dropped."""
    tokens = tokenize(sql)
    if tokens and tokens[-1].kind == OP and tokens[-1].text == ";":
        tokens.pop()
    root: list[Node] = []
    stack: list[Group] = []
    items = root
    for token in tokens:
        if token.kind == OP and token.text in _CLOSERS:
            group = Group(token.text, token.pos)
            items.append(group)
            stack.append(group)
            items = group.items
        elif token.kind == OP and token.text in (")", "]"):
            if not stack or _CLOSERS[stack[-1].open] != token.text:
                raise syntax_error(sql, token.pos, f"Unexpected {token.text!r}")
            stack.pop()
            items = stack[-1].items if stack else root
        elif token.kind == OP and token.text == ";":
            raise syntax_error(sql, token.pos, "Only one statement is allowed per request")
        else:
            items.append(token)
    if stack:
        raise syntax_error(sql, stack[-1].pos, f"Unclosed {stack[-1].open!r}")
    return root


# --- helpers over node lists -------------------------------------------------------------------


def is_word(node: Node | None, *words: str) -> bool:
    """Whether ``node`` is one of ``words`` (upper case)."""
    return isinstance(node, Token) and node.kind == IDENT and node.upper in words


def is_op(node: Node | None, *ops: str) -> bool:
    return isinstance(node, Token) and node.kind == OP and node.text in ops


def is_group(node: Node | None, open_: str = "(") -> bool:
    return isinstance(node, Group) and node.open == open_


def is_name(node: Node | None) -> bool:
    """Whether ``node`` can be an identifier: a quoted one or a non-reserved word."""
    return isinstance(node, Token) and (
        node.kind == QIDENT or (node.kind == IDENT and node.upper not in RESERVED)
    )


def text_of(node: Node | None) -> str:
    """The text of a token ("" for a group or nothing)."""
    return node.text if isinstance(node, Token) else ""


def word_of(node: Node | None) -> str:
    """The upper-cased text of a word ("" for anything else)."""
    return node.upper if isinstance(node, Token) else ""


def split(nodes: Sequence[Node], separator: str = ",") -> list[list[Node]]:
    """Split at top-level separators (an empty input gives no parts)."""
    if not nodes:
        return []
    parts: list[list[Node]] = [[]]
    angles = 0  # inside the <...> of STRUCT<...> or ARRAY<...>, whose commas do not split
    previous: Node | None = None
    for node in nodes:
        if is_op(node, "<") and (angles or is_word(previous, "STRUCT", "ARRAY")):
            angles += 1
        elif angles and is_op(node, ">"):
            angles -= 1
        elif angles and is_op(node, ">>"):
            angles = max(angles - 2, 0)
        if is_op(node, separator) and not angles:
            parts.append([])
        else:
            parts[-1].append(node)
        previous = node
    return parts


def find_word(nodes: Sequence[Node], *words: str, start: int = 0) -> int:
    """Index of the first top-level node that is one of ``words``, or -1."""
    for i in range(start, len(nodes)):
        if is_word(nodes[i], *words):
            return i
    return -1


def position(nodes: Sequence[Node], default: int = 0) -> int:
    """Source position of the first node."""
    if not nodes:
        return default
    return nodes[0].pos


class Cursor:
    """Sequential reading of a node list, for the recursive-descent DDL parser."""

    def __init__(self, sql: str, nodes: Sequence[Node]) -> None:
        self.sql = sql
        self.nodes = nodes
        self.i = 0

    def peek(self, ahead: int = 0) -> Node | None:
        j = self.i + ahead
        return self.nodes[j] if j < len(self.nodes) else None

    def at_end(self) -> bool:
        return self.i >= len(self.nodes)

    def error(self, what: str) -> EngineError:
        node = self.peek()
        if node is None:
            return syntax_error(self.sql, len(self.sql), f"{what}, but the statement ended")
        found = node.text if isinstance(node, Token) else node.open
        return syntax_error(self.sql, node.pos, f"{what}, found {found!r}")

    def take(self) -> Node:
        node = self.peek()
        if node is None:
            raise self.error("Unexpected end of statement")
        self.i += 1
        return node

    def accept(self, *words: str) -> bool:
        """Consume the next node if it is the word sequence ``words``."""
        for k, word in enumerate(words):
            if not is_word(self.peek(k), word):
                return False
        self.i += len(words)
        return True

    def expect(self, *words: str) -> None:
        if not self.accept(*words):
            raise self.error(f"Expected {' '.join(words)}")

    def accept_op(self, op: str) -> bool:
        if is_op(self.peek(), op):
            self.i += 1
            return True
        return False

    def expect_op(self, op: str) -> None:
        if not self.accept_op(op):
            raise self.error(f"Expected {op!r}")

    def name(self, what: str = "a name") -> str:
        """An identifier: quoted, or a word GoogleSQL does not reserve."""
        node = self.peek()
        if not is_name(node):
            raise self.error(f"Expected {what}")
        assert isinstance(node, Token)
        self.i += 1
        return node.text

    def group(self, open_: str = "(") -> Group:
        node = self.peek()
        if not isinstance(node, Group) or node.open != open_:
            raise self.error(f"Expected {open_!r}")
        self.i += 1
        return node

    def rest(self) -> list[Node]:
        nodes = list(self.nodes[self.i :])
        self.i = len(self.nodes)
        return nodes


# --- SQLite output -----------------------------------------------------------------------------


def quote_ident(name: str) -> str:
    """A SQLite quoted identifier."""
    return '"' + name.replace('"', '""') + '"'


def sql_literal(value: object) -> str:
    """A SQLite literal for a storage value."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "'NaN'"
        if value in (float("inf"), float("-inf")):
            return "9e999" if value > 0 else "-9e999"
        return repr(value)
    if isinstance(value, bytes):
        return "X'" + value.hex() + "'"
    text = str(value)
    if "\x00" in text:  # SQLite statements cannot contain NUL characters
        return "CAST(X'" + text.encode("utf-8").hex() + "' AS TEXT)"
    return "'" + text.replace("'", "''") + "'"
