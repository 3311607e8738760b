"""spanpool's session pools: the official client's pools, each a small policy over one core.

The asyncio pools (``*_async.py``) are the source of the blocking ones, which
``tools/async_to_sync.py`` generates from them.
"""

from ..errors import PoolForked, SessionLeakWarning
from .abstract import AbstractSessionPool, SessionCheckout
from .abstract_async import AsyncAbstractSessionPool, AsyncSessionCheckout
from .base import ManagedPool
from .base_async import AsyncManagedPool
from .multiplexed import MultiplexedPool
from .multiplexed_async import AsyncMultiplexedPool
from .policies import BurstyPool, FixedSizePool, PingingPool, TransactionPingingPool
from .policies_async import (
    AsyncBurstyPool,
    AsyncFixedSizePool,
    AsyncPingingPool,
    AsyncTransactionPingingPool,
)

__all__ = [
    "AbstractSessionPool",
    "AsyncAbstractSessionPool",
    "AsyncBurstyPool",
    "AsyncFixedSizePool",
    "AsyncManagedPool",
    "AsyncMultiplexedPool",
    "AsyncPingingPool",
    "AsyncSessionCheckout",
    "AsyncTransactionPingingPool",
    "BurstyPool",
    "FixedSizePool",
    "ManagedPool",
    "MultiplexedPool",
    "PingingPool",
    "PoolForked",
    "SessionCheckout",
    "SessionLeakWarning",
    "TransactionPingingPool",
]


def __getattr__(name: str) -> object:
    # CacheSessionPool lives in spanpool.cache; still reachable from here as before.
    if name in ("CacheSessionPool", "MaintenanceReport"):
        from .. import cache

        return getattr(cache, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
