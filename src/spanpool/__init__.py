"""spanpool: session pools for Cloud Spanner's Python client.

The pools are imported on first use (``from spanpool import MultiplexedPool`` imports that
pool, not every other).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import pools
from .errors import (
    NotCheckedOut,
    PoolClosed,
    PoolFull,
    PoolTimeout,
    PoolUsageError,
    SpanpoolError,
    StoreError,
)

if TYPE_CHECKING:
    from .cache import CacheSessionPool
    from .pools import *  # noqa: F403

__version__ = "0.1.0"

__all__ = [
    "CacheSessionPool",
    "NotCheckedOut",
    "PoolClosed",
    "PoolFull",
    "PoolTimeout",
    "PoolUsageError",
    "SpanpoolError",
    "StoreError",
    "__version__",
]
__all__ += pools.__all__  # the pools' names are listed once, in pools/__init__.py


def __getattr__(name: str) -> Any:
    if name == "CacheSessionPool":
        value = importlib.import_module(".cache", __name__).CacheSessionPool
    elif name in pools.__all__:
        value = getattr(pools, name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
