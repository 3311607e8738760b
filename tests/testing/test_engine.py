"""Tests of LocalSpanner's data engine, called directly (no gRPC).

Parameters are encoded and results decoded with the official client's own helpers, so values
round-trip exactly as they do between ``google-cloud-spanner`` and LocalSpanner.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from google.api_core import datetime_helpers
from google.cloud.spanner_v1 import param_types as pt
from google.cloud.spanner_v1._helpers import _make_list_value_pbs, _make_value_pb, _parse_value_pb
from google.cloud.spanner_v1.data_types import JsonObject
from google.cloud.spanner_v1.keyset import KeyRange, KeySet
from google.cloud.spanner_v1.types import keys as keys_types
from google.cloud.spanner_v1.types import mutation as mutation_types
from google.cloud.spanner_v1.types import type as type_types
from google.protobuf import struct_pb2
from grpc import StatusCode as Code
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spanpool.testing.sql import engine as _engine
from spanpool.testing.sql.engine import Catalog, EngineError

ACCOUNTS = (
    "CREATE TABLE Accounts (Id INT64 NOT NULL, Name STRING(MAX), Balance INT64 NOT NULL, "
    "Tags ARRAY<STRING(MAX)>, Updated TIMESTAMP OPTIONS (allow_commit_timestamp=true)) "
    "PRIMARY KEY (Id)"
)
ALL_TYPES = (
    "CREATE TABLE AllTypes (Id INT64 NOT NULL, I INT64, F FLOAT64, B BOOL, S STRING(MAX), "
    "Y BYTES(MAX), D DATE, T TIMESTAMP, N NUMERIC, J JSON, AI ARRAY<INT64>, AF ARRAY<FLOAT64>, "
    "AB ARRAY<BOOL>, AS_ ARRAY<STRING(MAX)>, AY ARRAY<BYTES(MAX)>, AD ARRAY<DATE>, "
    "ATS ARRAY<TIMESTAMP>, AN ARRAY<NUMERIC>, AJ ARRAY<JSON>) PRIMARY KEY (Id)"
)

# Column name -> (param type, a sample value as the client takes it)
SAMPLES: dict[str, tuple[Any, Any]] = {
    "I": (pt.INT64, -(2**63)),
    "F": (pt.FLOAT64, 3.25),
    "B": (pt.BOOL, True),
    "S": (pt.STRING, "héllo 'wörld'"),
    "Y": (pt.BYTES, base64.b64encode(b"\x00\xffbytes")),
    "D": (pt.DATE, datetime.date(2024, 2, 29)),
    "T": (
        pt.TIMESTAMP,
        datetime_helpers.DatetimeWithNanoseconds(
            2024, 5, 6, 7, 8, 9, nanosecond=123456789, tzinfo=datetime.timezone.utc
        ),
    ),
    "N": (pt.NUMERIC, decimal.Decimal("-12345678901234567890.123456789")),
    "J": (pt.JSON, JsonObject({"b": [1, 2, None], "a": "x"})),
    "AI": (pt.Array(pt.INT64), [1, None, 2**63 - 1]),
    "AF": (pt.Array(pt.FLOAT64), [1.5, None, -0.25]),
    "AB": (pt.Array(pt.BOOL), [True, None, False]),
    "AS_": (pt.Array(pt.STRING), ["a", None, ""]),
    "AY": (pt.Array(pt.BYTES), [base64.b64encode(b"\x01\x02"), None]),
    "AD": (pt.Array(pt.DATE), [datetime.date(2000, 1, 1), None]),
    "ATS": (
        pt.Array(pt.TIMESTAMP),
        [datetime.datetime(2020, 1, 2, 3, 4, 5, 600000, tzinfo=datetime.timezone.utc), None],
    ),
    "AN": (pt.Array(pt.NUMERIC), [decimal.Decimal("1.5"), None]),
    "AJ": (pt.Array(pt.JSON), [JsonObject({"k": 1}), None]),
}


def raw_type(type_: Any) -> Any:
    return type_types.Type.pb(type_)


class Db:
    """One database for a test: a writer connection and its current catalog."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = _engine.connect(str(path))
        self.catalog: Catalog = _engine.load_catalog(self.conn)

    def ddl(self, *statements: str) -> Catalog:
        self.catalog = _engine.apply_ddl(self.conn, self.catalog, statements)
        return self.catalog

    def result(
        self, sql: str, params: dict[str, Any] | None = None, types: dict[str, Any] | None = None
    ) -> _engine.Result:
        params_pb = None
        if params is not None:
            params_pb = struct_pb2.Struct(
                fields={k: _make_value_pb(value) for k, value in params.items()}
            )
        param_types = {k: raw_type(t) for k, t in (types or {}).items()}
        return _engine.execute_sql(self.conn, self.catalog, sql, params_pb, param_types)

    def query(
        self, sql: str, params: dict[str, Any] | None = None, types: dict[str, Any] | None = None
    ) -> list[list[Any]]:
        return decode(self.result(sql, params, types))

    def dml(
        self, sql: str, params: dict[str, Any] | None = None, types: dict[str, Any] | None = None
    ) -> _engine.Result:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            result = self.result(sql, params, types)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        return result

    def mutate(
        self, *mutations: Any, commit_timestamp: str = "2024-01-02T03:04:05.123456789Z"
    ) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            _engine.apply_mutations(self.conn, self.catalog, mutations, commit_timestamp)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def read(self, *args: Any, **kw: Any) -> list[list[Any]]:
        """The decoded rows of ``read_result`` with these arguments."""
        return decode(self.read_result(*args, **kw))

    def read_result(
        self,
        table: str,
        columns: Sequence[str],
        key_set: KeySet,
        *,
        index: str = "",
        limit: int = 0,
    ) -> _engine.Result:
        key_set_pb = keys_types.KeySet.pb(key_set._to_pb())
        return _engine.read(self.conn, self.catalog, table, index, list(columns), key_set_pb, limit)


def decode(result: _engine.Result) -> list[list[Any]]:
    return [
        [
            _parse_value_pb(value, field.type_, field.name)
            for value, field in zip(row, result.fields, strict=True)
        ]
        for row in result.rows
    ]


def write(kind: str, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Any:
    write_pb = mutation_types.Mutation.Write(
        table=table, columns=list(columns), values=_make_list_value_pbs(rows)
    )
    return mutation_types.Mutation.pb(mutation_types.Mutation(**{kind: write_pb}))


def delete(table: str, key_set: KeySet) -> Any:
    return mutation_types.Mutation.pb(
        mutation_types.Mutation(
            delete=mutation_types.Mutation.Delete(table=table, key_set=key_set._to_pb())
        )
    )


def type_names(result: _engine.Result) -> list[tuple[str, str]]:
    names = []
    for field in result.fields:
        code = type_types.TypeCode(field.type_.code).name
        if code == "ARRAY":
            code += "<" + type_types.TypeCode(field.type_.array_element_type.code).name + ">"
        names.append((field.name, code))
    return names


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Db]:
    database = Db(tmp_path / "db.sqlite")
    database.ddl(ACCOUNTS)
    yield database
    database.conn.close()


@pytest.fixture
def accounts(db: Db) -> Db:
    db.mutate(
        write(
            "insert",
            "Accounts",
            ["Id", "Name", "Balance", "Tags"],
            [[1, "alice", 100, ["a", "b"]], [2, "bob", 50, []], [3, None, 0, None]],
        )
    )
    return db


def expect_error(code: Code, fragment: str = "") -> Any:
    class Check:
        def __enter__(self) -> None:
            return None

        def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
            assert isinstance(exc, EngineError), f"expected EngineError, got {exc!r}"
            assert exc.code == code, (exc.code, exc.message)
            assert fragment in exc.message, exc.message
            return True

    return Check()


def each_fails(run: Callable[[Any], Any], cases: Sequence[tuple[Code, str, Any]]) -> None:
    """``run(statement)`` fails with ``code`` and a message holding ``fragment``, for every
    ``(code, fragment, statement)`` of ``cases``."""
    for code, fragment, statement in cases:
        with expect_error(code, fragment):
            run(statement)


# --- DDL ---------------------------------------------------------------------------------------


def test_create_table_describes_columns(db: Db) -> None:
    table = db.catalog.table("accounts")
    assert table.name == "Accounts"
    assert [c.name for c in table.columns] == ["Id", "Name", "Balance", "Tags", "Updated"]
    assert table.primary_key == ["Id"]
    assert [c.nullable for c in table.columns] == [False, True, False, True, True]
    assert table.column("Updated").allow_commit_timestamp
    assert not table.column("Name").allow_commit_timestamp
    assert type_types.TypeCode(table.column("Tags").type.array_element_type.code).name == "STRING"
    assert db.catalog.statements == [ACCOUNTS]


def test_unknown_table_is_not_found(db: Db) -> None:
    with expect_error(Code.NOT_FOUND, "Table not found: Nope"):
        db.catalog.table("Nope")


def test_catalog_persists_across_connections(db: Db) -> None:
    db.ddl("CREATE INDEX AccountsByName ON Accounts (Name DESC) STORING (Balance)")
    db.ddl("ALTER TABLE Accounts ADD COLUMN Note STRING(100)")
    other = _engine.connect(str(db.path))
    catalog = _engine.load_catalog(other)
    assert catalog.statements == db.catalog.statements
    assert len(catalog.statements) == 3
    assert [c.name for c in catalog.table("Accounts").columns][-1] == "Note"
    index = catalog.index("Accounts", "AccountsByName")
    assert index.columns == ["Name"] and index.descending == [True]
    assert index.storing == ["Balance"]
    other.close()


def test_new_file_has_empty_catalog(tmp_path: Path) -> None:
    conn = _engine.connect(str(tmp_path / "new.sqlite"))
    catalog = _engine.load_catalog(conn)
    assert catalog.statements == [] and catalog.tables == []


def test_drop_and_alter(db: Db) -> None:
    db.ddl(
        "CREATE TABLE Extra (K STRING(MAX) NOT NULL, V BYTES(MAX)) PRIMARY KEY (K)",
        "CREATE UNIQUE INDEX ExtraByV ON Extra (V)",
    )
    with expect_error(Code.FAILED_PRECONDITION, "ExtraByV"):
        db.ddl("DROP TABLE Extra")
    db.ddl("DROP INDEX ExtraByV", "DROP TABLE Extra")
    assert db.catalog.find_table("Extra") is None
    db.ddl("ALTER TABLE Accounts ADD COLUMN Flag BOOL", "ALTER TABLE Accounts DROP COLUMN Name")
    names = [c.name for c in db.catalog.table("Accounts").columns]
    assert names == ["Id", "Balance", "Tags", "Updated", "Flag"]
    db.dml("INSERT INTO Accounts (Id, Balance, Flag) VALUES (9, 1, TRUE)")
    assert db.query("SELECT Flag FROM Accounts WHERE Id = 9") == [[True]]
    with expect_error(Code.FAILED_PRECONDITION, "key column"):
        db.ddl("ALTER TABLE Accounts DROP COLUMN Id")
    with expect_error(Code.FAILED_PRECONDITION, "NOT NULL"):
        db.ddl("ALTER TABLE Accounts ADD COLUMN Required INT64 NOT NULL")


def test_ddl_errors(db: Db) -> None:
    each_fails(
        db.ddl,
        [
            (Code.FAILED_PRECONDITION, "Duplicate name", ACCOUNTS),
            (
                Code.UNIMPLEMENTED,
                "CREATE SEARCH INDEX",
                "CREATE SEARCH INDEX S ON Accounts(Tokens)",
            ),
            (
                Code.INVALID_ARGUMENT,
                "needs a distinct name",
                "CREATE VIEW V SQL SECURITY INVOKER AS SELECT 1",
            ),
            (Code.INVALID_ARGUMENT, "", "CREATE TABLE ("),
            (
                Code.INVALID_ARGUMENT,
                "Unknown column type",
                "CREATE TABLE Bad (Id INT32) PRIMARY KEY (Id)",
            ),
            (Code.NOT_FOUND, "Table not found", "DROP TABLE Missing"),
            (Code.INVALID_ARGUMENT, "", "SELECT 1"),
        ],
    )
    db.ddl(
        "DROP TABLE IF EXISTS Missing",
        "CREATE TABLE IF NOT EXISTS Accounts (X INT64) PRIMARY KEY (X)",
    )
    assert db.catalog.table("Accounts").columns[0].name == "Id"


def test_ddl_is_atomic(db: Db) -> None:
    before = db.catalog
    with expect_error(Code.FAILED_PRECONDITION):
        db.ddl("CREATE TABLE Fresh (Id INT64) PRIMARY KEY (Id)", ACCOUNTS)
    assert db.catalog is before
    assert before.find_table("Fresh") is None
    tables = db.conn.execute("SELECT name FROM sqlite_master WHERE name = 'Fresh'").fetchall()
    assert tables == []
    assert _engine.load_catalog(db.conn).statements == [ACCOUNTS]


def test_unique_index_on_duplicate_data_fails(accounts: Db) -> None:
    accounts.dml("UPDATE Accounts SET Name = 'same' WHERE Id IN (1, 2)")
    with expect_error(Code.FAILED_PRECONDITION):
        accounts.ddl("CREATE UNIQUE INDEX ByName ON Accounts (Name)")
    assert accounts.catalog.find_index("ByName") is None


def test_interleaved_tables(accounts: Db) -> None:
    accounts.ddl(
        "CREATE TABLE Cards (Id INT64 NOT NULL, CardId INT64 NOT NULL, Label STRING(MAX)) "
        "PRIMARY KEY (Id, CardId), INTERLEAVE IN PARENT Accounts ON DELETE CASCADE"
    )
    with expect_error(Code.FAILED_PRECONDITION, "primary key"):
        accounts.ddl(
            "CREATE TABLE Bad (Other INT64 NOT NULL) PRIMARY KEY (Other), "
            "INTERLEAVE IN PARENT Accounts"
        )
    accounts.mutate(write("insert", "Cards", ["Id", "CardId", "Label"], [[1, 1, "x"], [1, 2, "y"]]))
    with expect_error(Code.NOT_FOUND, "Parent row"):
        accounts.mutate(write("insert", "Cards", ["Id", "CardId"], [[42, 1]]))
    with expect_error(Code.FAILED_PRECONDITION, "interleaved"):
        accounts.ddl("DROP TABLE Accounts")
    accounts.mutate(delete("Accounts", KeySet(keys=[[1]])))
    assert accounts.query("SELECT COUNT(*) FROM Cards") == [[0]]


# --- queries -----------------------------------------------------------------------------------


def test_select_one(db: Db) -> None:
    result = db.result("SELECT 1")
    assert type_names(result) == [("", "INT64")]
    assert decode(result) == [[1]]
    assert result.row_count is None


def test_select_named_literals(db: Db) -> None:
    result = db.result("SELECT 1 AS x, 'a' AS y, 2.5 z, TRUE AS t, NULL AS n, b'\\x01' AS by")
    assert type_names(result) == [
        ("x", "INT64"),
        ("y", "STRING"),
        ("z", "FLOAT64"),
        ("t", "BOOL"),
        ("n", "INT64"),
        ("by", "BYTES"),
    ]
    assert decode(result) == [[1, "a", 2.5, True, None, base64.b64encode(b"\x01")]]


def test_column_types_from_catalog_even_without_rows(db: Db) -> None:
    result = db.result("SELECT * FROM Accounts")
    assert result.rows == []
    assert type_names(result) == [
        ("Id", "INT64"),
        ("Name", "STRING"),
        ("Balance", "INT64"),
        ("Tags", "ARRAY<STRING>"),
        ("Updated", "TIMESTAMP"),
    ]
    assert type_names(db.result("SELECT a.Name, Balance AS b FROM Accounts AS a")) == [
        ("Name", "STRING"),
        ("b", "INT64"),
    ]


def test_aggregates(accounts: Db) -> None:
    result = accounts.result(
        "SELECT SUM(Balance), COUNT(*), MIN(Name), MAX(Balance), AVG(Balance), COUNT(Name) "
        "FROM Accounts"
    )
    assert [t for _, t in type_names(result)] == [
        "INT64",
        "INT64",
        "STRING",
        "INT64",
        "FLOAT64",
        "INT64",
    ]
    assert decode(result) == [[150, 3, "alice", 100, 50.0, 2]]
    assert accounts.query("SELECT SUM(Balance) FROM Accounts WHERE Id > 100") == [[None]]


def test_expressions_and_functions(accounts: Db) -> None:
    rows = accounts.query(
        "SELECT CONCAT(Name, '!'), STARTS_WITH(Name, 'al'), ENDS_WITH(Name, 'ob'), "
        "IFNULL(Name, 'none'), COALESCE(NULL, Name, 'x'), UPPER(Name), LENGTH(Name), "
        "Balance / 3, DIV(Balance, 3), MOD(Balance, 7), Balance * 2 + 1, Balance > 10 "
        "FROM Accounts ORDER BY Id"
    )
    assert rows[0] == [
        "alice!",
        True,
        False,
        "alice",
        "alice",
        "ALICE",
        5,
        100 / 3,
        33,
        2,
        201,
        True,
    ]
    assert rows[1][:3] == ["bob!", False, True]
    assert rows[2][:5] == [None, None, None, "none", "x"]


def test_casts(db: Db) -> None:
    result = db.result(
        "SELECT CAST('12' AS INT64), CAST(1.5 AS INT64), CAST(7 AS STRING), CAST(TRUE AS STRING), "
        "CAST('2.5' AS FLOAT64), CAST('true' AS BOOL), CAST('abc' AS BYTES), "
        "CAST('2024-01-02' AS DATE), SAFE_CAST('x' AS INT64), CAST(2.0 AS STRING)"
    )
    assert [t for _, t in type_names(result)] == [
        "INT64",
        "INT64",
        "STRING",
        "STRING",
        "FLOAT64",
        "BOOL",
        "BYTES",
        "DATE",
        "INT64",
        "STRING",
    ]
    assert decode(result) == [
        [
            12,
            2,
            "7",
            "true",
            2.5,
            True,
            base64.b64encode(b"abc"),
            datetime.date(2024, 1, 2),
            None,
            "2",
        ]
    ]
    with expect_error(Code.INVALID_ARGUMENT, "int64"):
        db.query("SELECT CAST('x' AS INT64)")


def test_params_of_every_type_round_trip(db: Db) -> None:
    names = list(SAMPLES)
    sql = "SELECT " + ", ".join(f"@p{name} AS {name}" for name in names)
    params = {f"p{name}": value for name, (_, value) in SAMPLES.items()}
    types = {f"p{name}": type_ for name, (type_, _) in SAMPLES.items()}
    result = db.result(sql, params, types)
    assert [name for name, _ in type_names(result)] == names
    (row,) = decode(result)
    assert row == [value for _, value in SAMPLES.values()]


def test_values_of_every_type_round_trip_through_a_table(db: Db) -> None:
    db.ddl(ALL_TYPES)
    names = list(SAMPLES)
    columns = ", ".join(names)
    values = ", ".join(f"@{name}" for name in names)
    params = {name: value for name, (_, value) in SAMPLES.items()}
    types = {name: type_ for name, (type_, _) in SAMPLES.items()}
    result = db.dml(f"INSERT INTO AllTypes (Id, {columns}) VALUES (1, {values})", params, types)
    assert result.row_count == 1
    db.mutate(write("insert", "AllTypes", ["Id", *names], [[2, *params.values()]]))
    db.mutate(write("insert", "AllTypes", ["Id"], [[3]]))
    rows = db.query(f"SELECT {columns} FROM AllTypes ORDER BY Id")
    assert rows[0] == list(params.values())
    assert rows[1] == list(params.values())
    assert rows[2] == [None] * len(names)
    read = db.read("AllTypes", names, KeySet(keys=[[1], [3]]))
    assert read == [rows[0], rows[2]]


def test_null_params_of_every_type(db: Db) -> None:
    sql = "SELECT " + ", ".join(f"@p{name}" for name in SAMPLES)
    params = {f"p{name}": None for name in SAMPLES}
    types = {f"p{name}": type_ for name, (type_, _) in SAMPLES.items()}
    result = db.result(sql, params, types)
    assert decode(result) == [[None] * len(SAMPLES)]
    assert result.fields[3].type_.code == type_types.TypeCode.STRING


def test_special_floats(db: Db) -> None:
    db.ddl("CREATE TABLE Floats (Id INT64 NOT NULL, F FLOAT64, A ARRAY<FLOAT64>) PRIMARY KEY (Id)")
    specials = [math.inf, -math.inf, math.nan, -0.0, 1e308]
    db.mutate(
        write(
            "insert", "Floats", ["Id", "F", "A"], [[i, x, specials] for i, x in enumerate(specials)]
        )
    )
    rows = db.query("SELECT F, A FROM Floats ORDER BY Id")
    values = [row[0] for row in rows]
    assert values[0] == math.inf and values[1] == -math.inf and math.isnan(values[2])
    assert values[3] == 0.0 and values[4] == 1e308
    array = rows[0][1]
    assert array[:2] == [math.inf, -math.inf] and math.isnan(array[2]) and array[4] == 1e308
    (echo,) = db.query("SELECT @f", {"f": math.nan}, {"f": pt.FLOAT64})
    assert math.isnan(echo[0])


def test_untyped_params(accounts: Db) -> None:
    assert accounts.query("SELECT Name FROM Accounts WHERE Id = @id", {"id": 2}) == [["bob"]]
    assert accounts.query("SELECT @s", {"s": "text"}) == [["text"]]


def test_missing_param(db: Db) -> None:
    with expect_error(Code.INVALID_ARGUMENT, "No parameter found for binding: id"):
        db.query("SELECT @id")


def test_unnest(accounts: Db) -> None:
    ids = {"ids": [1, 3, 99]}
    types = {"ids": pt.Array(pt.INT64)}
    rows = accounts.query(
        "SELECT Id FROM Accounts WHERE Id IN UNNEST(@ids) ORDER BY Id", ids, types
    )
    assert rows == [[1], [3]]
    rows = accounts.query("SELECT Id FROM Accounts WHERE Id NOT IN UNNEST(@ids)", ids, types)
    assert rows == [[2]]
    result = accounts.result(
        "SELECT x, off FROM UNNEST(@words) AS x WITH OFFSET AS off ORDER BY off",
        {"words": ["b", "a", None]},
        {"words": pt.Array(pt.STRING)},
    )
    assert type_names(result) == [("x", "STRING"), ("off", "INT64")]
    assert decode(result) == [["b", 0], ["a", 1], [None, 2]]
    blobs = [base64.b64encode(b"\x00"), base64.b64encode(b"\x01")]
    rows = accounts.query(
        "SELECT b FROM UNNEST(@b) AS b WHERE b IN UNNEST(@b)",
        {"b": blobs},
        {"b": pt.Array(pt.BYTES)},
    )
    assert rows == [[blobs[0]], [blobs[1]]]
    assert accounts.query("SELECT 'b' IN UNNEST(Tags) FROM Accounts ORDER BY Id") == [
        [True],
        [False],
        [False],  # UNNEST(NULL) is empty
    ]
    assert accounts.query("SELECT ARRAY_LENGTH(Tags) FROM Accounts WHERE Id = 1") == [[2]]
    assert accounts.query("SELECT x FROM UNNEST([3, 1, 2]) AS x ORDER BY x") == [[1], [2], [3]]


def test_where_order_group_limit_offset(accounts: Db) -> None:
    accounts.dml("INSERT INTO Accounts (Id, Name, Balance) VALUES (4, 'alice', 7)")
    rows = accounts.query(
        "SELECT Name, COUNT(*) AS n, SUM(Balance) AS total FROM Accounts WHERE Name IS NOT NULL "
        "GROUP BY Name ORDER BY total DESC LIMIT @limit OFFSET @offset",
        {"limit": 5, "offset": 0},
        {"limit": pt.INT64, "offset": pt.INT64},
    )
    assert rows == [["alice", 2, 107], ["bob", 1, 50]]
    rows = accounts.query(
        "SELECT Id FROM Accounts ORDER BY Id LIMIT @n OFFSET @o",
        {"n": 2, "o": 1},
        {"n": pt.INT64, "o": pt.INT64},
    )
    assert rows == [[2], [3]]
    assert accounts.query("SELECT Id FROM Accounts WHERE Name LIKE 'AL%'") == []


def test_joins_subqueries_and_set_operations(accounts: Db) -> None:
    accounts.ddl(
        "CREATE TABLE Owners (Name STRING(MAX) NOT NULL, City STRING(MAX)) PRIMARY KEY (Name)"
    )
    accounts.dml("INSERT INTO Owners (Name, City) VALUES ('alice', 'Paris'), ('bob', 'Oslo')")
    result = accounts.result(
        "SELECT a.Id, o.City FROM Accounts AS a JOIN Owners o ON a.Name = o.Name ORDER BY a.Id"
    )
    assert type_names(result) == [("Id", "INT64"), ("City", "STRING")]
    assert decode(result) == [[1, "Paris"], [2, "Oslo"]]
    rows = accounts.query(
        "SELECT a.Id, o.City FROM Accounts a LEFT OUTER JOIN Owners o USING (Name) ORDER BY 1"
    )
    assert rows == [[1, "Paris"], [2, "Oslo"], [3, None]]
    rows = accounts.query(
        "SELECT Id FROM Accounts WHERE Balance > (SELECT MIN(Balance) FROM Accounts) "
        "AND EXISTS (SELECT 1 FROM Owners WHERE Owners.Name = Accounts.Name) ORDER BY Id"
    )
    assert rows == [[1], [2]]
    rows = accounts.query(
        "WITH rich AS (SELECT Id, Balance FROM Accounts WHERE Balance >= 50) "
        "SELECT r.Id FROM rich AS r ORDER BY r.Id"
    )
    assert rows == [[1], [2]]
    result = accounts.result("SELECT Id FROM Accounts UNION ALL SELECT 10 ORDER BY 1 DESC")
    assert decode(result) == [[10], [3], [2], [1]]
    assert accounts.query("(SELECT 1) UNION DISTINCT (SELECT 1)") == [[1]]
    assert accounts.query("SELECT COUNT(*) FROM (SELECT Id FROM Accounts) AS t") == [[3]]


def test_backticks_comments_hints_and_strings(accounts: Db) -> None:
    rows = accounts.query(
        "@{USE_ADDITIONAL_PARALLELISM=TRUE} SELECT `Name` -- a comment\n"
        "FROM `Accounts`@{FORCE_INDEX=_BASE_TABLE} /* block */ WHERE `Id` = 1 # end"
    )
    assert rows == [["alice"]]
    assert accounts.query(r"""SELECT "it's", 'a\nb', r'\n', '''x'y'''""") == [
        ["it's", "a\nb", "\\n", "x'y"]
    ]


def test_time_functions(db: Db) -> None:
    result = db.result(
        "SELECT CURRENT_TIMESTAMP(), CURRENT_DATE(), TIMESTAMP '2024-01-01 00:00:00+00'"
    )
    assert [t for _, t in type_names(result)] == ["TIMESTAMP", "DATE", "TIMESTAMP"]
    now, today, fixed = decode(result)[0]
    assert abs((now - datetime.datetime.now(datetime.timezone.utc)).total_seconds()) < 60
    assert isinstance(today, datetime.date)
    assert fixed == datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)


def test_information_schema_answers_the_client(accounts: Db) -> None:
    sql = (
        "SELECT EXISTS(SELECT TABLE_NAME FROM INFORMATION_SCHEMA.TABLES "
        "WHERE TABLE_SCHEMA = '' AND TABLE_NAME = @table_id)"
    )
    assert accounts.query(sql, {"table_id": "Accounts"}, {"table_id": pt.STRING}) == [[True]]
    assert accounts.query(sql, {"table_id": "Nope"}, {"table_id": pt.STRING}) == [[False]]
    rows = accounts.query(
        "SELECT COLUMN_NAME, SPANNER_TYPE FROM INFORMATION_SCHEMA.COLUMNS "
        "WHERE TABLE_NAME = 'Accounts' ORDER BY ORDINAL_POSITION"
    )
    assert rows[0] == ["Id", "INT64"] and rows[3] == ["Tags", "ARRAY<STRING(MAX)>"]


# --- DML ---------------------------------------------------------------------------------------


def test_dml_row_counts(accounts: Db) -> None:
    result = accounts.dml(
        "UPDATE Accounts SET Balance = Balance + @d WHERE Balance < 100", {"d": 5}, {"d": pt.INT64}
    )
    assert result.row_count == 2 and result.rows == []
    assert accounts.dml("UPDATE Accounts SET Name = 'x' WHERE Id = 42").row_count == 0
    assert accounts.dml("DELETE FROM Accounts WHERE Id = 3").row_count == 1
    assert accounts.dml("DELETE Accounts WHERE TRUE").row_count == 2
    assert accounts.dml("INSERT Accounts (Id, Balance) VALUES (1, 1), (2, 2)").row_count == 2


def test_then_return(accounts: Db) -> None:
    result = accounts.dml(
        "UPDATE Accounts AS a SET Balance = a.Balance * 2 WHERE a.Id <= 2 "
        "THEN RETURN a.Id, Balance AS doubled"
    )
    assert result.row_count == 2
    assert type_names(result) == [("Id", "INT64"), ("doubled", "INT64")]
    assert sorted(decode(result)) == [[1, 200], [2, 100]]
    result = accounts.dml(
        "INSERT INTO Accounts (Id, Name, Balance) VALUES (7, 'g', 1) THEN RETURN WITH ACTION *"
    )
    assert [n for n, _ in type_names(result)] == [
        "Id",
        "Name",
        "Balance",
        "Tags",
        "Updated",
        "ACTION",
    ]
    assert decode(result) == [[7, "g", 1, None, None, "INSERT"]]
    result = accounts.dml("DELETE FROM Accounts WHERE Id = 7 THEN RETURN Name")
    assert decode(result) == [["g"]] and result.row_count == 1


def test_insert_or_update_and_ignore(accounts: Db) -> None:
    accounts.dml(
        "INSERT OR UPDATE INTO Accounts (Id, Name, Balance) VALUES (1, 'new', 1), (8, 'h', 2)"
    )
    assert accounts.query("SELECT Id, Name, Tags FROM Accounts WHERE Id IN (1, 8) ORDER BY Id") == [
        [1, "new", ["a", "b"]],
        [8, "h", None],
    ]
    result = accounts.dml("INSERT OR IGNORE INTO Accounts (Id, Balance) VALUES (1, 5), (9, 5)")
    assert result.row_count == 1


def test_dml_timestamps_are_stored_canonically(accounts: Db) -> None:
    accounts.dml("UPDATE Accounts SET Updated = PENDING_COMMIT_TIMESTAMP() WHERE Id = 1")
    accounts.dml("UPDATE Accounts SET Updated = '2024-03-04T05:06:07Z' WHERE Id = 2")
    rows = accounts.query(
        "SELECT Id FROM Accounts WHERE Updated > @t ORDER BY Id",
        {"t": datetime.datetime(2024, 3, 4, 5, 6, 6, tzinfo=datetime.timezone.utc)},
        {"t": pt.TIMESTAMP},
    )
    assert rows == [[1], [2]]


def test_dml_errors(accounts: Db) -> None:
    each_fails(
        accounts.dml,
        [
            (Code.ALREADY_EXISTS, "", "INSERT INTO Accounts (Id, Balance) VALUES (1, 0)"),
            (Code.FAILED_PRECONDITION, "Balance", "INSERT INTO Accounts (Id) VALUES (5)"),
            (Code.INVALID_ARGUMENT, "WHERE", "UPDATE Accounts SET Balance = 0"),
            (Code.INVALID_ARGUMENT, "WHERE", "DELETE FROM Accounts"),
            (Code.INVALID_ARGUMENT, "non-writable", "UPDATE Accounts SET Id = 5 WHERE Id = 1"),
            (
                Code.INVALID_ARGUMENT,
                "Column not found",
                "INSERT INTO Accounts (Id, Nope) VALUES (1, 2)",
            ),
            (Code.INVALID_ARGUMENT, "Table not found", "DELETE FROM Nope WHERE TRUE"),
        ],
    )
    # a failed statement changes nothing
    with expect_error(Code.ALREADY_EXISTS):
        accounts.dml("INSERT INTO Accounts (Id, Balance) VALUES (20, 0), (1, 0)")
    assert accounts.query("SELECT COUNT(*) FROM Accounts") == [[3]]


# --- errors and statement kinds ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "code", "fragment"),
    [
        ("SELEC 1", Code.INVALID_ARGUMENT, "Syntax error"),
        ("SELECT FROM Accounts", Code.INVALID_ARGUMENT, ""),
        ("SELECT (1", Code.INVALID_ARGUMENT, "Syntax error"),
        ("SELECT 'abc", Code.INVALID_ARGUMENT, "Unclosed string"),
        ("SELECT * FROM Nope", Code.INVALID_ARGUMENT, "Table not found: Nope"),
        ("SELECT Nope FROM Accounts", Code.INVALID_ARGUMENT, "Nope"),
        ("SELECT NOPE(1)", Code.INVALID_ARGUMENT, "Function not found: NOPE"),
        ("SELECT AS STRUCT 1 AS a", Code.UNIMPLEMENTED, "STRUCT"),
        ("SELECT STRUCT(1 AS a)", Code.INVALID_ARGUMENT, "struct value"),
        ("SELECT * EXCEPT (Id) FROM Accounts", Code.UNIMPLEMENTED, "EXCEPT"),
        ("CREATE TABLE X (Id INT64) PRIMARY KEY (Id)", Code.INVALID_ARGUMENT, "DDL"),
        ("SELECT 1; SELECT 2", Code.INVALID_ARGUMENT, "one statement"),
        ("SELECT 99999999999999999999", Code.INVALID_ARGUMENT, "out of range"),
        ("", Code.INVALID_ARGUMENT, "empty"),
        ("SELECT @@version", Code.UNIMPLEMENTED, ""),
        ("SELECT 1 UNION SELECT 2", Code.INVALID_ARGUMENT, "ALL or DISTINCT"),
    ],
)
def test_bad_sql(db: Db, sql: str, code: Code, fragment: str) -> None:
    with expect_error(code, fragment):
        db.query(sql)


def test_statement_kind() -> None:
    assert _engine.statement_kind("SELECT 1") == "query"
    assert _engine.statement_kind("  -- c\n/* x */ (SELECT 1)") == "query"
    assert _engine.statement_kind("WITH a AS (SELECT 1) SELECT * FROM a") == "query"
    assert _engine.statement_kind("insert into T (a) values (1)") == "dml"
    assert (
        _engine.statement_kind("@{PDML_MAX_PARALLELISM=1} UPDATE T SET a = 1 WHERE TRUE") == "dml"
    )
    assert _engine.statement_kind("DELETE FROM T WHERE TRUE") == "dml"
    assert _engine.statement_kind("CREATE TABLE T (a INT64) PRIMARY KEY (a)") == "ddl"
    assert _engine.statement_kind("drop index I") == "ddl"


def test_translations_are_cached_per_catalog(db: Db) -> None:
    before = len(db.catalog.prepared)
    for _ in range(3):
        db.query("SELECT 1")
    assert len(db.catalog.prepared) == before + 1
    old = db.catalog
    db.ddl("CREATE TABLE Later (Id INT64) PRIMARY KEY (Id)")
    assert db.catalog is not old and len(db.catalog.prepared) == 0
    assert db.query("SELECT COUNT(*) FROM Later") == [[0]]


def test_only_engine_errors_escape(db: Db) -> None:
    weird = [
        "SELECT ?",
        "SELECT :a",
        "SELECT {",
        "SELECT 1 +",
        "SELECT CAST(1 AS ARRAY<INT64>)",
        "SELECT x'zz'",
        "SELECT 0xZZ",
        "UPDATE",
        "INSERT INTO",
        "SELECT \\",
        "SELECT '\\q'",
    ]
    for sql in weird:
        with pytest.raises(EngineError):
            db.query(sql)


# --- reads -------------------------------------------------------------------------------------


def test_read_by_keys_ranges_and_all(accounts: Db) -> None:
    columns = ["Id", "Name"]
    assert accounts.read("Accounts", columns, KeySet(keys=[[3], [1], [99]])) == [
        [1, "alice"],
        [3, None],
    ]
    assert accounts.read("Accounts", columns, KeySet(all_=True)) == [
        [1, "alice"],
        [2, "bob"],
        [3, None],
    ]
    assert accounts.read("Accounts", ["Id"], KeySet(ranges=[KeyRange(start_closed=[2])])) == [
        [2],
        [3],
    ]
    assert accounts.read(
        "Accounts", ["Id"], KeySet(ranges=[KeyRange(start_open=[1], end_open=[3])])
    ) == [[2]]
    assert accounts.read("Accounts", ["Id"], KeySet(ranges=[KeyRange(end_closed=[2])])) == [
        [1],
        [2],
    ]
    both = KeySet(keys=[[1]], ranges=[KeyRange(start_closed=[1], end_closed=[2])])
    assert accounts.read("Accounts", ["Id"], both) == [[1], [2]]
    assert accounts.read("Accounts", ["Id"], KeySet(all_=True), limit=2) == [[1], [2]]
    assert accounts.read("Accounts", ["Id"], KeySet()) == []


def test_read_types_are_exact_for_empty_results(db: Db) -> None:
    result = db.read_result("Accounts", ["Tags", "Updated", "Balance"], KeySet(all_=True))
    assert result.rows == []
    assert type_names(result) == [
        ("Tags", "ARRAY<STRING>"),
        ("Updated", "TIMESTAMP"),
        ("Balance", "INT64"),
    ]


def test_read_composite_keys_with_prefixes_and_descending(db: Db) -> None:
    db.ddl(
        "CREATE TABLE Events (Kind STRING(MAX) NOT NULL, Seq INT64 NOT NULL, V INT64) "
        "PRIMARY KEY (Kind, Seq DESC)"
    )
    rows = [["a", 1, 10], ["a", 2, 20], ["a", 3, 30], ["b", 1, 40]]
    db.mutate(write("insert", "Events", ["Kind", "Seq", "V"], rows))
    assert db.read("Events", ["V"], KeySet(all_=True)) == [[30], [20], [10], [40]]
    assert db.read(
        "Events", ["V"], KeySet(ranges=[KeyRange(start_closed=["a"], end_closed=["a"])])
    ) == [
        [30],
        [20],
        [10],
    ]
    # In descending order, start (3) comes before end (1).
    in_range = KeySet(ranges=[KeyRange(start_open=["a", 3], end_closed=["a", 1])])
    assert db.read("Events", ["V"], in_range) == [[20], [10]]
    assert db.read("Events", ["V"], KeySet(keys=[["b", 1], ["a", 2]])) == [[20], [40]]
    with expect_error(Code.INVALID_ARGUMENT, "key parts"):
        db.read("Events", ["V"], KeySet(keys=[["a"]]))


def test_read_by_index(accounts: Db) -> None:
    accounts.ddl("CREATE NULL_FILTERED INDEX ByBalance ON Accounts (Balance DESC, Name)")
    rows = accounts.read("Accounts", ["Id", "Balance"], KeySet(all_=True), index="ByBalance")
    assert rows == [[1, 100], [2, 50]]  # Id 3 has a NULL name, filtered out of the index
    rows = accounts.read("Accounts", ["Id"], KeySet(keys=[[50]]), index="ByBalance")
    assert rows == [[2]]
    rows = accounts.read(
        "Accounts",
        ["Id"],
        KeySet(ranges=[KeyRange(start_closed=[100], end_open=[50])]),
        index="ByBalance",
    )
    assert rows == [[1]]
    with expect_error(Code.NOT_FOUND, "Index not found"):
        accounts.read("Accounts", ["Id"], KeySet(all_=True), index="Nope")


def test_read_errors(accounts: Db) -> None:
    with expect_error(Code.NOT_FOUND, "Table not found"):
        accounts.read("Nope", ["Id"], KeySet(all_=True))
    with expect_error(Code.NOT_FOUND, "Column not found"):
        accounts.read("Accounts", ["Nope"], KeySet(all_=True))
    with expect_error(Code.INVALID_ARGUMENT, "Id"):
        accounts.read("Accounts", ["Id"], KeySet(keys=[["not a number"]]))


def test_read_many_keys(accounts: Db) -> None:
    rows = accounts.read("Accounts", ["Id"], KeySet(keys=[[i] for i in range(5000)]))
    assert rows == [[1], [2], [3]]


# --- mutations ---------------------------------------------------------------------------------


def test_insert_update_replace_delete(accounts: Db) -> None:
    accounts.mutate(
        write("update", "Accounts", ["Id", "Balance"], [[1, 111]]),
        write(
            "insert_or_update",
            "Accounts",
            ["Id", "Name", "Balance"],
            [[2, "bobby", 5], [4, "d", 4]],
        ),
        write("replace", "Accounts", ["Id", "Balance"], [[3, 33]]),
    )
    rows = accounts.query("SELECT Id, Name, Balance, Tags FROM Accounts ORDER BY Id")
    assert rows == [
        [1, "alice", 111, ["a", "b"]],
        [2, "bobby", 5, []],
        [3, None, 33, None],
        [4, "d", 4, None],
    ]
    accounts.mutate(write("replace", "Accounts", ["Id", "Balance"], [[1, 1]]))
    assert accounts.query("SELECT Name, Tags FROM Accounts WHERE Id = 1") == [[None, None]]
    accounts.mutate(
        delete("Accounts", KeySet(keys=[[1], [404]], ranges=[KeyRange(start_closed=[3])]))
    )
    assert accounts.query("SELECT Id FROM Accounts") == [[2]]
    accounts.mutate(delete("Accounts", KeySet(all_=True)))
    assert accounts.query("SELECT COUNT(*) FROM Accounts") == [[0]]


def test_insert_existing_row(accounts: Db) -> None:
    with expect_error(Code.ALREADY_EXISTS, "Row [2] in table Accounts already exists"):
        accounts.mutate(write("insert", "Accounts", ["Id", "Balance"], [[2, 0]]))


def test_update_missing_row(accounts: Db) -> None:
    with expect_error(Code.NOT_FOUND, "Row [9] in table Accounts"):
        accounts.mutate(write("update", "Accounts", ["Id", "Balance"], [[9, 0]]))


def test_mutation_errors(accounts: Db) -> None:
    each_fails(
        lambda row: accounts.mutate(write(*row)),
        [
            (
                Code.FAILED_PRECONDITION,
                "Balance",
                ("insert", "Accounts", ["Id", "Name"], [[9, "x"]]),
            ),
            (
                Code.FAILED_PRECONDITION,
                "Balance",
                ("insert", "Accounts", ["Id", "Balance"], [[9, None]]),
            ),
            (
                Code.FAILED_PRECONDITION,
                "Balance",
                ("insert_or_update", "Accounts", ["Id", "Name"], [[9, "x"]]),
            ),
            (Code.NOT_FOUND, "Table not found", ("insert", "Nope", ["Id"], [[1]])),
            (Code.NOT_FOUND, "Column not found", ("insert", "Accounts", ["Id", "Nope"], [[1, 1]])),
            # as Cloud Spanner
            (
                Code.FAILED_PRECONDITION,
                "Balance",
                ("insert", "Accounts", ["Id", "Balance"], [[9, "lots"]]),
            ),
            (Code.INVALID_ARGUMENT, "", ("insert", "Accounts", ["Id", "Balance"], [[9]])),
        ],
    )
    with expect_error(Code.FAILED_PRECONDITION, "allow_commit_timestamp"):
        accounts.ddl("CREATE TABLE Ts (Id INT64 NOT NULL, T TIMESTAMP) PRIMARY KEY (Id)")
        accounts.mutate(write("insert", "Ts", ["Id", "T"], [[1, "spanner.commit_timestamp()"]]))


def test_mutations_are_atomic(accounts: Db) -> None:
    accounts.conn.execute("BEGIN IMMEDIATE")
    accounts.conn.execute(
        "UPDATE Accounts SET Balance = 1 WHERE Id = 3"
    )  # earlier work of the transaction
    with expect_error(Code.ALREADY_EXISTS):
        _engine.apply_mutations(
            accounts.conn,
            accounts.catalog,
            [
                write("insert", "Accounts", ["Id", "Balance"], [[10, 10]]),
                write("update", "Accounts", ["Id", "Balance"], [[1, 0]]),
                write("insert", "Accounts", ["Id", "Balance"], [[11, 0], [2, 0]]),
            ],
            "2024-01-01T00:00:00.000000000Z",
        )
    assert accounts.conn.in_transaction
    accounts.conn.execute("COMMIT")
    rows = accounts.query("SELECT Id, Balance FROM Accounts ORDER BY Id")
    assert rows == [[1, 100], [2, 50], [3, 1]]


def test_commit_timestamp(accounts: Db) -> None:
    accounts.mutate(
        write("update", "Accounts", ["Id", "Updated"], [[1, "spanner.commit_timestamp()"]]),
        commit_timestamp="2025-06-07T08:09:10.123456789Z",
    )
    result = accounts.result("SELECT Updated FROM Accounts WHERE Id = 1")
    assert result.rows[0][0].string_value == "2025-06-07T08:09:10.123456789Z"
    (value,) = decode(result)[0]
    assert value.nanosecond == 123456789 and value.year == 2025


# --- properties --------------------------------------------------------------------------------

_floats = st.floats(allow_nan=False) | st.just(math.inf) | st.just(-math.inf)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    number=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    text=st.text(),
    data=st.binary(),
    real=_floats,
)
def test_values_round_trip_exactly(
    db: Db, number: int, text: str, data: bytes, real: float
) -> None:
    encoded = base64.b64encode(data)
    types = {"i": pt.INT64, "s": pt.STRING, "b": pt.BYTES, "f": pt.FLOAT64}
    params = {"i": number, "s": text, "b": encoded, "f": real}
    assert db.query("SELECT @i, @s, @b, @f", params, types) == [[number, text, encoded, real]]
    db.conn.execute("BEGIN IMMEDIATE")
    db.result("DELETE FROM Accounts WHERE TRUE")
    db.result(
        "INSERT INTO Accounts (Id, Name, Balance, Tags) VALUES (@i, @s, 0, [@s])", params, types
    )
    db.conn.execute("COMMIT")
    assert db.query("SELECT Id, Name, Tags FROM Accounts") == [[number, text, [text]]]
    assert db.read("Accounts", ["Name"], KeySet(keys=[[number]])) == [[text]]


def test_float_values_compare_in_sqlite(db: Db) -> None:
    db.ddl("CREATE TABLE R (Id INT64 NOT NULL, F FLOAT64) PRIMARY KEY (Id)")
    db.mutate(write("insert", "R", ["Id", "F"], [[1, 1.5], [2, -math.inf], [3, 1e-300]]))
    rows = db.query("SELECT Id FROM R WHERE F < @x ORDER BY F", {"x": 1.0}, {"x": pt.FLOAT64})
    assert rows == [[2], [3]]


def test_connections_share_data(db: Db) -> None:
    db.mutate(write("insert", "Accounts", ["Id", "Balance"], [[1, 2]]))
    reader = _engine.connect(str(db.path))
    assert decode(
        _engine.execute_sql(reader, db.catalog, "SELECT Balance FROM Accounts", None, {})
    ) == [[2]]
    reader.close()


def test_sqlite_level_invariants(db: Db) -> None:
    """NUMERIC columns order numerically, LIKE is case sensitive, WAL and foreign keys are on."""
    db.ddl("CREATE TABLE Nums (Id INT64 NOT NULL, N NUMERIC) PRIMARY KEY (Id)")
    values = [decimal.Decimal(x) for x in ("10", "9.5", "-1", "100.25")]
    db.mutate(write("insert", "Nums", ["Id", "N"], [[i, n] for i, n in enumerate(values)]))
    assert db.query("SELECT N FROM Nums ORDER BY N") == [[n] for n in sorted(values)]
    assert db.query("SELECT MAX(N) FROM Nums") == [[decimal.Decimal("100.25")]]
    assert db.conn.execute("PRAGMA foreign_keys").fetchone() == (1,)
    assert db.conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert db.query("SELECT 'abc' LIKE 'A%', 'abc' LIKE 'a%'") == [[False, True]]


def test_dml_checks_written_values(accounts: Db) -> None:
    each_fails(
        accounts.dml,
        [
            (Code.INVALID_ARGUMENT, "int64", "UPDATE Accounts SET Balance = 'lots' WHERE Id = 1"),
            (
                Code.INVALID_ARGUMENT,
                "INT64",
                "UPDATE Accounts SET Balance = Balance / 2 WHERE Id = 1",
            ),
            (
                Code.INVALID_ARGUMENT,
                "TIMESTAMP",
                "UPDATE Accounts SET Updated = 'yesterday' WHERE Id = 1",
            ),
            (Code.INVALID_ARGUMENT, "STRING", "UPDATE Accounts SET Name = 12 WHERE Id = 1"),
        ],
    )
    accounts.dml("UPDATE Accounts SET Balance = @b WHERE Id = @id", {"b": 7, "id": 1})  # untyped
    accounts.dml("UPDATE Accounts SET Tags = ['x', NULL] WHERE Id = 2")
    rows = accounts.query("SELECT Balance, Tags FROM Accounts WHERE Id IN (1, 2) ORDER BY Id")
    assert rows == [[7, ["a", "b"]], [50, ["x", None]]]


def test_int64_extremes_as_literals(db: Db) -> None:
    assert db.query("SELECT -9223372036854775808, 9223372036854775807") == [[-(2**63), 2**63 - 1]]


def test_parenthesized_expressions_and_queries(db: Db) -> None:
    result = db.result("SELECT ((1 + 2) * 3), (SELECT 4), ((SELECT 5)) + 1, (2) AS two")
    assert decode(result) == [[9, 4, 6, 2]]
    assert [t for _, t in type_names(result)] == ["INT64"] * 4
    assert db.query("((SELECT 1 AS a) UNION ALL (SELECT 2)) ORDER BY a DESC") == [[2], [1]]


def test_array_literals(db: Db) -> None:
    result = db.result("SELECT [1, 2], ARRAY<STRING>[], ARRAY<FLOAT64>[1, 2.5], ['a', NULL]")
    assert [t for _, t in type_names(result)] == [
        "ARRAY<INT64>",
        "ARRAY<STRING>",
        "ARRAY<FLOAT64>",
        "ARRAY<STRING>",
    ]
    assert decode(result) == [[[1, 2], [], [1.0, 2.5], ["a", None]]]


_bounds = st.tuples(
    st.sampled_from(["start_closed", "start_open"]),
    st.lists(st.integers(0, 3), max_size=2),
    st.sampled_from(["end_closed", "end_open"]),
    st.lists(st.integers(0, 3), max_size=2),
)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    keys=st.sets(st.tuples(st.integers(0, 3), st.integers(0, 3)), max_size=12),
    ranges=st.lists(_bounds, min_size=1, max_size=3),
    limit=st.integers(0, 5),
)
def test_range_reads_match_a_model(
    db: Db, keys: set[tuple[int, int]], ranges: list[Any], limit: int
) -> None:
    """Reads of key ranges on a (A ASC, B DESC) key return what Cloud Spanner's rules say."""
    if db.catalog.find_table("K") is None:
        db.ddl("CREATE TABLE K (A INT64 NOT NULL, B INT64 NOT NULL) PRIMARY KEY (A, B DESC)")
    db.mutate(delete("K", KeySet(all_=True)))
    if keys:
        db.mutate(write("insert", "K", ["A", "B"], [list(k) for k in keys]))

    def order(key: Sequence[int]) -> tuple[int, ...]:
        return tuple(x if i == 0 else -x for i, x in enumerate(key))

    def inside(key: tuple[int, int], bound: Any) -> bool:
        start_kind, start, end_kind, end = bound
        low = order(key[: len(start)])
        high = order(key[: len(end)])
        after_start = low > order(start) or (low == order(start) and start_kind == "start_closed")
        before_end = high < order(end) or (high == order(end) and end_kind == "end_closed")
        return after_start and before_end

    expected = sorted((k for k in keys if any(inside(k, b) for b in ranges)), key=order)
    if limit:
        expected = expected[:limit]
    key_set = keys_types.KeySet.pb()(
        ranges=[
            keys_types.KeyRange.pb()(
                **{
                    start_kind: _make_value_pb(start).list_value,
                    end_kind: _make_value_pb(end).list_value,
                }
            )
            for start_kind, start, end_kind, end in ranges
        ]
    )
    result = _engine.read(db.conn, db.catalog, "K", "", ["A", "B"], key_set, limit)
    assert [tuple(row) for row in decode(result)] == expected


def test_nullable_key_columns(db: Db) -> None:
    db.ddl("CREATE TABLE Pairs (A INT64 NOT NULL, B STRING(MAX), V INT64) PRIMARY KEY (A, B)")
    db.mutate(write("insert", "Pairs", ["A", "B", "V"], [[1, "x", 1], [1, "y", 2]]))
    db.mutate(write("insert", "Pairs", ["A", "V"], [[1, 3]]))  # B is NULL
    with expect_error(Code.ALREADY_EXISTS, "Row [1,NULL] in table Pairs"):
        db.mutate(write("insert", "Pairs", ["A", "V"], [[1, 4]]))
    with expect_error(Code.ALREADY_EXISTS):
        db.dml("INSERT INTO Pairs (A, V) VALUES (1, 9)")
    db.mutate(write("replace", "Pairs", ["A", "V"], [[1, 5]]))
    assert db.read("Pairs", ["B", "V"], KeySet(all_=True)) == [[None, 5], ["x", 1], ["y", 2]]
    assert db.read("Pairs", ["V"], KeySet(keys=[[1, None]])) == [[5]]


# -- structs, arrays of structs, generated columns ----------------------------------------------

RECORD = pt.Struct(
    [
        pt.StructField("name", pt.STRING),
        pt.StructField("count", pt.INT64),
        pt.StructField(
            "nested", pt.Struct([pt.StructField("h", pt.FLOAT64), pt.StructField("w", pt.FLOAT64)])
        ),
    ]
)


def test_struct_parameters_fields_nullness_and_equality(db: Db) -> None:
    sql = "SELECT @r.name, @r.count, @r.nested.w"
    assert db.query(sql, {"r": ("Ada", 3, (1.5, 2.5))}, {"r": RECORD}) == [["Ada", 3, 2.5]]
    assert db.query(sql, {"r": None}, {"r": RECORD}) == [[None, None, None]]
    assert db.query(sql, {"r": ("Ada", None, None)}, {"r": RECORD}) == [["Ada", None, None]]
    assert db.query("SELECT @r IS NULL", {"r": None}, {"r": RECORD}) == [[True]]
    assert db.query("SELECT @r IS NULL", {"r": ()}, {"r": pt.Struct([])}) == [[False]]
    pair = pt.Struct([pt.StructField("a", pt.INT64), pt.StructField("b", pt.STRING)])
    equal = 'SELECT @p = STRUCT<a INT64, b STRING>(1, "x"), @p = STRUCT<a INT64, b STRING>(2, "x")'
    assert db.query(equal, {"p": (1, "x")}, {"p": pair}) == [[True, False]]
    with expect_error(Code.INVALID_ARGUMENT, "Field name missing does not exist"):
        db.query("SELECT @r.missing", {"r": None}, {"r": RECORD})


def test_arrays_of_structs_as_parameters_and_results(db: Db) -> None:
    element = pt.Struct([pt.StructField("id", pt.INT64), pt.StructField("tag", pt.BYTES)])
    rows = [(1, base64.b64encode(b"a")), (2, None)]
    unnest = "SELECT a.id, a.tag FROM UNNEST(@xs) AS a ORDER BY a.id"
    assert db.query(unnest, {"xs": rows}, {"xs": pt.Array(element)}) == [
        [1, base64.b64encode(b"a")],
        [2, None],
    ]
    assert db.query(unnest, {"xs": None}, {"xs": pt.Array(element)}) == []
    anonymous = pt.Array(pt.Struct([pt.StructField("", pt.INT64), pt.StructField("", pt.STRING)]))
    renamed = "SELECT CAST(t AS STRUCT<n INT64, s STRING>).* FROM UNNEST(@xs) t"
    result = db.result(renamed, {"xs": [(7, "seven")]}, {"xs": anonymous})
    assert [f.name for f in result.fields] == ["n", "s"]
    assert decode(result) == [[7, "seven"]]
    structs = (
        "SELECT ARRAY(SELECT AS STRUCT C1, C2 FROM (SELECT 'b' AS C1, 2 AS C2 UNION ALL "
        "SELECT 'a', 1) ORDER BY C1)"
    )
    assert db.query(structs) == [[[["a", 1], ["b", 2]]]]
    assert db.query("SELECT ARRAY(SELECT AS STRUCT 1 AS x FROM (SELECT 1) WHERE FALSE)") == [[[]]]
    assert db.query("SELECT ARRAY(SELECT x FROM UNNEST([3, 1, 2]) AS x ORDER BY x)") == [
        [[1, 2, 3]]
    ]
    with expect_error(Code.INVALID_ARGUMENT, "struct value"):
        db.query("SELECT STRUCT(1 AS a)")


def test_arrays_of_infinities_keep_their_type(db: Db) -> None:
    (row,) = db.query('SELECT [CAST("-inf" AS FLOAT64), CAST("inf" AS FLOAT64), 1.5]')
    assert row == [[-math.inf, math.inf, 1.5]]


def test_generated_columns_are_computed_and_cannot_be_written(db: Db) -> None:
    db.ddl(
        "CREATE TABLE People (Id INT64 NOT NULL, First STRING(MAX), Last STRING(MAX), "
        'FullName STRING(MAX) AS (ARRAY_TO_STRING([First, Last], " ")) STORED,) PRIMARY KEY (Id)'
    )
    db.mutate(write("insert", "People", ["Id", "First", "Last"], [[1, "Ada", "Lovelace"]]))
    db.dml("INSERT INTO People (Id, First) VALUES (2, 'Bo')")
    assert db.query("SELECT FullName FROM People ORDER BY Id") == [["Ada Lovelace"], ["Bo"]]
    with expect_error(Code.INVALID_ARGUMENT, "generated column"):
        db.mutate(write("insert", "People", ["Id", "FullName"], [[3, "x"]]))


def test_name_errors_point_at_the_statement(db: Db) -> None:
    with pytest.raises(EngineError) as caught:
        db.dml("UPDATE NonExistent SET name = 'foo' WHERE id > 1")
    assert caught.value.message == (
        "Table not found: NonExistent [at 1:8]\n"
        "UPDATE NonExistent SET name = 'foo' WHERE id > 1\n"
        "       ^"
    )


def test_untyped_parameters_compared_with_columns_take_their_types(db: Db) -> None:
    db.ddl(
        "CREATE TABLE Things (Id INT64 NOT NULL, B BYTES(MAX), T TIMESTAMP, D DATE) "
        "PRIMARY KEY (Id)"
    )
    db.dml(
        "INSERT INTO Things (Id, B, T, D) VALUES (1, b'abc', "
        "TIMESTAMP '2024-05-06T07:08:09Z', DATE '2024-05-06')"
    )
    untyped = {"b": base64.b64encode(b"abc"), "t": "2024-05-06T07:08:09Z", "d": "2024-05-06"}
    sql = "SELECT Id FROM Things WHERE B = @b AND @t = T AND Things.D = @d"
    assert db.query(sql, untyped) == [[1]]
    assert db.query(sql, {**untyped, "b": base64.b64encode(b"abd")}) == []


def test_foreign_keys_and_check_constraints(db: Db) -> None:
    db.ddl(
        "CREATE TABLE Customers (CustomerId INT64 NOT NULL, Name STRING(62) NOT NULL, "
        "Age INT64, CONSTRAINT AgeIsPositive CHECK (Age > 0),) PRIMARY KEY (CustomerId)",
        "CREATE TABLE Carts (CartId INT64 NOT NULL, CustomerId INT64 NOT NULL, "
        "CONSTRAINT FKCartsCustomer FOREIGN KEY (CustomerId) REFERENCES Customers (CustomerId) "
        "ON DELETE CASCADE) PRIMARY KEY (CartId)",
        "CREATE TABLE Notes (NoteId INT64 NOT NULL, CustomerId INT64, "
        "CONSTRAINT FKNotesCustomer FOREIGN KEY (CustomerId) REFERENCES Customers (CustomerId)) "
        "PRIMARY KEY (NoteId)",
    )
    db.mutate(write("insert", "Customers", ["CustomerId", "Name", "Age"], [[1, "Ada", 36]]))
    db.mutate(write("insert", "Carts", ["CartId", "CustomerId"], [[10, 1], [11, 1]]))
    with expect_error(Code.FAILED_PRECONDITION, "FKCartsCustomer"):
        db.mutate(write("insert", "Carts", ["CartId", "CustomerId"], [[12, 2]]))
    with expect_error(Code.FAILED_PRECONDITION, "FKCartsCustomer"):
        db.dml("INSERT INTO Carts (CartId, CustomerId) VALUES (12, 2)")
    with expect_error(Code.OUT_OF_RANGE, "AgeIsPositive"):
        db.dml("UPDATE Customers SET Age = -1 WHERE CustomerId = 1")
    db.dml("INSERT INTO Notes (NoteId, CustomerId) VALUES (1, 1)")
    with expect_error(Code.FAILED_PRECONDITION, "FKNotesCustomer"):
        db.dml("DELETE FROM Customers WHERE CustomerId = 1")
    db.dml("DELETE FROM Notes WHERE NoteId = 1")
    db.dml("DELETE FROM Customers WHERE CustomerId = 1")  # ON DELETE CASCADE
    assert db.query("SELECT COUNT(*) FROM Carts") == [[0]]
    with expect_error(Code.FAILED_PRECONDITION, "foreign keys refer to it"):
        db.ddl("DROP TABLE Customers")
