"""``spanpool bench``: ``--chart`` writes a PNG of the ratios; each suite has its own session
routing."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from spanpool.bench.harness import session_routing
from spanpool.testing import REGULAR_SESSIONS_ENV

from ._run import spanpool


def test_bench_writes_a_png_chart_of_the_ratios(tmp_path: Path) -> None:
    chart = tmp_path / "out" / "ratios.png"
    result = spanpool(
        "bench",
        "--only",
        "pools",
        "--scenario",
        "1",
        "--latency",
        "0",
        "--quick",
        "--seconds",
        "0.05",
        "--chart",
        str(chart),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    rows = report["suites"]["pools"]["rows"]
    assert {row["pool"] for row in rows} >= {"BurstyPool", "FixedSizePool", "PingingPool"}
    assert all(row["official_value"] and row["spanpool_value"] for row in rows)
    assert report["charts"] == {"ratios": str(chart)}
    data = chart.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 400 and height > 100
    assert data[-8:-4] == b"IEND"


def test_each_suite_gets_its_own_session_routing_and_leaves_the_environment_as_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pools suites run on regular sessions and the multiplexed suite on the client's
    defaults; one ``spanpool bench`` run does both in one process, in that order."""
    names = sorted(REGULAR_SESSIONS_ENV)
    monkeypatch.setenv(names[0], "true")  # set by the user
    for name in names[1:]:
        monkeypatch.delenv(name, raising=False)
    before = {name: os.environ.get(name) for name in names}

    with session_routing(regular=True):
        assert {name: os.environ.get(name) for name in names} == REGULAR_SESSIONS_ENV
    assert {name: os.environ.get(name) for name in names} == before

    with session_routing(regular=False):
        assert [name for name in names if name in os.environ] == []
    assert {name: os.environ.get(name) for name in names} == before

    with pytest.raises(RuntimeError), session_routing(regular=True):
        raise RuntimeError("a suite that failed")
    assert {name: os.environ.get(name) for name in names} == before
