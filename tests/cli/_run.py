"""Run the real ``spanpool`` command in a child process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping

ROUTING_VARIABLES = (
    "GOOGLE_CLOUD_SPANNER_MULTIPLEXED_SESSIONS",
    "GOOGLE_CLOUD_SPANNER_MULTIPLEXED_SESSIONS_FOR_RW",
    "GOOGLE_CLOUD_SPANNER_MULTIPLEXED_SESSIONS_PARTITIONED_OPS",
)


def spanpool(
    *args: str, env: Mapping[str, str] | None = None, stdin: str = "", timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m spanpool ARGS`` with this environment less the variables that steer the
    client (routing, emulator), plus ``env``; stdin is ``stdin``."""
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ROUTING_VARIABLES and k != "SPANNER_EMULATOR_HOST"
    }
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "spanpool", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=environ,
        timeout=timeout,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """The command failed with one clear line on stderr, naming ``fragments``."""
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("spanpool "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
