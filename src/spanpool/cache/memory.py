"""A store in this process's memory: the reference for the shared stores' semantics."""

from __future__ import annotations

import dataclasses
import threading
from typing import TYPE_CHECKING

from ._multiplexed_memory import MultiplexedMemory
from .store import NOBODY, Acquired, Claim, ClosingHooks, SessionRecord, StoreStats, new_token

if TYPE_CHECKING:
    from .store import Adoption, Checkout, Holder, TakeIdle


@dataclasses.dataclass
class _PoolState:
    idle: dict[str, SessionRecord] = dataclasses.field(default_factory=dict)
    in_use: dict[str, tuple[SessionRecord, Claim]] = dataclasses.field(default_factory=dict)
    permits: dict[str, Claim] = dataclasses.field(default_factory=dict)
    window_start: float | None = None
    high_water: int = 0
    releases: int = 0
    wants: int = 0
    epoch: str | None = None
    lease: str | None = None  # the token of a reconciliation under way
    lease_until: float = 0.0

    def must_reconcile(self, now: float) -> bool:
        return self.epoch is None or (self.lease is not None and now >= self.lease_until)

    def total(self) -> int:
        return len(self.idle) + len(self.in_use) + len(self.permits)

    def checked_out(self, name: str, token: str) -> tuple[SessionRecord, Claim] | None:
        entry = self.in_use.get(name)
        return entry if entry is not None and entry[1].token == token else None


class MemoryStore(MultiplexedMemory, ClosingHooks):
    """Keeps pool state in a dict guarded by one lock: for pools used by one process only."""

    in_memory = True
    """Its steps do no I/O and never wait long: an asyncio pool runs them on its loop."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._released = threading.Condition(self._lock)
        self._pools: dict[str, _PoolState] = {}
        self._multiplexed = {}
        self._closed = False
        self._identity = f"memory:{new_token()}"

    @property
    def identity(self) -> str:
        """This store object (a memory store is seen by one process only)."""
        return self._identity

    def _state(self, key: str) -> _PoolState:
        return self._entry(self._pools, key, _PoolState)

    def acquire(self, key: str, checkout: Checkout) -> Acquired:
        holder, now, reclaim_before = checkout.holder, checkout.now, checkout.reclaim_before
        expired_before, retire_before = checkout.expired_before, checkout.retire_before
        with self._lock:
            state = self._state(key)
            if state.must_reconcile(now):
                return Acquired(releases=state.releases, reset=True)
            if state.window_start is None:
                state.window_start = now
            dropped = tuple(
                entry
                for entry in state.idle.values()
                if entry.last_used < expired_before or entry.created_at < retire_before
            )
            for entry in dropped:
                del state.idle[entry.name]
            for token in [t for t, c in state.permits.items() if c.since < reclaim_before]:
                del state.permits[token]
            token = new_token()
            record: SessionRecord | None = None
            reclaimed = False
            if state.idle:
                record = max(state.idle.values(), key=lambda r: r.last_used)
                del state.idle[record.name]
            elif state.lease is None and state.total() < checkout.max_sessions:
                state.permits[token] = Claim(token, holder, now)
            else:
                stale = [(c.since, n) for n, (_, c) in state.in_use.items()]
                stale = [entry for entry in stale if entry[0] < reclaim_before]
                if not stale:
                    state.wants += 1
                    self._released.notify_all()
                    return Acquired(dropped=dropped, releases=state.releases, wants=state.wants)
                record = state.in_use.pop(min(stale)[1])[0]
                reclaimed = True
            if record is not None:
                state.in_use[record.name] = (record, Claim(token, holder, now, record.name))
                state.high_water = max(state.high_water, len(state.in_use))
            free = 0 if state.lease is not None else checkout.max_sessions - state.total()
            spare = len(state.idle) + max(0, free)
            return Acquired(
                record, token, dropped, reclaimed, state.releases, spare, wants=state.wants
            )

    def start_reconcile(
        self, key: str, *, now: float, lease_seconds: float, force: bool
    ) -> str | None:
        with self._lock:
            state = self._state(key)
            if state.epoch is None:
                state.epoch = new_token()
            elif (now < state.lease_until) if state.lease is not None else not force:
                return None  # another process is reconciling, or nothing calls for it
            state.lease, state.lease_until = new_token(), now + lease_seconds
            return state.lease

    def adopt(self, key: str, adoption: Adoption) -> list[str] | None:
        with self._lock:
            state = self._state(key)
            if state.lease is None or state.lease != adoption.lease:
                return None
            refused: list[str] = []
            for record in adoption.records:
                old = state.in_use.get(record.name)
                if record.name in state.idle or old is not None:
                    if (
                        old is not None
                        and old[1].holder == NOBODY
                        and record.last_used < adoption.idle_before
                    ):
                        del state.in_use[record.name]
                        state.idle[record.name] = dataclasses.replace(
                            old[0], last_used=record.last_used
                        )
                elif state.total() >= adoption.max_sessions:
                    refused.append(record.name)
                elif record.last_used < adoption.idle_before:
                    state.idle[record.name] = record
                else:
                    claim = Claim(new_token(), NOBODY, record.last_used, record.name)
                    state.in_use[record.name] = (record, claim)
            state.lease = None
            self._freed(state)
            return refused

    def created(
        self, key: str, token: str, record: SessionRecord, *, now: float, check_out: bool
    ) -> bool:
        with self._lock:
            state = self._state(key)
            permit = state.permits.pop(token, None)
            if permit is None:
                return False
            if check_out:
                claim = Claim(token, permit.holder, now, record.name)
                state.in_use[record.name] = (record, claim)
                state.high_water = max(state.high_water, len(state.in_use))
            else:
                state.idle[record.name] = record
                self._freed(state)
            return True

    def create_failed(self, key: str, token: str) -> None:
        with self._lock:
            state = self._state(key)
            if state.permits.pop(token, None) is not None:
                self._freed(state)

    def reserve(
        self, key: str, *, holder: Holder, now: float, target: int, max_sessions: int
    ) -> list[str]:
        with self._lock:
            state = self._state(key)
            if state.epoch is None or state.lease is not None:
                return []
            count = max(0, min(target, max_sessions) - state.total())
            tokens = [new_token() for _ in range(count)]
            for token in tokens:
                state.permits[token] = Claim(token, holder, now)
            return tokens

    def release(self, key: str, name: str, token: str, *, now: float) -> bool:
        with self._lock:
            state = self._state(key)
            entry = state.checked_out(name, token)
            if entry is not None:
                del state.in_use[name]
                state.idle[name] = dataclasses.replace(entry[0], last_used=now)
                self._freed(state)
            return entry is not None

    def keep_alive(self, key: str, name: str, token: str, *, now: float) -> bool:
        with self._lock:
            state = self._state(key)
            entry = state.checked_out(name, token)
            if entry is not None:
                state.in_use[name] = (entry[0], dataclasses.replace(entry[1], since=now))
            return entry is not None

    def discard(self, key: str, name: str, token: str) -> bool:
        with self._lock:
            state = self._state(key)
            if state.checked_out(name, token) is None:
                return False
            del state.in_use[name]
            self._freed(state)
            return True

    def _freed(self, state: _PoolState) -> None:
        # A session is idle again, or a place under max_sessions is free: wake the waiters.
        state.releases += 1
        self._released.notify_all()

    def take_idle(self, key: str, take: TakeIdle) -> list[tuple[SessionRecord, str | None]]:
        with self._lock:
            state = self._state(key)
            limit = min(take.limit, state.total() - take.keep)
            taken: list[tuple[SessionRecord, str | None]] = []
            for record in sorted(state.idle.values(), key=lambda r: r.last_used):
                if len(taken) >= limit:
                    break
                if take.last_used_before is not None and record.last_used >= take.last_used_before:
                    continue
                if take.created_before is not None and record.created_at >= take.created_before:
                    continue
                del state.idle[record.name]
                token: str | None = None
                if take.holder is not None:
                    token = new_token()
                    claim = Claim(token, take.holder, take.now, record.name)
                    state.in_use[record.name] = (record, claim)
                taken.append((record, token))
            return taken

    def roll_window(self, key: str, *, now: float, length: float) -> int | None:
        with self._lock:
            state = self._state(key)
            if state.window_start is None:
                state.window_start = now
                state.high_water = len(state.in_use)
                return None
            if now - state.window_start < length:
                return None
            high_water = state.high_water
            state.window_start = now
            state.high_water = len(state.in_use)
            return high_water

    def claims(self, key: str) -> list[Claim]:
        with self._lock:
            state = self._state(key)
            return [claim for _, claim in state.in_use.values()] + list(state.permits.values())

    def reclaim(self, key: str, tokens: list[str], *, now: float) -> int:
        wanted = set(tokens)
        with self._lock:
            state = self._state(key)
            found = 0
            for name, (record, claim) in list(state.in_use.items()):
                if claim.token in wanted:
                    del state.in_use[name]
                    state.idle[name] = record
                    found += 1
            for token in wanted & state.permits.keys():
                del state.permits[token]
                found += 1
            if found:
                self._freed(state)
            return found

    def clear(self, key: str) -> list[SessionRecord]:
        with self._lock:
            state = self._pools.pop(key, None)
            if state is None:
                return []
            self._released.notify_all()
            return list(state.idle.values()) + [record for record, _ in state.in_use.values()]

    def stats(self, key: str) -> StoreStats:
        with self._lock:
            state = self._state(key)
            return StoreStats(
                idle=len(state.idle),
                in_use=len(state.in_use),
                creating=len(state.permits),
                high_water=state.high_water,
                window_start=state.window_start,
            )

    def wait_for_release(self, key: str, timeout: float, releases: int) -> bool:
        with self._lock:
            return self._released.wait_for(
                lambda: self._closed or self._state(key).releases > releases, timeout
            )

    def wait_for_want(self, key: str, timeout: float, wants: int) -> int:
        with self._lock:
            state = self._state(key)
            self._released.wait_for(lambda: self._closed or state.wants != wants, timeout)
            return self._state(key).wants

    def close(self) -> None:
        self._before_closing()
        with self._lock:
            self._closed = True
            self._released.notify_all()

    def __repr__(self) -> str:
        return f"<MemoryStore pools={len(self._pools)}>"
