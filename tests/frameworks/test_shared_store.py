"""Each framework with the multiplexed session shared through a SQLite store (``store=``) by
two real processes, one after the other: the second process creates no session."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from spanpool.testing import LocalSpanner

from ._support import QUIET_METRICS, SESSION_METHODS
from .test_django import ROOT, run_site

CREATING = ("CreateSession", "BatchCreateSessions")


def _worker(kind: str) -> Callable[[str, str], None]:
    def run(endpoint: str, store: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GOOGLE_CLOUD_SPANNER_")}
        env.update(QUIET_METRICS)
        done = subprocess.run(
            [sys.executable, "-m", "tests.frameworks._workers", kind, endpoint, store],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.strip() == "42"

    return run


def _django(endpoint: str, store: str) -> None:
    report = run_site("--endpoint", endpoint, "--store", store, "--migrate")
    assert report["statuses"] == [201, 409, 200, 201, 409, 200, 201, 409, 200, 201]


@pytest.mark.parametrize("kind", ["dbapi", "sqlalchemy", "django"])
def test_the_second_process_creates_no_session(kind: str, tmp_path: Path) -> None:
    run = _django if kind == "django" else _worker(kind)
    store = str(tmp_path / "sessions.db")
    with LocalSpanner() as server:
        run(server.endpoint, store)
        first = server.control.request_counts()
        assert sum(first.get(method, 0) for method in CREATING) >= 1
        server.control.reset_counts()
        run(server.endpoint, store)
        second = server.control.request_counts()
    assert {m: second[m] for m in SESSION_METHODS if second.get(m)} == {}
