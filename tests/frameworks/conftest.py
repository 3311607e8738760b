from __future__ import annotations

from collections.abc import Iterator

import pytest

from spanpool.frameworks import _shared

from ._support import QUIET_METRICS


@pytest.fixture(autouse=True)
def _fresh_shared_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with no shared client or database (each has its own server), and
    without the client's built-in metrics."""
    for name, value in QUIET_METRICS.items():
        monkeypatch.setenv(name, value)
    yield
    _shared.close_all()
