"""spanpool: session pools for Cloud Spanner's Python client."""

from .errors import (
    NotCheckedOut,
    PoolClosed,
    PoolFull,
    PoolTimeout,
    PoolUsageError,
    SpanpoolError,
)
from .pools import (
    AbstractSessionPool,
    BurstyPool,
    FixedSizePool,
    ManagedPool,
    PingingPool,
    PoolForked,
    SessionCheckout,
    SessionLeakWarning,
    TransactionPingingPool,
)

__version__ = "0.1.0"

__all__ = [
    "AbstractSessionPool",
    "BurstyPool",
    "FixedSizePool",
    "ManagedPool",
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
    "TransactionPingingPool",
    "__version__",
]
