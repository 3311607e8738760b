"""The one in-process concurrency structure every pool shares: idle sessions (LIFO or LRU),
fair FIFO waiters with direct hand-off, capacity accounting, an injectable clock. No I/O, no
Spanner: it works for threads and asyncio tasks alike."""

from .core import PoolCore
from .state import Clock, CreationPermit, IdleOrder, Served
from .waiters import AsyncDeadlines, AsyncWaiter, ThreadWaiter, Waiter

__all__ = [
    "AsyncDeadlines",
    "AsyncWaiter",
    "Clock",
    "CreationPermit",
    "IdleOrder",
    "PoolCore",
    "Served",
    "ThreadWaiter",
    "Waiter",
]
