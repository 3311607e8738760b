"""``spanpool bench --chart`` runs a side-by-side scenario and writes a PNG of the ratios."""

from __future__ import annotations

import json
import struct
from pathlib import Path

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
