"""spanpool: session pools for Cloud Spanner's Python client.

The pools are imported on first use (``from spanpool import MultiplexedPool`` imports that
pool, not every other).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import pools
from ._lazy import lazy_names
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


__getattr__, __dir__ = lazy_names(
    globals(), {".cache": ("CacheSessionPool",), ".pools": pools.__all__}
)
