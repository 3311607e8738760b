"""The multiplexed session of one key as this process knows it, shared by every
``MultiplexedPool`` of the key: the record in use and its generation, the creation in flight,
the sessions known lost, the schedule of retries, rotation and store reads.

A key is (server, database, role); without a store its session is shared by the pools of the
process, with one by every process and host using the store. Both flavours use these objects
(they hold no event loop: waiting is on a ``concurrent.futures.Future``).
"""

from __future__ import annotations

import concurrent.futures
import math
import random
import threading
import weakref
from collections import deque
from typing import Any

from .._lifecycle import after_fork_in_child
from ..cache.store import MultiplexedRecord

_DAY = 86_400.0
ROTATE_AFTER = 7 * _DAY
"""A multiplexed session is replaced by a successor after this long (plus up to 10 %)."""
ROTATE_JITTER = 0.1
USABLE_FOR = 27 * _DAY
"""Cloud Spanner keeps a multiplexed session 28 days: one this old is never used again."""
LOST_KEPT = 8
"""Names of lost sessions remembered per key, so that a store still naming one is not
believed."""


class SharedSession:
    """What this process knows of the multiplexed session of one key. Its fields change under
    ``lock``; the hot path reads ``record`` without it (one attribute read)."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.lock = threading.Lock()
        self.record: MultiplexedRecord | None = None
        self.attempt: concurrent.futures.Future[MultiplexedRecord | None] | None = None
        self.last_error: BaseException | None = None
        self.failures = 0
        self.retry_at = -math.inf  # no creation starts before this (backoff)
        self.rotate_at = math.inf
        self.poll_at = -math.inf
        self.store_down_until = -math.inf
        self.unpublished = False  # the record in use is not in the store (it was failing)
        self.lost: deque[str] = deque(maxlen=LOST_KEPT)
        self.generation = 0  # the highest seen
        self.created = 0
        self.replaced = 0
        self.rotations = 0
        self.store_errors = 0

    def adopt_locked(self, record: MultiplexedRecord, rotate_after: float) -> bool:
        """Use ``record`` from now on, unless it is the one in use or known lost; its rotation
        is due ``rotate_after`` seconds (plus jitter) after its creation."""
        current = self.record
        if record.name in self.lost or (current is not None and current.name == record.name):
            return False
        self.record = record
        self.generation = max(self.generation, record.generation)
        span = rotate_after * (1.0 + random.uniform(0.0, ROTATE_JITTER))
        self.rotate_at = record.created_at + span
        return True

    def drop(self, name: str) -> tuple[bool, bool]:
        """The server no longer has session ``name``: forget it if it is the one in use.

        Returns (ours, dropped): whether ``name`` is one of the key's sessions, in use or
        older, and whether it was the one in use (then the caller starts its replacement).
        Session names are never reused, so a late report about an older session drops
        nothing: this is the generation check."""
        with self.lock:
            current = self.record
            ours = name in self.lost or (current is not None and current.name == name)
            if current is None or current.name != name:
                return ours, False
            self.record = None
            self.lost.append(name)
        return True, True

    def forget_fork(self) -> None:
        # A forked child: the parent's lock may have been held, and its creation in flight
        # does not exist here.
        self.lock = threading.Lock()
        self.attempt = None


def usable(record: MultiplexedRecord, now: float) -> bool:
    """Whether ``record`` is young enough to be used (the server keeps it 28 days)."""
    return now - record.created_at < USABLE_FOR


UNBOUND = SharedSession("")
"""The shared session of a pool not bound yet: no session, nothing in flight."""

_local: dict[str, SharedSession] = {}
_by_store: weakref.WeakKeyDictionary[Any, dict[str, SharedSession]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def shared_session(store: Any, key: str) -> SharedSession:
    """The process's entry for ``key`` (kept as long as its store lives; without a store, for
    the life of the process, so that a ``Database`` made after the previous one was dropped
    finds the session at once)."""
    with _lock:
        entries = _local if store is None else _by_store.setdefault(store, {})
        entry = entries.get(key)
        if entry is None:
            entry = entries[key] = SharedSession(key)
        return entry


def _forget_fork() -> None:
    global _lock
    _lock = threading.Lock()
    for entries in [_local, *_by_store.values()]:
        for entry in entries.values():
            entry.forget_fork()


after_fork_in_child(_forget_fork)
