"""Django on django-google-spanner with spanpool's OPTIONS: a small site (model, migration,
requests through the test client, connections closed after each request as with
``CONN_MAX_AGE=0``), each run in its own process (Django is configured once per process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ._support import QUIET_METRICS

ROOT = Path(__file__).resolve().parents[2]


def run_site(*args: str, timeout: float = 120) -> dict[str, Any]:
    """Run ``tests/frameworks/djangoapp/run.py`` with ``args``; its JSON report."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOOGLE_CLOUD_SPANNER_")}
    env.update(QUIET_METRICS)
    env.pop("SPANNER_EMULATOR_HOST", None)
    done = subprocess.run(
        [sys.executable, "-m", "tests.frameworks.djangoapp.run", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def _check_site(report: dict[str, Any], requests: int) -> None:
    assert report["statuses"] == [(201, 409, 200)[i % 3] for i in range(requests)]
    assert report["names"] == [f"item-{i:03d}" for i in range(0, requests, 3)]
    # After the first request (which may make the process's session), none costs a session
    # RPC, and no request leaves a thread behind.
    for rpcs in report["session_rpcs"][1:]:
        assert not any(rpcs.values()), report["session_rpcs"]
    assert len(set(report["threads"][1:])) == 1, report["threads"]


@pytest.mark.parametrize("sessions", ["multiplexed", "regular"])
def test_requests_cost_no_session_rpc_and_never_clear_the_pool(sessions: str) -> None:
    args = ["--migrate", "--requests", "9"]
    if sessions == "regular":
        args.append("--regular")  # a FixedSizePool(2) that counts clear() calls
    report = run_site(*args)
    _check_site(report, 9)
    if sessions == "regular":
        assert report["pool_clears"] == 0
        assert report["sessions_deleted"] == 0
