"""spanpool: session pools for Cloud Spanner's Python client."""

from . import pools
from .cache import CacheSessionPool
from .errors import (
    NotCheckedOut,
    PoolClosed,
    PoolFull,
    PoolTimeout,
    PoolUsageError,
    SpanpoolError,
    StoreError,
)
from .pools import *  # noqa: F403 (the pools' names are listed once, in pools/__init__.py)

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
__all__ += pools.__all__
