"""spanpool's session pools: the official client's pools, each a small policy over one core.

The asyncio pools (``*_async.py``) are the source of the blocking ones, which
``tools/async_to_sync.py`` generates from them.

Each name is imported on first use, so that an application using one kind of pool (a new
worker's ``MultiplexedPool``, say) does not import the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

if TYPE_CHECKING:
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

_MODULES = {
    "..errors": ("PoolForked", "SessionLeakWarning"),
    ".abstract": ("AbstractSessionPool", "SessionCheckout"),
    ".abstract_async": ("AsyncAbstractSessionPool", "AsyncSessionCheckout"),
    ".base": ("ManagedPool",),
    ".base_async": ("AsyncManagedPool",),
    ".multiplexed": ("MultiplexedPool",),
    ".multiplexed_async": ("AsyncMultiplexedPool",),
    ".policies": ("BurstyPool", "FixedSizePool", "PingingPool", "TransactionPingingPool"),
    ".policies_async": (
        "AsyncBurstyPool",
        "AsyncFixedSizePool",
        "AsyncPingingPool",
        "AsyncTransactionPingingPool",
    ),
    # CacheSessionPool lives in spanpool.cache; still reachable from here as before.
    "..cache": ("CacheSessionPool", "MaintenanceReport"),
}
__getattr__, __dir__ = lazy_names(globals(), _MODULES)
