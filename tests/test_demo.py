"""``spanpool demo``: the main road, one multiplexed session, lost and replaced mid-run."""

from __future__ import annotations

import io
import sys

import pytest

from spanpool.demo import run_demo


def test_the_demo_runs_on_a_multiplexed_session_and_survives_its_loss(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    assert run_demo(threads=2, seconds=0.6, accounts=4) == 0
    text = out.getvalue()
    assert "MultiplexedPool bound" in text
    assert "the server lost multiplexed session" in text and "one successor for all" in text
    assert "regular sessions on the server after close(): 0" in text
    assert text.rstrip().splitlines()[-1].startswith("OK: the total balance is kept")
