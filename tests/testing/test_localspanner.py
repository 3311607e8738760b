"""LocalSpanner end to end, driven by the unmodified official client over real gRPC."""

from __future__ import annotations

import base64
import datetime
import decimal
import os
import random
import signal
import subprocess
import sys
import threading
from typing import Any

import grpc
import pytest
from google.api_core import exceptions
from google.cloud.spanner_v1 import KeySet, param_types
from google.cloud.spanner_v1.data_types import JsonObject
from google.cloud.spanner_v1.session import Session
from google.rpc import error_details_pb2

from spanpool.testing import LocalSpanner, connect

from ..conftest import ACCOUNTS_DDL, FakeClock, begun_transactions, database_name, run_in_threads

INT64 = param_types.INT64


def _accounts(database: Any, n: int = 10, balance: int = 100) -> None:
    with database.batch() as batch:
        batch.insert(
            "Accounts",
            ("Id", "Owner", "Balance"),
            [(i, f"owner-{i}", balance) for i in range(n)],
        )


def _query(database: Any, sql: str, **kw: Any) -> list[list[Any]]:
    with database.snapshot() as snapshot:
        return [list(row) for row in snapshot.execute_sql(sql, **kw)]


# -- databases and schema ------------------------------------------------------------------


def test_create_database_with_ddl_then_update_ddl() -> None:
    with LocalSpanner(strict=True) as server:
        database = server.database("created")
        assert not database.exists()
        database._ddl_statements = ACCOUNTS_DDL
        database.create().result()
        assert database.exists()
        database.update_ddl(
            ["CREATE TABLE Notes (Id INT64 NOT NULL, Body STRING(MAX)) PRIMARY KEY (Id)"]
        ).result()
        database.reload()
        assert [s.split("(")[0].strip() for s in database.ddl_statements] == [
            "CREATE TABLE Accounts",
            "CREATE TABLE Notes",
        ]
        with database.batch() as batch:
            batch.insert("Notes", ("Id", "Body"), [(1, "hello")])
        assert _query(database, "SELECT Body FROM Notes") == [["hello"]]


def test_strict_server_answers_database_not_found() -> None:
    with LocalSpanner(strict=True) as server:
        database = server.database("missing")
        with pytest.raises(exceptions.NotFound, match="Database not found"):
            _query(database, "SELECT 1")


def test_unknown_database_is_created_with_startup_ddl(database: Any) -> None:
    _accounts(database, 3)
    assert _query(database, "SELECT COUNT(*) FROM Accounts") == [[3]]


# -- data -----------------------------------------------------------------------------------


def test_insert_query_with_params_and_read_by_keys(database: Any) -> None:
    _accounts(database, 10)
    rows = _query(
        database,
        "SELECT Id, Owner FROM Accounts WHERE Balance >= @min AND Id IN UNNEST(@ids) ORDER BY Id",
        params={"min": 50, "ids": [2, 4, 11]},
        param_types={"min": INT64, "ids": param_types.Array(INT64)},
    )
    assert rows == [[2, "owner-2"], [4, "owner-4"]]
    with database.snapshot() as snapshot:
        by_keys = list(snapshot.read("Accounts", ("Id", "Owner"), KeySet(keys=[[3], [7], [99]])))
    assert by_keys == [[3, "owner-3"], [7, "owner-7"]]
    with database.snapshot() as snapshot:
        by_range = list(
            snapshot.read(
                "Accounts",
                ("Id",),
                KeySet(ranges=[KeySetRange(start_closed=[5], end_open=[8])]),
            )
        )
    assert by_range == [[5], [6], [7]]
    with database.snapshot() as snapshot:
        everything = list(snapshot.read("Accounts", ("Id",), KeySet(all_=True), limit=4))
    assert everything == [[0], [1], [2], [3]]


def KeySetRange(**kw: Any) -> Any:
    from google.cloud.spanner_v1 import KeyRange

    return KeyRange(**kw)


def test_dml_and_batch_dml_in_read_write_transactions(database: Any) -> None:
    _accounts(database, 4)

    def work(transaction: Any) -> tuple[int, list[int]]:
        updated = transaction.execute_update(
            "UPDATE Accounts SET Balance = Balance + @d WHERE Id < @n",
            params={"d": 5, "n": 2},
            param_types={"d": INT64, "n": INT64},
        )
        status, counts = transaction.batch_update(
            [
                "INSERT INTO Accounts (Id, Owner, Balance) VALUES (10, 'new', 1)",
                "DELETE FROM Accounts WHERE Id = 3",
            ]
        )
        assert status.code == 0
        return updated, counts

    updated, counts = database.run_in_transaction(work)
    assert (updated, counts) == (2, [1, 1])
    assert _query(database, "SELECT Id, Balance FROM Accounts ORDER BY Id") == [
        [0, 105],
        [1, 105],
        [2, 100],
        [10, 1],
    ]


def test_every_type_round_trips_through_mutations_params_and_results(database: Any) -> None:
    database.update_ddl(
        [
            "CREATE TABLE Everything (Id INT64 NOT NULL, F FLOAT64, B BOOL, S STRING(MAX), "
            "Y BYTES(MAX), D DATE, T TIMESTAMP, N NUMERIC, J JSON, A ARRAY<INT64>, "
            "AS_ ARRAY<STRING(MAX)>) PRIMARY KEY (Id)"
        ]
    ).result()
    stamp = datetime.datetime(2026, 11, 22, 1, 2, 3, 456789, tzinfo=datetime.timezone.utc)
    raw = b"\x00\xffbytes"
    row = [
        1,
        2.5,
        True,
        "héllo",
        base64.b64encode(raw),  # the client takes BYTES values base64-encoded
        datetime.date(2026, 2, 28),
        stamp,
        decimal.Decimal("12345.678901234"),
        JsonObject({"a": [1, 2]}),
        [1, None, 3],
        ["x", "y"],
    ]
    columns = ("Id", "F", "B", "S", "Y", "D", "T", "N", "J", "A", "AS_")
    with database.batch() as batch:
        batch.insert("Everything", columns, [row, [2] + [None] * 10])
    got = _query(database, f"SELECT {', '.join(columns)} FROM Everything ORDER BY Id")
    assert got[0] == row  # BYTES come back base64-encoded too, as the client reads them
    assert got[1] == [2] + [None] * 10
    # Parameters of each type find the row again.
    for column, value, ptype in [
        ("F", 2.5, param_types.FLOAT64),
        ("B", True, param_types.BOOL),
        ("S", "héllo", param_types.STRING),
        ("Y", base64.b64encode(raw), param_types.BYTES),
        ("D", datetime.date(2026, 2, 28), param_types.DATE),
        ("T", stamp, param_types.TIMESTAMP),
    ]:
        found = _query(
            database,
            f"SELECT Id FROM Everything WHERE {column} = @v",
            params={"v": value},
            param_types={"v": ptype},
        )
        assert found == [[1]], column


# -- transactions ----------------------------------------------------------------------------


def test_six_threads_transfer_money_and_the_total_stays_constant() -> None:
    # lock_timeout=0: a transaction that finds another one writing is aborted at once, so
    # aborts certainly happen and the client's retries are exercised.
    with LocalSpanner(ddl=ACCOUNTS_DDL, lock_timeout=0.0, abort_retry_delay=0.001) as server:
        database = server.database("bank")
        accounts, start = 8, 1000
        _accounts(database, accounts, start)
        errors: list[BaseException] = []

        def transfer(transaction: Any, source: int, target: int, amount: int) -> None:
            rows = transaction.execute_sql(
                "SELECT Id, Balance FROM Accounts WHERE Id IN UNNEST(@ids)",
                params={"ids": [source, target]},
                param_types={"ids": param_types.Array(INT64)},
            )
            balance = dict(list(rows))
            transaction.update(
                "Accounts",
                ("Id", "Balance"),
                [(source, balance[source] - amount), (target, balance[target] + amount)],
            )

        def worker(seed: int) -> None:
            rng = random.Random(seed)
            try:
                for _ in range(25):
                    source, target = rng.sample(range(accounts), 2)
                    database.run_in_transaction(transfer, source, target, rng.randint(1, 9))
            except BaseException as exc:
                errors.append(exc)

        run_in_threads(6, worker)
        assert errors == []
        assert _query(database, "SELECT SUM(Balance) FROM Accounts") == [[accounts * start]]
        aborted = sum(n for (_, code), n in server.status_counts().items() if code == "ABORTED")
        assert aborted > 0
        commits = server.status_counts()[("Commit", "OK")]
        assert commits >= 6 * 25


def test_read_write_transaction_idle_too_long_is_aborted(
    clock: FakeClock, regular_sessions: None
) -> None:
    with LocalSpanner(ddl=ACCOUNTS_DDL, clock=clock) as server:
        database = server.database("idle")
        _accounts(database, 2)
        [transaction] = begun_transactions(database, 1)
        transaction.execute_update("UPDATE Accounts SET Balance = 0 WHERE Id = 0")
        clock.advance(11)
        with pytest.raises(exceptions.Aborted, match="idle"):
            transaction.commit()
        assert _query(database, "SELECT Balance FROM Accounts WHERE Id = 0") == [[100]]


def test_a_regular_session_carries_one_read_write_transaction_at_a_time(
    database: Any, regular_sessions: None
) -> None:
    _accounts(database, 2)
    session = database.session()
    session.create()
    first = session.transaction()
    first.begin()
    second = session.transaction()
    second.begin()
    second.execute_update("UPDATE Accounts SET Balance = 1 WHERE Id = 1")
    second.commit()
    with pytest.raises(exceptions.GoogleAPICallError):
        first.execute_update("UPDATE Accounts SET Balance = 2 WHERE Id = 1")


def test_multiplexed_sessions_carry_concurrent_transactions(server: LocalSpanner) -> None:
    database = server.database("mux")
    _accounts(database, 4)
    session = Session(database, is_multiplexed=True)
    session.create()
    api = database.spanner_api
    with pytest.raises(exceptions.InvalidArgument, match="cannot be deleted"):
        api.delete_session(name=session.name)
    one, two = session.transaction(), session.transaction()
    one.begin()
    two.begin()
    one.insert("Accounts", ("Id", "Owner", "Balance"), [(100, "a", 1)])
    two.insert("Accounts", ("Id", "Owner", "Balance"), [(101, "b", 2)])
    one.commit()
    two.commit()
    assert _query(database, "SELECT Id FROM Accounts WHERE Id >= 100 ORDER BY Id") == [
        [100],
        [101],
    ]
    with pytest.raises(exceptions.InvalidArgument, match="labels"):
        Session(database, labels={"a": "b"}, is_multiplexed=True).create()


# -- sessions ------------------------------------------------------------------------------------


def test_idle_session_expires_with_not_found_and_resource_info(
    clock: FakeClock, regular_sessions: None
) -> None:
    with LocalSpanner(clock=clock, session_idle_timeout=60) as server:
        database = server.database("expiry")
        session = database.session()
        session.create()
        clock.advance(59)
        assert session.exists()  # used: its idle time starts again
        clock.advance(61)
        with pytest.raises(exceptions.NotFound) as info:
            session.ping()
        assert f"Session not found: {session.name}" in str(info.value)
        resource_infos = [
            d for d in info.value.details if isinstance(d, error_details_pb2.ResourceInfo)
        ]
        assert [r.resource_type for r in resource_infos] == [
            "type.googleapis.com/google.spanner.v1.Session"
        ]
        assert resource_infos[0].resource_name == session.name
        assert not session.exists()
        assert server.session_count() == 0


@pytest.mark.parametrize(
    "labels, problem",
    [
        ({"Upper": "x"}, "key"),
        ({"1digit": "x"}, "key"),
        ({"k" * 64: "x"}, "key"),
        ({"ok": "v" * 64}, "value"),
        ({f"k{i}": "v" for i in range(65)}, "at most 64"),
    ],
)
def test_invalid_labels_are_rejected(
    database: Any, labels: dict[str, str], problem: str, regular_sessions: None
) -> None:
    with pytest.raises(exceptions.InvalidArgument, match=problem):
        database.session(labels=labels).create()


def test_labels_and_creator_role_are_recorded(server: LocalSpanner, regular_sessions: None) -> None:
    database = server.database("roles", database_role="reader")
    session = database.session(labels={"team": "payments", "env": "test-1"})
    session.create()
    got = database.spanner_api.get_session(name=session.name)
    assert dict(got.labels) == {"team": "payments", "env": "test-1"}
    assert got.creator_role == "reader"


def test_session_limit_answers_resource_exhausted() -> None:
    with LocalSpanner(max_sessions_per_database=5) as server:
        database = server.database("limited")
        api = database.spanner_api
        got = api.batch_create_sessions(database=database.name, session_count=10)
        assert len(got.session) == 5
        with pytest.raises(exceptions.ResourceExhausted, match="Too many sessions"):
            api.create_session(database=database.name, retry=None)
        api.delete_session(name=got.session[0].name)
        api.create_session(database=database.name)
        assert server.session_count(database.name) == 5


def test_batch_create_returns_at_most_the_batch_cap(server: LocalSpanner) -> None:
    database = server.database("batches")
    api = database.spanner_api
    got = api.batch_create_sessions(database=database.name, session_count=250)
    assert len(got.session) == 100
    capped = LocalSpanner(max_sessions_per_batch=7)
    with capped:
        db2 = capped.database("batches")
        got2 = db2.spanner_api.batch_create_sessions(database=db2.name, session_count=20)
        assert len(got2.session) == 7


def test_list_sessions_filters_by_label(server: LocalSpanner, regular_sessions: None) -> None:
    database = server.database("listing")
    for team in ("a", "a", "b"):
        database.session(labels={"team": team}).create()
    listed = list(
        database.spanner_api.list_sessions(
            request={"database": database.name, "filter": "labels.team:a"}
        )
    )
    assert len(listed) == 2


def test_list_sessions_filters_as_cloud_spanner_does(
    server: LocalSpanner, regular_sessions: None
) -> None:
    database = server.database("listing-filters")
    for labels in ({"team": "payments"}, {"team": "pay"}, {"team": "ops", "env": "dev"}, {}):
        database.session(labels=labels).create()

    def listed(text: str) -> int:
        request = {"database": database.name, "filter": text}
        return len(list(database.spanner_api.list_sessions(request=request)))

    assert listed("labels.team:*") == 3  # the label is set
    assert listed("labels.team") == 3
    assert listed("labels.team:pay") == 2  # the value contains the text
    assert listed("labels.team:PAY") == 2  # whatever its case
    assert listed("labels.team:ops AND labels.env:dev") == 1
    assert listed("labels.env:*") == 1


def test_session_times_move_with_the_clock(clock: FakeClock, regular_sessions: None) -> None:
    with LocalSpanner(clock=clock) as server:
        database = server.database("times")
        api = database.spanner_api
        clock.advance(-1800)  # half an hour ago
        old = api.create_session(database=database.name)
        clock.advance(1800)
        new = api.create_session(database=database.name)
        gap = new.create_time - old.create_time
        assert abs(gap.total_seconds() - 1800) < 5
        clock.advance(600)
        used = api.get_session(name=old.name)  # using a session moves its last-use time
        assert abs((used.approximate_last_use_time - old.create_time).total_seconds() - 2400) < 5
        assert used.create_time == old.create_time


# -- control ---------------------------------------------------------------------------------


def test_injected_errors_by_count_and_probability(server: LocalSpanner) -> None:
    database = server.database("faults")
    session = database.session()
    session.create()
    server.inject_error("ExecuteSql", grpc.StatusCode.UNAVAILABLE, count=2)
    server.inject_error("GetSession", "PERMISSION_DENIED", probability=1.0)
    with pytest.raises(exceptions.PermissionDenied):
        session.exists()
    server.clear_faults()
    assert session.exists()
    # The client retries UNAVAILABLE on ExecuteSql: both injected failures are absorbed.
    server.inject_error("ExecuteSql", grpc.StatusCode.UNAVAILABLE, count=2)
    before = server.request_counts().get("ExecuteSql", 0)
    session.ping()
    assert server.request_counts()["ExecuteSql"] - before == 3
    assert server.status_counts()[("ExecuteSql", "UNAVAILABLE")] == 2
    server.inject_error("GetSession", "INTERNAL", probability=0.0)
    assert session.exists()


def test_injected_latency_delays_calls(server: LocalSpanner) -> None:
    import time

    database = server.database("slow")
    session = database.session()
    session.create()
    server.inject_latency(60, method="GetSession")
    began = time.perf_counter()
    session.exists()
    assert time.perf_counter() - began >= 0.06
    server.inject_latency(0, method="GetSession")
    began = time.perf_counter()
    session.ping()  # another method was never delayed
    assert server.request_counts()["ExecuteSql"] == 1


def test_expire_sessions_restart_and_counts(server: LocalSpanner) -> None:
    database = server.database("control")
    _accounts(database, 3)
    api = database.spanner_api
    api.batch_create_sessions(database=database.name, session_count=10)
    assert server.session_count(database.name) >= 10
    before = server.session_count(database.name)
    dropped = server.expire_sessions(0.5, database=database.name)
    assert server.session_count(database.name) == before - dropped
    assert dropped == round(before * 0.5) or dropped == round((before - 1) * 0.5)
    server.restart()
    assert server.session_count() == 0
    # The old client's multiplexed session is gone with the restart; a new client sees the data.
    assert _query(server.database("control"), "SELECT COUNT(*) FROM Accounts") == [[3]]
    assert server.request_counts()["BatchCreateSessions"] == 1
    log = server.request_log()
    assert log[-1].method == "ExecuteStreamingSql" and log[-1].code == "OK"


def test_lose_multiplexed_sessions(server: LocalSpanner) -> None:
    database = server.database("lost")
    regular = Session(database)  # database.session() would be multiplexed
    regular.create()
    assert _query(database, "SELECT 1") == [[1]]  # the client's own multiplexed session
    [name] = server.multiplexed_sessions(database.name)
    assert server.lose_multiplexed_sessions(database.name) == [name]
    assert server.multiplexed_sessions() == []
    assert regular.exists()  # regular sessions are untouched
    with pytest.raises(exceptions.NotFound, match="Session not found") as caught:
        _query(database, "SELECT 1")
    [detail] = [d for d in caught.value.details if isinstance(d, error_details_pb2.ResourceInfo)]
    assert detail.resource_name == name


def test_freeze_holds_calls_until_unfreeze(server: LocalSpanner) -> None:
    database = server.database("frozen")
    session = database.session()
    session.create()
    server.freeze()
    done = threading.Event()
    result: list[bool] = []

    def call() -> None:
        result.append(session.exists())
        done.set()

    caller = threading.Thread(target=call)
    caller.start()
    assert not done.wait(0.3)
    assert caller.is_alive()
    server.unfreeze()
    assert done.wait(10)
    caller.join()
    assert result == [True]


def test_bad_sql_is_invalid_argument_and_the_server_goes_on(database: Any) -> None:
    _accounts(database, 1)
    with pytest.raises(exceptions.InvalidArgument):
        _query(database, "SELEKT nonsense")
    with pytest.raises(exceptions.InvalidArgument):
        _query(database, "CREATE TABLE X (Id INT64) PRIMARY KEY (Id)")
    with pytest.raises(exceptions.InvalidArgument, match="Table not found"):
        _query(database, "SELECT * FROM NoSuchTable")
    with pytest.raises(exceptions.InvalidArgument):
        database.run_in_transaction(lambda t: t.execute_update("SELECT 1 FROM"))
    assert _query(database, "SELECT COUNT(*) FROM Accounts") == [[1]]


def test_emulator_host_environment_variable_works(
    server: LocalSpanner, monkeypatch: pytest.MonkeyPatch
) -> None:
    from google.cloud import spanner

    monkeypatch.setenv("SPANNER_EMULATOR_HOST", server.endpoint)
    client = spanner.Client(project="env-project")
    database = client.instance("i").database("d")
    assert _query(database, "SELECT 1") == [[1]]


# -- spanpool serve ----------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_spanpool_serve_runs_as_a_process(tmp_path: Any, sig: signal.Signals) -> None:
    ddl = tmp_path / "schema.sql"
    ddl.write_text(";\n".join(ACCOUNTS_DDL) + ";\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "spanpool", "serve", "--ddl", str(ddl), "--latency-ms", "1"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        endpoint = process.stdout.readline().strip()
        host, _, port = endpoint.rpartition(":")
        assert host == "127.0.0.1" and int(port) > 0
        database = connect(endpoint, "served")
        _accounts(database, 2)
        assert _query(database, "SELECT COUNT(*) FROM Accounts") == [[2]]
        process.send_signal(sig)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_database_name_helper_matches_the_client(database: Any) -> None:
    assert database.name == database_name()
