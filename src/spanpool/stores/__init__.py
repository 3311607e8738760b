"""Shared stores for ``CacheSessionPool``: where the pool's state lives.

- ``MemoryStore()``: one process.
- ``SQLiteStore(path)``: many processes on one host, through one SQLite file.
- ``RedisStore(url_or_client)``: many hosts, through a Redis server (needs the ``redis``
  package: ``pip install spanpool[redis]``).

They live in :mod:`spanpool.cache` beside the pool; this module names them for users.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names
from ..cache.memory import MemoryStore
from ..cache.store import (
    NOBODY,
    Acquired,
    Adoption,
    Checkout,
    Claim,
    Holder,
    SessionRecord,
    Store,
    StoreStats,
    TakeIdle,
)

if TYPE_CHECKING:
    from ..cache.redis import RedisStore
    from ..cache.sqlite import SQLiteStore

__all__ = [
    "NOBODY",
    "Acquired",
    "Adoption",
    "Checkout",
    "Claim",
    "Holder",
    "MemoryStore",
    "RedisStore",
    "SQLiteStore",
    "SessionRecord",
    "Store",
    "StoreStats",
    "TakeIdle",
]


# Imported on first use, so that spanpool works without the redis package.
__getattr__, __dir__ = lazy_names(
    globals(), {"..cache.sqlite": ("SQLiteStore",), "..cache.redis": ("RedisStore",)}
)
