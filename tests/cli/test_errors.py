"""Each failure prints one clear line, without a traceback, and exits non-zero."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from spanpool.cli import main
from spanpool.cli._common import CommandError, database_name, duration
from spanpool.testing import LocalSpanner

from ._run import assert_one_line_error, spanpool

NAME = "projects/test-project/instances/test-instance/databases/{}"


@pytest.fixture(scope="module")
def strict_server() -> Iterator[LocalSpanner]:
    with LocalSpanner(strict=True) as server:
        yield server


def test_a_database_the_server_does_not_have(strict_server: LocalSpanner) -> None:
    result = spanpool(
        "sessions", "census", NAME.format("missing"), "--endpoint", strict_server.endpoint
    )
    assert_one_line_error(result, f"database {NAME.format('missing')} not found")


def test_an_unreachable_endpoint() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = spanpool(
        "doctor", NAME.format("db"), "--endpoint", f"127.0.0.1:{port}", "--connect-timeout", "0.5"
    )
    assert_one_line_error(result, f"cannot reach 127.0.0.1:{port} within 0.5 s")


def test_missing_credentials(tmp_path: Path) -> None:
    env = {
        "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "absent.json"),
        "CLOUDSDK_CONFIG": str(tmp_path),
        "NO_GCE_CHECK": "true",
    }
    result = spanpool("sessions", "list", NAME.format("db"), env=env)
    assert_one_line_error(result, "no Google credentials", "--endpoint")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sessions", "list", "db", "--endpoint", "localhost:1"], "give --instance"),
        (
            ["sessions", "list", "db", "--instance", "test-instance", "--endpoint", "h:1"],
            "no project",
        ),
        (["sessions", "list", NAME.format("Bad_Name"), "--endpoint", "h:1"], "database ID"),
        (["sessions", "list", NAME.format("db"), "--endpoint", "no-port"], "HOST:PORT"),
        (["bench", "--scenario", "9"], "--scenario must be between 1 and 5"),
        (["bench", "--only", "nonsense"], "no benchmark suite 'nonsense'"),
        (
            [
                "sessions",
                "list",
                "projects/p/instances/test-instance/database/d",
                "--endpoint",
                "h:1",
            ],
            "neither projects/P/instances/I/databases/D nor a database ID",
        ),
    ],
)
def test_bad_arguments_in_process(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err


def test_database_names() -> None:
    full = NAME.format("db")
    assert database_name(full, None, None) == full
    assert database_name("db", "test-project", "test-instance") == full
    assert database_name("db", None, "test-instance", "test-project") == full
    with pytest.raises(CommandError, match="full name"):
        database_name(full, "test-project", None)


def test_durations() -> None:
    assert [duration(text) for text in ("90", "90s", "50m", "2h", "1d", "1.5m")] == [
        90,
        90,
        3000,
        7200,
        86400,
        90,
    ]
