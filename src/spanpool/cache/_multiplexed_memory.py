"""``MemoryStore``'s steps for ``MultiplexedPool`` (``MultiplexedStore``): one record per key,
under the store's lock."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import TypeVar

from ..errors import StoreError
from .store import Holder, MultiplexedClaim, MultiplexedRecord, new_token

T = TypeVar("T")


@dataclasses.dataclass
class _Multiplexed:
    record: MultiplexedRecord | None = None
    lease_token: str | None = None
    lease_holder: Holder | None = None
    lease_until: float = 0.0


class MultiplexedMemory:
    """The ``MultiplexedStore`` steps, and how ``MemoryStore`` finds a key's state."""

    _lock: threading.Lock
    _closed: bool
    _multiplexed: dict[str, _Multiplexed]

    def _entry(self, table: dict[str, T], key: str, make: Callable[[], T]) -> T:
        """The state of ``key`` in ``table``, made when there is none; StoreError once the
        store is closed. Call it with ``_lock`` held."""
        if self._closed:
            raise StoreError(f"{self!r} is closed")
        state = table.get(key)
        if state is None:
            state = table[key] = make()
        return state

    def _multiplexed_state(self, key: str) -> _Multiplexed:
        return self._entry(self._multiplexed, key, _Multiplexed)

    def multiplexed_get(self, key: str) -> MultiplexedRecord | None:
        with self._lock:
            return self._multiplexed_state(key).record

    def multiplexed_claim(
        self, key: str, *, holder: Holder, now: float, lease: float, replacing: str | None
    ) -> MultiplexedClaim:
        with self._lock:
            state = self._multiplexed_state(key)
            record = state.record
            leased = state.lease_token is not None and state.lease_until > now
            due = record is None or (replacing is not None and record.name == replacing)
            if leased or not due:
                return MultiplexedClaim(None, record)
            state.lease_token = new_token()
            state.lease_holder = holder
            state.lease_until = now + lease
            return MultiplexedClaim(state.lease_token, record)

    def multiplexed_publish(
        self, key: str, token: str, *, name: str, created_at: float
    ) -> MultiplexedRecord | None:
        with self._lock:
            state = self._multiplexed_state(key)
            if state.lease_token != token:
                return None
            generation = (state.record.generation if state.record else 0) + 1
            state.record = MultiplexedRecord(name, created_at, generation)
            state.lease_token, state.lease_holder, state.lease_until = None, None, 0.0
            return state.record

    def multiplexed_abandon(self, key: str, token: str) -> None:
        with self._lock:
            state = self._multiplexed_state(key)
            if state.lease_token == token:
                state.lease_token, state.lease_holder, state.lease_until = None, None, 0.0
