"""``CacheSessionPool``: one session pool shared by many processes and hosts through a store.

- ``store.py``: the contract every store meets, each operation one atomic step;
- ``memory.py``, ``sqlite.py``, ``redis.py``: the stores (one process; one host through a SQLite
  file; many hosts through Redis);
- ``pool.py``: the pool over a store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .memory import MemoryStore
from .pool import CacheSessionPool, MaintenanceReport
from .store import Acquired, Claim, Holder, SessionRecord, Store, StoreStats

if TYPE_CHECKING:
    from .redis import RedisStore
    from .sqlite import SQLiteStore

__all__ = [
    "Acquired",
    "CacheSessionPool",
    "Claim",
    "Holder",
    "MaintenanceReport",
    "MemoryStore",
    "RedisStore",
    "SQLiteStore",
    "SessionRecord",
    "Store",
    "StoreStats",
]


def __getattr__(name: str) -> Any:
    # Imported on first use, so that spanpool works without the redis package.
    if name == "SQLiteStore":
        from .sqlite import SQLiteStore

        return SQLiteStore
    if name == "RedisStore":
        from .redis import RedisStore

        return RedisStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
