"""``spanpool doctor``: the routing table follows the client's reading of its environment;
with a database, multiplexed support, round trip and census."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest
from google.cloud.spanner_v1.database_sessions_manager import (
    DatabaseSessionsManager,
    TransactionType,
)

from spanpool.bridge import routing
from spanpool.testing import LocalSpanner

from ._run import ROUTING_VARIABLES, spanpool

VALUES = [None, "false", "FALSE", " False\t", "false ", "0", "no", "off", "", "true", "f", "falsey"]


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("kind", list(TransactionType))
def test_routing_reads_each_variable_as_the_client_does(
    kind: TransactionType, value: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ROUTING_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    if value is not None:
        monkeypatch.setenv(routing.ENV_OF[kind.value], value)
    # The client's own decision, by the installed version's private reader.
    expected = DatabaseSessionsManager._use_multiplexed(kind)
    assert routing.uses_multiplexed(kind) is expected
    assert routing.uses_multiplexed(kind.value, dict(os.environ)) is expected
    assert routing.routing()[kind.value] is expected


def _doctor_routes(env: dict[str, str]) -> dict[str, str]:
    # --endpoint: no credentials are looked for, and no database is named, so nothing connects.
    result = spanpool("doctor", "--json", "--endpoint", "127.0.0.1:1", env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    return {route["operation"]: route["session"] for route in report["routing"]}


@pytest.mark.parametrize(
    "env, expected",
    [
        (
            {
                "GOOGLE_CLOUD_SPANNER_MULTIPLEXED_SESSIONS": " FALSE ",
                "GOOGLE_CLOUD_SPANNER_MULTIPLEXED_SESSIONS_FOR_RW": "0",
                "GOOGLE_CLOUD_SPANNER_MULTIPLEXED_SESSIONS_PARTITIONED_OPS": "false",
            },
            ("regular", "multiplexed", "regular", "regular"),
        ),
    ],
)
def test_doctor_routing_table_follows_the_environment(
    env: dict[str, str], expected: tuple[str, ...]
) -> None:
    # batch() follows the read-only variable: the client checks it out as read-only.
    operations = ("read-only", "read-write", "partitioned", "batch()")
    assert _doctor_routes(env) == dict(zip(operations, expected, strict=True))


def test_doctor_human_output_explains_each_route_and_the_defects_that_matter() -> None:
    env = {"GOOGLE_CLOUD_SPANNER_MULTIPLEXED_SESSIONS_FOR_RW": "no"}
    result = spanpool("doctor", "--endpoint", "127.0.0.1:1", env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    routes = [line.split()[:2] for line in out.splitlines() if line.startswith("  ")][1:5]
    assert routes == [
        ["read-only", "multiplexed"],
        ["read-write", "multiplexed"],
        ["partitioned", "multiplexed"],
        ["batch()", "multiplexed"],
    ]
    assert "google-cloud-spanner 3.71" in out
    assert 'GOOGLE_CLOUD_SPANNER_MULTIPLEXED_SESSIONS_FOR_RW="no" is not "false"' in out
    assert "Database.close() blocks up to 10 minutes" in out  # every route is multiplexed
    assert "naive/aware" not in out  # no route uses a pool's regular sessions


@pytest.fixture
def server() -> Iterator[LocalSpanner]:
    with LocalSpanner() as srv:
        yield srv


def test_doctor_with_a_database(server: LocalSpanner) -> None:
    name = "projects/test-project/instances/test-instance/databases/doctored"
    api = server.database("doctored").spanner_api
    api.batch_create_sessions(
        request={"database": name, "session_count": 3, "session_template": {"labels": {"a": "b"}}}
    )
    result = spanpool("doctor", name, "--endpoint", server.endpoint, "--json")
    assert result.returncode == 0, result.stderr
    database = json.loads(result.stdout)["database"]
    assert database["name"] == name
    assert database["multiplexed_accepted"] is True
    assert database["round_trip_ms"]["median"] > 0
    assert database["census"]["by_kind"] == {"regular": 3, "multiplexed": 0}
    # It made the one multiplexed session it measured on, and left the regular ones alone.
    kinds = sorted(bool(s.multiplexed) for s in api.list_sessions(database=name))
    assert kinds == [False, False, False, True]


MULTIPLEXED_DEFECTS = {
    "lost-multiplexed-session",
    "close-blocks",
    "dropped-database-leaks",
    "lazy-creation",
    "dbapi-connect",
}
REGULAR_DEFECTS = {"fixed-size-pool-typeerror", "bursty-pool-getsession"}


@pytest.mark.parametrize(
    "env, relevant",
    [
        ({}, {*MULTIPLEXED_DEFECTS, "unused-pool-filled"}),
        (
            {"GOOGLE_CLOUD_SPANNER_MULTIPLEXED_SESSIONS_FOR_RW": "false"},
            MULTIPLEXED_DEFECTS | REGULAR_DEFECTS,
        ),
        ({name: "false" for name in ROUTING_VARIABLES}, REGULAR_DEFECTS),
    ],
)
def test_defects_that_matter_follow_the_routes(env: dict[str, str], relevant: set[str]) -> None:
    from spanpool.cli.doctor import OPERATIONS, defects, route

    routes = [route(operation, env) for operation in OPERATIONS]
    found = defects(routes, "3.71.0")
    assert {d["id"] for d in found if d["relevant"]} == relevant
