"""The pool tests written once, as asyncio sources (``*_async.py``), run as they are here, and
as the blocking modules ``tools/async_to_sync.py`` generates from them."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run an ``async def`` test in an event loop of its own, with a deadline: a scenario
    stuck for ever fails instead of hanging."""
    test = pyfuncitem.obj
    if not inspect.iscoroutinefunction(test):
        return None
    arguments: dict[str, Any] = {
        name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames
    }
    asyncio.run(asyncio.wait_for(test(**arguments), 60))
    return True
