"""OpenTelemetry metrics for spanpool's pools, named by the ``db.client.connection.*``
conventions (a Spanner session plays the part of a connection).

Opt in once per process::

    import spanpool.metrics
    spanpool.metrics.instrument()                       # the global MeterProvider
    spanpool.metrics.instrument(meter_provider=provider)  # or a given one

Every pool alive then reports, at each collection, from its ``get_stats()``:

- ``db.client.connection.count`` (sessions, by ``db.client.connection.state``: ``idle`` or
  ``used``), ``db.client.connection.max`` (not for a pool without an upper bound, such as
  ``BurstyPool``), ``db.client.connection.pending_requests``;
- ``spanpool.sessions.creating`` (being created now);
- for a ``MultiplexedPool``: ``spanpool.multiplexed.age`` (seconds), ``spanpool.multiplexed.
  generation``, and the counters ``spanpool.multiplexed.requests``, ``...replacements``,
  ``...rotations`` and ``...store_errors``;

each with the attribute ``db.client.connection.pool.name``: the pool's class and database.
Nothing is measured on the checkout path: the instruments are observed only when the metrics
are collected.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from opentelemetry import metrics

from .stats import (
    GENERATION,
    POOL_AVAILABLE,
    POOL_CREATING,
    POOL_IN_MAINTENANCE,
    POOL_IN_USE,
    POOL_MAX,
    REQUESTS_SERVED,
    REQUESTS_WAITING,
    ROTATIONS,
    SESSION_AGE_S,
    SESSIONS_REPLACED,
    STORE_ERRORS,
    UNBOUNDED,
)

__all__ = ["instrument", "pool_name"]

_pools: weakref.WeakSet[Any] = weakref.WeakSet()
_lock = threading.Lock()
# The meter providers already instrumented, held weakly: an id() would be reused by a provider
# made after an instrumented one was freed, which then would never be instrumented.
_instrumented: weakref.WeakSet[Any] = weakref.WeakSet()


def track(pool: Any) -> None:
    """Called by every pool when it is made: report it once metrics are instrumented."""
    with _lock:
        _pools.add(pool)


def pool_name(pool: Any) -> str:
    """The ``db.client.connection.pool.name`` of a pool: its class, and its database once
    bound."""
    database = getattr(pool, "_database", None)
    where = getattr(database, "name", None) or "unbound"
    return f"{type(pool).__name__}:{where}"


def _live_stats() -> Iterator[tuple[dict[str, str], dict[str, int]]]:
    with _lock:
        pools = list(_pools)
    for pool in pools:
        try:
            stats = pool.get_stats()
        except Exception:  # a pool being torn down: skip it this time
            continue
        yield {"db.client.connection.pool.name": pool_name(pool)}, stats


def _count(_: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
    for attributes, stats in _live_stats():
        yield metrics.Observation(
            stats.get(POOL_AVAILABLE, 0), {**attributes, "db.client.connection.state": "idle"}
        )
        yield metrics.Observation(
            stats.get(POOL_IN_USE, 0) + stats.get(POOL_IN_MAINTENANCE, 0),
            {**attributes, "db.client.connection.state": "used"},
        )


def _max(_: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
    for attributes, stats in _live_stats():
        if stats.get(POOL_MAX, UNBOUNDED) != UNBOUNDED:
            yield metrics.Observation(stats[POOL_MAX], attributes)


def _pending(_: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
    for attributes, stats in _live_stats():
        yield metrics.Observation(stats.get(REQUESTS_WAITING, 0), attributes)


def _creating(_: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
    for attributes, stats in _live_stats():
        yield metrics.Observation(stats.get(POOL_CREATING, 0), attributes)


def _observe(key: str) -> Callable[[metrics.CallbackOptions], Iterable[metrics.Observation]]:
    """A callback observing ``key`` of the pools whose stats have it (the multiplexed ones)."""

    def callback(_: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        for attributes, stats in _live_stats():
            if key in stats:
                yield metrics.Observation(stats[key], attributes)

    return callback


def instrument(meter_provider: metrics.MeterProvider | None = None) -> None:
    """Report every spanpool pool of this process to ``meter_provider`` (the global one when
    None). Calling it again for the same provider does nothing."""
    provider = meter_provider or metrics.get_meter_provider()
    with _lock:
        if provider in _instrumented:
            return
        _instrumented.add(provider)
    from . import __version__

    meter = provider.get_meter("spanpool", __version__)
    meter.create_observable_up_down_counter(
        "db.client.connection.count",
        [_count],
        unit="{connection}",
        description="Sessions the pool holds, idle or in use.",
    )
    meter.create_observable_up_down_counter(
        "db.client.connection.max",
        [_max],
        unit="{connection}",
        description="Most sessions the pool may hold.",
    )
    meter.create_observable_up_down_counter(
        "db.client.connection.pending_requests",
        [_pending],
        unit="{request}",
        description="Requests waiting for a session.",
    )
    meter.create_observable_up_down_counter(
        "spanpool.sessions.creating",
        [_creating],
        unit="{connection}",
        description="Sessions being created for the pool.",
    )
    meter.create_observable_gauge(
        "spanpool.multiplexed.age",
        [_observe(SESSION_AGE_S)],
        unit="s",
        description="Age of the multiplexed session in use.",
    )
    meter.create_observable_gauge(
        "spanpool.multiplexed.generation",
        [_observe(GENERATION)],
        unit="{session}",
        description="Generation of the multiplexed session in use (1, then one per successor).",
    )
    for name, key, unit, description in [
        ("requests", REQUESTS_SERVED, "{request}", "Operations given the multiplexed session."),
        ("replacements", SESSIONS_REPLACED, "{session}", "Lost multiplexed sessions replaced."),
        ("rotations", ROTATIONS, "{session}", "Multiplexed sessions rotated for their age."),
        ("store_errors", STORE_ERRORS, "{error}", "Store steps of the pool that failed."),
    ]:
        meter.create_observable_counter(
            f"spanpool.multiplexed.{name}", [_observe(key)], unit=unit, description=description
        )
