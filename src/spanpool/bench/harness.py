"""What the scenarios of the pool suites run on: the pools of both sides (the official client's
and spanpool's), the servers and databases of a run, how long to measure, and rounds that
take turns between the pools measured."""

from __future__ import annotations

import argparse
import functools
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from google.cloud.spanner_v1 import pool as official_pool

from spanpool.testing import REGULAR_SESSIONS_ENV, LocalSpanner, connect

from .progress import report
from .table import Failed, Metrics, attempt

try:
    from spanpool import BurstyPool, FixedSizePool, PingingPool, TransactionPingingPool
except ImportError as error:
    SPANPOOL_MISSING: str | None = str(error)
    SPANPOOL_POOLS: dict[str, Any] = {
        "BurstyPool": official_pool.BurstyPool,
        "FixedSizePool": official_pool.FixedSizePool,
        "PingingPool": official_pool.PingingPool,
        "TransactionPingingPool": official_pool.TransactionPingingPool,
    }
else:
    SPANPOOL_MISSING = None
    SPANPOOL_POOLS = {
        "BurstyPool": BurstyPool,
        "FixedSizePool": FixedSizePool,
        "PingingPool": PingingPool,
        "TransactionPingingPool": TransactionPingingPool,
    }

KINDS = ("BurstyPool", "FixedSizePool", "PingingPool", "TransactionPingingPool")
POOLS: dict[str, dict[str, Any]] = {
    "official": {kind: getattr(official_pool, kind) for kind in KINDS},
    "spanpool": SPANPOOL_POOLS,
}
SIDES = ("official", "spanpool")
LATENCIES_MS = (0.0, 5.0)
JOIN_SECONDS = 30.0  # how long a stuck get() or ping() is waited for before giving up on it

K = TypeVar("K")


@contextmanager
def session_routing(regular: bool) -> Iterator[None]:
    """Run a suite with the client's session variables set for it, and as they were after.

    ``regular``: every operation on regular sessions, so that the official ``Database`` uses
    the pool it is given (the pools suites). Otherwise the client's defaults, multiplexed
    sessions (the multiplexed suite), whatever the environment says. Restored afterwards, so
    that a later suite of the same ``spanpool bench`` run, and the processes it starts, get
    their own settings and not a previous suite's."""
    saved = {name: os.environ.get(name) for name in REGULAR_SESSIONS_ENV}
    for name, value in REGULAR_SESSIONS_ENV.items():
        if regular:
            os.environ[name] = value
        else:
            os.environ.pop(name, None)
    try:
        yield
    finally:
        for name, before in saved.items():
            if before is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = before


def progress(message: str) -> None:
    report("pools", message)


def fallback_warning() -> str | None:
    if SPANPOOL_MISSING is None:
        return None
    rule = "!" * 100
    return (
        f"{rule}\n"
        f"!! WARNING: spanpool's pools could not be imported ({SPANPOOL_MISSING}).\n"
        "!! The 'spanpool' column measures the OFFICIAL pools a second time: its numbers and\n"
        "!! ratios say nothing about spanpool.\n"
        f"{rule}"
    )


# -- how long and how often ----------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """How long and how often each scenario measures."""

    rounds: int  # rounds of the short timings (scenarios 1 and 4)
    slow_rounds: int  # rounds of the contention runs of scenario 3
    ping_rounds: int  # rounds of scenario 5 (each adds a few dozen get()s during ping())
    cycles: int  # get+put cycles per measurement of scenarios 1 and 2 ...
    cycle_seconds: float  # ... or fewer, when they take longer than this
    contention_seconds: float  # one run of scenario 3
    steady_seconds: float  # the steady-state window of scenario 5
    ping_sizes: tuple[int, ...] = (10, 50)


def settings_for(args: argparse.Namespace) -> Settings:
    if args.seconds is not None and args.seconds <= 0:
        raise SystemExit("--seconds must be > 0")
    seconds = args.seconds or (0.5 if args.quick else 2.0)
    return Settings(
        rounds=3 if args.quick else 7,
        slow_rounds=1 if args.quick else 3,
        ping_rounds=1 if args.quick else 15,
        cycles=2_000 if args.quick else 20_000,
        cycle_seconds=seconds / 8,
        contention_seconds=seconds,
        steady_seconds=max(0.1, seconds / 4),
    )


def interleaved(
    variants: Sequence[K],
    rounds: int,
    measure: Callable[[K], Metrics],
    before_round: Callable[[], None] | None = None,
) -> dict[K, list[Metrics] | Failed]:
    """``measure(variant)`` for every variant in every round, rounds visiting the variants in
    rotated orders so that none is always first; a variant that raises once is ``Failed``."""
    results: dict[K, list[Metrics] | Failed] = {variant: [] for variant in variants}
    for round_ in range(rounds if variants else 0):
        if before_round is not None:
            before_round()
        shift = round_ % len(variants)
        for variant in [*variants[shift:], *variants[:shift]]:
            done = results[variant]
            if isinstance(done, Failed):
                continue
            measured = attempt(functools.partial(measure, variant))
            if isinstance(measured, Failed):
                results[variant] = measured
            else:
                done.append(measured)
    return results


def measure_pools(
    pools: dict[K, Any],
    rounds: int,
    measure: Callable[[Any], Metrics],
    before_round: Callable[[], None] | None = None,
) -> dict[K, list[Metrics] | Failed]:
    """``interleaved`` over the pools that opened; the others keep their ``Failed``."""
    ready = [variant for variant, pool in pools.items() if not isinstance(pool, Failed)]
    results = interleaved(ready, rounds, lambda variant: measure(pools[variant]), before_round)
    return {v: pool if isinstance(pool, Failed) else results[v] for v, pool in pools.items()}


# -- pools, servers and databases ------------------------------------------------------------------


def pool_arguments(kind: str, size: int, ping_interval: int = 3000) -> dict[str, Any]:
    """The official constructor arguments of a pool of ``kind`` with ``size`` sessions, the
    same for both sides and both flavours."""
    if kind == "BurstyPool":
        return {"target_size": size}
    if kind == "FixedSizePool":
        return {"size": size, "default_timeout": 10, "max_age_minutes": 55}
    return {"size": size, "default_timeout": 10, "ping_interval": ping_interval}


def make_pool(side: str, kind: str, size: int = 10, ping_interval: int = 3000) -> Any:
    """An unbound pool of ``kind`` from ``side``, with the official constructor arguments."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TransactionPingingPool's
        return POOLS[side][kind](**pool_arguments(kind, size, ping_interval))


def dispose(pool: Any, delete_sessions: bool = True) -> None:
    """Stop ``pool``: ``close()`` when it has one, else ``clear()`` unless told to keep them."""
    try:
        close = getattr(pool, "close", None)
        if close is not None:
            close()
        elif delete_sessions:
            pool.clear()
    except Exception as exc:
        print(f"  (disposing a {type(pool).__name__} raised {exc!r})", file=sys.stderr)


def warm_database(endpoint: str, name: str) -> Any:
    """The official ``Database`` ``name`` on ``endpoint``, its gRPC channel already connected.

    Pools are bound to it explicitly, so that ``bind`` alone can be timed.
    """
    database = connect(endpoint, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        session = database.session()
    session.create()
    session.delete()
    return database


def open_store(kind: str, address: str) -> Any:
    """A new connection to the shared store of ``kind`` (``"memory"``, ``"sqlite"`` or
    ``"redis"``) at ``address`` (a file, a URL); None for ``""`` (no store)."""
    if not kind:
        return None
    from spanpool import stores

    if kind == "memory":
        return stores.MemoryStore()
    if kind == "sqlite":
        return stores.SQLiteStore(address)
    return stores.RedisStore(address)


@contextmanager
def bound_pools(
    database: Any, variants: Sequence[tuple[str, str]], **options: Any
) -> Iterator[dict[tuple[str, str], Any]]:
    """Pools for ``(side, kind)`` variants, bound to ``database`` and warmed by one checkout.

    A variant whose pool fails to bind or to check out maps to ``Failed``.
    """
    pools: dict[tuple[str, str], Any] = {}

    def open_pool(side: str, kind: str) -> Any:
        pool = make_pool(side, kind, **options)
        pools[(side, kind)] = pool
        pool.bind(database)
        pool.put(pool.get())
        return pool

    opened = {variant: attempt(functools.partial(open_pool, *variant)) for variant in variants}
    try:
        yield opened
    finally:
        for pool in pools.values():
            dispose(pool)


@contextmanager
def unbound_pool(variant: tuple[str, str], size: int) -> Iterator[Any]:
    """A pool for ``(side, kind)``, stopped afterwards without deleting its sessions."""
    pool = make_pool(*variant, size=size)
    try:
        yield pool
    finally:
        dispose(pool, delete_sessions=False)


class Bench:
    """The servers of one run, the databases on them, and how long to measure."""

    def __init__(self, settings: Settings, endpoints: dict[float, str], counter: LocalSpanner):
        self.settings = settings
        self.endpoints = endpoints
        self.counter = counter
        self._databases: dict[tuple[str, str], Any] = {}

    def database(self, latency_ms: float, name: str = "bench") -> Any:
        """A database on the timing server with ``latency_ms`` of injected latency."""
        return self._database(self.endpoints[latency_ms], name)

    def counted_database(self, name: str = "bench") -> Any:
        """A database on the in-process LocalSpanner, whose requests are counted."""
        return self._database(self.counter.endpoint, name)

    def _database(self, endpoint: str, name: str) -> Any:
        if (endpoint, name) not in self._databases:
            self._databases[(endpoint, name)] = warm_database(endpoint, name)
        return self._databases[(endpoint, name)]
