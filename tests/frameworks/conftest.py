from __future__ import annotations

from collections.abc import Iterator

import pytest

from spanpool.frameworks import _shared


@pytest.fixture(autouse=True)
def _fresh_shared_state() -> Iterator[None]:
    """Each test starts with no shared client or database (each has its own server)."""
    yield
    _shared.close_all()
