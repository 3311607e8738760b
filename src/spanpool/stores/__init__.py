"""Shared stores for ``CacheSessionPool``: where the pool's state lives.

- ``MemoryStore()``: one process.
- ``SQLiteStore(path)``: many processes on one host, through one SQLite file.
- ``RedisStore(url_or_client)``: many hosts, through a Redis server (needs the ``redis``
  package: ``pip install spanpool[redis]``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._base import Acquired, Claim, Holder, SessionRecord, Store, StoreStats
from .memory import MemoryStore

if TYPE_CHECKING:
    from .redis import RedisStore
    from .sqlite import SQLiteStore

__all__ = [
    "Acquired",
    "Claim",
    "Holder",
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
