"""Defects of google-cloud-spanner 3.71 measured against a session-faithful server with the
unmodified client, when each one matters, and what spanpool does about it."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import spanpool

KNOWN_VERSION = "3.71."
"""The client minor version the defects below were measured on."""


@dataclass(frozen=True)
class Defect:
    id: str
    text: str
    road: str  # matters when an operation uses a "multiplexed" or a "regular" session, or when
    # "every" operation uses the multiplexed session
    remedy: str  # what spanpool offers
    provided_by: str  # the spanpool name that carries the remedy

    def relevant(self, roads: set[str]) -> bool:
        """Whether the defect matters when operations use the sessions of ``roads``."""
        if self.road == "every":
            return roads == {"multiplexed"}
        return self.road in roads

    @property
    def available(self) -> bool:
        """Whether the installed spanpool has the remedy."""
        if hasattr(spanpool, self.provided_by):
            return True
        return importlib.util.find_spec(f"spanpool.{self.provided_by}") is not None


DEFECTS: tuple[Defect, ...] = (
    Defect(
        "lost-multiplexed-session",
        "a multiplexed session the server has lost is never replaced: every later request "
        "fails with NotFound, and each failure creates (and leaks) a regular session",
        "multiplexed",
        "MultiplexedPool replaces a lost session once for every thread and process",
        "MultiplexedPool",
    ),
    Defect(
        "close-blocks",
        "Database.close() blocks up to 10 minutes (it joins a thread sleeping 600 s)",
        "multiplexed",
        "with MultiplexedPool, Database.close() returns within milliseconds",
        "MultiplexedPool",
    ),
    Defect(
        "dropped-database-leaks",
        "a Database dropped without close() is never collected: it leaks a thread and its "
        "session (the DB-API's connect() makes a new Database per connection)",
        "multiplexed",
        "MultiplexedPool runs one maintenance thread per process, whatever the Database count",
        "MultiplexedPool",
    ),
    Defect(
        "lazy-creation",
        "the multiplexed session is created on the first request's thread, under a lock: each "
        "new worker's first request waits for a CreateSession, and the weekly rotation stalls "
        "requests",
        "multiplexed",
        "MultiplexedPool creates at bind(), shares the session across processes through a "
        "store, and rotates without stalls",
        "MultiplexedPool",
    ),
    Defect(
        "unused-pool-filled",
        "a pool given as pool= still creates all its regular sessions, even when every "
        "operation goes to the multiplexed session",
        "every",
        "MultiplexedPool's fallback pool creates no session until an operation is routed to it",
        "MultiplexedPool",
    ),
    Defect(
        "fixed-size-pool-typeerror",
        "the official FixedSizePool raises a naive/aware datetime TypeError on a session's "
        "second use, and AsyncFixedSizePool on its first checkout",
        "regular",
        "spanpool.FixedSizePool and AsyncFixedSizePool keep their own times",
        "FixedSizePool",
    ),
    Defect(
        "bursty-pool-getsession",
        "the official BurstyPool sends a GetSession on every checkout",
        "regular",
        "spanpool's pools make no RPC on a warm checkout",
        "BurstyPool",
    ),
    Defect(
        "dbapi-connect",
        "the DB-API's connect() builds a new Client and Database per connection: each "
        "connection pays a CreateSession and leaks a thread",
        "multiplexed",
        "spanpool.dbapi.connect() reuses one Client and Database per process",
        "dbapi",
    ),
)
