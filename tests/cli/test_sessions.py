"""``spanpool sessions list|census|clean`` count and delete what the server holds: sessions
with known labels and ages, made through LocalSpanner's injectable clock."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from spanpool.cli._common import CommandError
from spanpool.cli._listing import SessionInfo
from spanpool.cli.sessions import choose_for_clean
from spanpool.testing import LocalSpanner

from ..conftest import FakeClock
from ._run import spanpool

DATABASE = "projects/test-project/instances/test-instance/databases/census"


@dataclass
class Fleet:
    server: LocalSpanner
    api: Any
    names: dict[str, list[str]]  # group -> session names

    def on_server(self) -> set[str]:
        return {s.name for s in self.api.list_sessions(database=DATABASE)}

    def cli(self, *args: str, stdin: str = "") -> Any:
        return spanpool(
            *args[:1],
            *(args[1:2]),
            DATABASE,
            "--endpoint",
            self.server.endpoint,
            *args[2:],
            stdin=stdin,
        )


def _create(api: Any, count: int, labels: dict[str, str]) -> list[str]:
    request = {"database": DATABASE, "session_count": count, "session_template": {"labels": labels}}
    got = api.batch_create_sessions(request=request)
    return [s.name for s in got.session]


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    clock = FakeClock()
    with LocalSpanner(clock=clock) as server:
        api = server.database("census").spanner_api
        names: dict[str, list[str]] = {}
        clock.advance(-45 * 60)  # 45 minutes ago
        names["old billing"] = _create(api, 3, {"app": "billing"})
        clock.advance(25 * 60)  # 20 minutes ago
        names["cron"] = _create(api, 1, {"app": "cron", "env": "prod"})
        clock.advance(20 * 60)  # now
        names["new billing"] = _create(api, 2, {"app": "billing"})
        names["unlabelled"] = _create(api, 1, {})
        multiplexed = api.create_session(
            request={"database": DATABASE, "session": {"multiplexed": True}}
        )
        names["multiplexed"] = [multiplexed.name]
        yield Fleet(server, api, names)


def _listed(fleet: Fleet, *options: str) -> set[str]:
    result = fleet.cli("sessions", "list", "--json", *options)
    assert result.returncode == 0, result.stderr
    return {session["name"] for session in json.loads(result.stdout)}


def test_list_shows_what_the_server_holds_and_filters_by_label_and_age(fleet: Fleet) -> None:
    groups = fleet.names
    assert _listed(fleet) == fleet.on_server() and len(fleet.on_server()) == 8
    assert _listed(fleet, "--label", "app=billing", "--idle-older-than", "30m") == set(
        groups["old billing"]
    )
    assert _listed(fleet, "--older-than", "10m") == {*groups["old billing"], *groups["cron"]}


def test_list_for_people(fleet: Fleet) -> None:
    result = fleet.cli("sessions", "list", "--label", "app=cron")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["SESSION", "KIND", "CREATED", "LAST", "USED", "ROLE", "LABELS"]
    session_id = fleet.names["cron"][0].rpartition("/")[2]
    assert lines[1].split() == [
        session_id,
        "regular",
        "20m",
        "ago",
        "20m",
        "ago",
        "-",
        "app=cron,env=prod",
    ]
    assert lines[-1] == f"1 session (1 regular, 0 multiplexed) in {DATABASE}"


def test_census_counts_by_kind_labels_and_idle_time(fleet: Fleet) -> None:
    # The endpoint from the environment, as the client takes it, rather than --endpoint.
    env = {"SPANNER_EMULATOR_HOST": fleet.server.endpoint}
    result = spanpool("sessions", "census", DATABASE, "--json", env=env)
    assert result.returncode == 0, result.stderr
    census = json.loads(result.stdout)
    assert census["total"] == 8
    assert census["by_kind"] == {"regular": 7, "multiplexed": 1}
    assert {row["labels"]: row["count"] for row in census["by_labels"]} == {
        "app=billing": 5,
        "app=cron,env=prod": 1,
        "-": 1,
    }
    assert {row["idle"]: row["count"] for row in census["by_idle"]} == {
        "< 1 min": 3,
        "1-10 min": 0,
        "10-30 min": 1,
        "30-55 min": 3,
        ">= 55 min": 0,
    }


def _clean_old_billing(fleet: Fleet, *flags: str) -> dict[str, Any]:
    """``sessions clean`` of the billing sessions idle for over 30 minutes; its JSON report."""
    result = fleet.cli(
        "sessions", "clean", "--label", "app=billing", "--idle-older-than", "30m", *flags, "--json"
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_clean_dry_run_deletes_nothing(fleet: Fleet) -> None:
    before = fleet.on_server()
    report = _clean_old_billing(fleet, "--dry-run")
    assert set(report["matched"]) == set(fleet.names["old billing"])
    assert report["deleted"] == []
    assert fleet.on_server() == before


def test_clean_deletes_exactly_the_matching_regular_sessions(fleet: Fleet) -> None:
    before = fleet.on_server()
    report = _clean_old_billing(fleet, "--yes")
    assert set(report["deleted"]) == set(fleet.names["old billing"])
    assert report["failed"] == []
    assert fleet.on_server() == before - set(fleet.names["old billing"])


def test_clean_asks_first(fleet: Fleet) -> None:
    before = fleet.on_server()
    refused = fleet.cli("sessions", "clean", "--label", "app", stdin="n\n")
    assert refused.returncode == 1
    question, error = refused.stderr.splitlines()
    assert question == "Delete these 6 sessions? [y/N] "
    assert error == "spanpool sessions clean: error: not confirmed: nothing deleted"
    assert fleet.on_server() == before
    agreed = fleet.cli("sessions", "clean", "--label", "app", stdin="y\n")
    assert agreed.returncode == 0, agreed.stderr
    assert "deleted 6, already gone 0, failed 0" in agreed.stdout
    # Every labelled session is gone; the multiplexed and the unlabelled ones stay.
    assert fleet.on_server() == {*fleet.names["multiplexed"], *fleet.names["unlabelled"]}


def test_clean_never_chooses_a_multiplexed_session() -> None:
    now = datetime.datetime.now(datetime.timezone.utc)
    hour_ago = now - datetime.timedelta(hours=1)

    def session(name: str, multiplexed: bool) -> SessionInfo:
        return SessionInfo(name, multiplexed, {"app": "x"}, "", hour_ago, hour_ago)

    sessions = [session("regular", False), session("multiplexed", True)]
    chosen, left = choose_for_clean(sessions, [("app", "x")], 55 * 60, now)
    assert [s.name for s in chosen] == ["regular"]
    assert [s.name for s in left] == ["multiplexed"]
    with pytest.raises(CommandError, match="--label"):
        choose_for_clean(sessions, [], None, now)
