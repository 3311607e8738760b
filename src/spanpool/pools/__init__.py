"""spanpool's session pools: the official client's pools, each a small policy over one core.

The asyncio pools (``*_async.py``) are the source of the blocking ones, which
``tools/async_to_sync.py`` generates from them.
"""

from ..errors import PoolForked, SessionLeakWarning
from ._abstract import AbstractSessionPool, SessionCheckout
from ._abstract_async import AsyncAbstractSessionPool, AsyncSessionCheckout
from ._managed import ManagedPool
from ._managed_async import AsyncManagedPool
from .cache import CacheSessionPool, MaintenanceReport
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
    "AsyncPingingPool",
    "AsyncSessionCheckout",
    "AsyncTransactionPingingPool",
    "BurstyPool",
    "CacheSessionPool",
    "FixedSizePool",
    "MaintenanceReport",
    "ManagedPool",
    "PingingPool",
    "PoolForked",
    "SessionCheckout",
    "SessionLeakWarning",
    "TransactionPingingPool",
]
