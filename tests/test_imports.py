"""The package's names, imported on first use: every public name resolves, and a new worker
that imports one pool does not pay for the others (nor for redis, sqlite3, asyncio's pools)."""

from __future__ import annotations

import json
import subprocess
import sys

import spanpool
import spanpool.pools


def test_every_public_name_resolves() -> None:
    namespace: dict[str, object] = {}
    exec("from spanpool import *", namespace)
    assert set(spanpool.__all__) <= set(namespace)
    for name in spanpool.pools.__all__:
        assert getattr(spanpool.pools, name) is getattr(spanpool, name)
    assert spanpool.pools.CacheSessionPool is spanpool.CacheSessionPool
    assert set(spanpool.__all__) <= set(dir(spanpool))


def test_a_multiplexed_pool_imports_only_what_it_uses() -> None:
    code = (
        "import json, sys\n"
        "from spanpool import MultiplexedPool\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    loaded = set(json.loads(out))
    assert "spanpool.pools.multiplexed" in loaded
    unneeded = {
        "spanpool.core",  # the managed pools' core
        "spanpool.pools.base",
        "spanpool.pools.policies",
        "spanpool.pools.multiplexed_async",  # the other flavour
        "spanpool.cache.pool",  # CacheSessionPool
        "spanpool.cache.memory",
        "spanpool.cache.sqlite",
        "spanpool.cache.redis",
        "redis",
        "sqlite3",
        "multiprocessing",
    }
    assert loaded & unneeded == set()
