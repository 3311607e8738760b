"""Opening a shared store by kind and address: plain arguments, as worker processes get them."""

from __future__ import annotations

from typing import Any


def open_store(kind: str, address: str) -> Any:
    """A SQLiteStore on the file ``address``, or a RedisStore on the URL ``address``."""
    if kind == "sqlite":
        from spanpool.stores import SQLiteStore

        return SQLiteStore(address)
    from spanpool.stores import RedisStore

    return RedisStore(address)
