"""``CacheSessionPool``: one session pool shared by many processes and hosts through a store.

- ``pool.py``: the pool (acquire, release, warmup, downsize, clear, stats);
- ``maintain.py``: ``maintain()`` and the time rules (refresh spreading, replacing old sessions,
  auto-downsizing, taking back the claims of dead holders);
- ``_steps.py``: running store steps, the journal of steps to retry, in-flight tokens;
- ``_creating.py``: new sessions under creation permits; ``_held.py``: what this process holds
  (returned at exit, forgotten after fork);
- ``store.py``: the contract every store meets, each operation one atomic step;
- ``memory.py``, ``sqlite.py`` (with ``_sqlite_file.py``), ``redis.py`` (with its scripts in
  ``redis.lua``): the stores, for one process, one host, many hosts.

Users reach the stores through :mod:`spanpool.stores`.
"""

from __future__ import annotations

from .maintain import MaintenanceReport
from .pool import CacheSessionPool

__all__ = ["CacheSessionPool", "MaintenanceReport"]
