"""``CacheSessionPool``: one session pool shared by many processes and hosts through a store.

- ``pool.py``: the pool (acquire, release, warmup, downsize, clear, stats);
- ``_leases.py``: the warm road (sessions kept checked out to this process, handed out with no
  store step) and ``_wants.py``, the thread that gives them back when another holder wants one;
- ``_checkout.py``: acquire and release through the store;
- ``maintain.py``: ``maintain()`` and the time rules (refresh spreading, replacing old sessions,
  auto-downsizing, taking back the claims of dead holders);
- ``_steps.py``: running store steps, the journal of steps to retry, in-flight tokens;
- ``_creating.py``: new sessions under creation permits; ``_held.py``: what this process holds
  (returned at exit, forgotten after fork); ``_reconcile.py``: settling a store that lost its
  state with the server;
- ``store.py``: the contract every store meets, each operation one atomic step;
- ``memory.py``, ``sqlite.py`` (with ``_sqlite_sql.py`` and ``_sqlite_file.py``), ``redis.py``
  (with ``_redis_scripts.py`` and the scripts in ``redis.lua``): the stores, for one process,
  one host, many hosts; ``_multiplexed_*.py``: their steps for ``MultiplexedPool``.

Users reach the stores through :mod:`spanpool.stores`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

if TYPE_CHECKING:
    from .maintain import MaintenanceReport
    from .pool import CacheSessionPool

__all__ = ["CacheSessionPool", "MaintenanceReport"]


# Imported on first use: a MultiplexedPool needs the stores of this folder, not the pool.
__getattr__, __dir__ = lazy_names(
    globals(), {".pool": ("CacheSessionPool",), ".maintain": ("MaintenanceReport",)}
)
