"""spanpool's session pools: the official client's pools, each a small policy over one core."""

from ._abstract import AbstractSessionPool, SessionCheckout
from ._managed import ManagedPool, PoolForked, SessionLeakWarning
from .policies import BurstyPool, FixedSizePool, PingingPool, TransactionPingingPool

__all__ = [
    "AbstractSessionPool",
    "BurstyPool",
    "FixedSizePool",
    "ManagedPool",
    "PingingPool",
    "PoolForked",
    "SessionCheckout",
    "SessionLeakWarning",
    "TransactionPingingPool",
]
