"""spanpool: session pools for Cloud Spanner's Python client."""

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
from .pools import (
    AbstractSessionPool,
    AsyncAbstractSessionPool,
    AsyncBurstyPool,
    AsyncFixedSizePool,
    AsyncManagedPool,
    AsyncMultiplexedPool,
    AsyncPingingPool,
    AsyncSessionCheckout,
    AsyncTransactionPingingPool,
    BurstyPool,
    FixedSizePool,
    ManagedPool,
    MultiplexedPool,
    PingingPool,
    PoolForked,
    SessionCheckout,
    SessionLeakWarning,
    TransactionPingingPool,
)

__version__ = "0.1.0"

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
    "CacheSessionPool",
    "FixedSizePool",
    "ManagedPool",
    "MultiplexedPool",
    "NotCheckedOut",
    "PingingPool",
    "PoolClosed",
    "PoolForked",
    "PoolFull",
    "PoolTimeout",
    "PoolUsageError",
    "SessionCheckout",
    "SessionLeakWarning",
    "SpanpoolError",
    "StoreError",
    "TransactionPingingPool",
    "__version__",
]
