"""Random sequences of store steps, run on ``MemoryStore`` (the reference) and on a shared store
side by side: every result must agree, and the pool's invariants must hold after each step.

Tokens are random, so the machine pairs each token of the store under test with the reference's
token handed out by the same step. Steps mostly use live claims (read from the reference's
state), sometimes stale or unknown ones, which both stores must refuse alike.
"""

from __future__ import annotations

import itertools
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from spanpool.stores import (
    NOBODY,
    Adoption,
    Checkout,
    Claim,
    Holder,
    MemoryStore,
    SessionRecord,
    SQLiteStore,
    Store,
    TakeIdle,
)

from ._epochs import A, B

NEVER = -1.0  # times start at 1000 and only grow

IdlePeek = Callable[[str], set[SessionRecord]]

holders = st.sampled_from([A, B])
steps = st.integers(0, 4)
ages = st.none() | st.integers(0, 40).map(float)
# Hypothesis favours the first choice: a live claim, three times out of four at most.
LIVE_MOSTLY = st.sampled_from([True, True, True, False])
LEASE = 6.0  # a reconciliation lease: long enough to outlive a few steps, short enough to expire


class StoreComparison(RuleBasedStateMachine):
    """One pool key, driven through both stores.

    ``exact_ties``: the store breaks ties (equal times) as the reference does and returns lists
    in the reference's order; without it, times strictly increase so that no step depends on a
    tie, and lists are compared as sets. ``peek_idle`` reads the idle sessions from the store's
    own tables.
    """

    def __init__(self, store: Store, exact_ties: bool, peek_idle: IdlePeek | None) -> None:
        super().__init__()
        self.store = store
        self.exact_ties = exact_ties
        self.peek_idle = peek_idle
        self.ref = MemoryStore()
        self.key = f"model-{uuid.uuid4().hex}"
        self.now = 1000.0
        self.max_sessions = 1
        self.names = itertools.count()
        self.to_ref: dict[str, str] = {}  # token of the store under test -> reference token
        self.to_store: dict[str, str] = {}
        self.pairs: list[tuple[str, str]] = [("no-such-token", "no-such-token")]
        self.all_names = ["no-such-session"]
        self.lease: tuple[str, str] | None = None  # (reference, store) of an open lease

    def teardown(self) -> None:
        self.store.clear(self.key)
        self.ref.close()

    # -- helpers -----------------------------------------------------------------------------

    def tick(self, dt: int) -> None:
        self.now += dt if self.exact_ties else dt + 1

    def pair(self, ref_token: str | None, token: str | None) -> None:
        assert (ref_token is None) == (token is None)
        if ref_token is None or token is None:
            return
        assert token not in self.to_ref, "a token was handed out twice"
        self.to_ref[token] = ref_token
        self.to_store[ref_token] = token
        self.pairs.append((ref_token, token))

    def same_records(self, got: list[SessionRecord], want: list[SessionRecord]) -> None:
        if self.exact_ties:
            assert got == want
        else:
            assert sorted(got, key=lambda r: r.name) == sorted(want, key=lambda r: r.name)

    def new_record(self, age: int) -> SessionRecord:
        name = f"s{next(self.names)}"
        self.all_names.append(name)
        return SessionRecord(name, self.now - age, self.now)

    def held(self) -> list[tuple[str, str]]:
        """(name, reference token) of the checked-out sessions, in a deterministic order."""
        state = self.ref._pools.get(self.key)
        return [(n, c.token) for n, (_, c) in state.in_use.items()] if state else []

    def permits(self) -> list[str]:
        """Reference tokens of the creation permits, in the order granted."""
        state = self.ref._pools.get(self.key)
        return list(state.permits) if state else []

    def same_answer_on_a_session(self, step: str, data: st.DataObject, **kw: Any) -> None:
        """The step ``step`` on a session from ``pick_session``, in the reference and in the
        store under test: both answer the same."""
        name, ref_token, token = self.pick_session(data)
        want = getattr(self.ref, step)(self.key, name, ref_token, **kw)
        assert getattr(self.store, step)(self.key, name, token, **kw) == want

    def pick_session(self, data: st.DataObject) -> tuple[str, str, str]:
        """(name, reference token, token): mostly a checked-out session, else a checked-out
        session's name with another token, or its token with another name."""
        name, ref_token = data.draw(st.sampled_from(self.held()))
        token = self.to_store[ref_token]
        how = data.draw(st.sampled_from(["right", "right", "right", "token", "name"]))
        if how == "token":
            ref_token, token = data.draw(st.sampled_from(self.pairs))
        elif how == "name":
            name = data.draw(st.sampled_from(self.all_names))
        return name, ref_token, token

    def pick_permit(self, data: st.DataObject) -> tuple[str, str]:
        """(reference token, token): mostly a live permit, else any token."""
        if data.draw(LIVE_MOSTLY):
            ref_token = data.draw(st.sampled_from(self.permits()))
            return ref_token, self.to_store[ref_token]
        return data.draw(st.sampled_from(self.pairs))

    def create(self, ref_token: str, token: str, check_out: bool, age: int) -> None:
        record = self.new_record(age)
        want = self.ref.created(self.key, ref_token, record, now=self.now, check_out=check_out)
        got = self.store.created(self.key, token, record, now=self.now, check_out=check_out)
        assert got == want

    # -- rules -------------------------------------------------------------------------------

    @initialize(max_sessions=st.sampled_from([3, 2, 4, 1]))
    def choose_max(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        # Both start with an epoch, as a pool's first reconciliation leaves them; the rules
        # "reconcile" and "clear" take them through losing it and reconciling again.
        self.reconcile(0, False, True, [])

    @rule(
        dt=steps,
        holder=holders,
        reclaim_age=ages,
        expire_age=ages,
        retire_age=ages,
        then=st.sampled_from(["create", "create idle", "fail", "nothing"]),
        age=st.integers(0, 40),
    )
    def acquire(self, dt: int, **choices: Any) -> None:
        """Acquire; with a permit, go on as the pool would (or not, leaving the permit)."""
        self.tick(dt)
        self.compare_acquire(**choices)

    @rule(count=st.integers(1, 4), data=st.data(), holder=holders)
    def burst(self, count: int, data: st.DataObject, holder: Holder) -> None:
        """Check out several sessions (creating them when needed), then return them in any
        order: the pool's usual load, which leaves several idle sessions."""
        for _ in range(count):
            self.tick(data.draw(steps))
            self.compare_acquire(holder, None, None, None, "create", data.draw(steps))
        held = data.draw(st.permutations(self.held()))
        for name, ref_token in held:
            self.tick(data.draw(steps))
            want = self.ref.release(self.key, name, ref_token, now=self.now)
            got = self.store.release(self.key, name, self.to_store[ref_token], now=self.now)
            assert got == want

    def compare_acquire(
        self,
        holder: Holder,
        reclaim_age: float | None,
        expire_age: float | None,
        retire_age: float | None,
        then: str,
        age: int,
    ) -> None:
        kwargs: dict[str, Any] = {
            "holder": holder,
            "now": self.now,
            "max_sessions": self.max_sessions,
            "reclaim_before": NEVER if reclaim_age is None else self.now - reclaim_age,
            "expired_before": NEVER if expire_age is None else self.now - expire_age,
            "retire_before": NEVER if retire_age is None else self.now - retire_age,
        }
        want = self.ref.acquire(self.key, Checkout(**kwargs))
        got = self.store.acquire(self.key, Checkout(**kwargs))
        assert got.reset == want.reset
        assert got.record == want.record
        assert got.reclaimed == want.reclaimed
        assert (got.spare, got.wants) == (want.spare, want.wants)
        self.same_records(list(got.dropped), list(want.dropped))
        if self.exact_ties:
            assert got.releases == want.releases
        self.pair(want.token, got.token)
        if want.record is None and want.token is not None and got.token is not None:
            if then == "fail":
                self.ref.create_failed(self.key, want.token)
                self.store.create_failed(self.key, got.token)
            elif then != "nothing":
                self.create(want.token, got.token, then == "create", age)

    @precondition(lambda self: self.permits())
    @rule(data=st.data(), check_out=st.booleans(), dt=steps, age=st.integers(0, 40))
    def created(self, data: st.DataObject, check_out: bool, dt: int, age: int) -> None:
        self.tick(dt)
        self.create(*self.pick_permit(data), check_out, age)

    @precondition(lambda self: self.permits())
    @rule(data=st.data())
    def create_failed(self, data: st.DataObject) -> None:
        ref_token, token = self.pick_permit(data)
        self.ref.create_failed(self.key, ref_token)
        self.store.create_failed(self.key, token)

    @precondition(lambda self: self.held())
    @rule(data=st.data(), dt=steps)
    def release(self, data: st.DataObject, dt: int) -> None:
        self.tick(dt)
        self.same_answer_on_a_session("release", data, now=self.now)

    @precondition(lambda self: self.held())
    @rule(data=st.data(), dt=steps)
    def keep_alive(self, data: st.DataObject, dt: int) -> None:
        self.tick(dt)
        self.same_answer_on_a_session("keep_alive", data, now=self.now)

    @precondition(lambda self: self.held())
    @rule(data=st.data())
    def discard(self, data: st.DataObject) -> None:
        self.same_answer_on_a_session("discard", data)

    @rule(data=st.data(), dt=steps)
    def refused(self, data: st.DataObject, dt: int) -> None:
        """Any name with any token ever handed out: stale claims, permits, unknown names."""
        self.tick(dt)
        name = data.draw(st.sampled_from(self.all_names))
        ref_token, token = data.draw(st.sampled_from(self.pairs))
        want = self.ref.release(self.key, name, ref_token, now=self.now)
        assert self.store.release(self.key, name, token, now=self.now) == want
        want = self.ref.keep_alive(self.key, name, ref_token, now=self.now)
        assert self.store.keep_alive(self.key, name, token, now=self.now) == want
        want = self.ref.discard(self.key, name, ref_token)
        assert self.store.discard(self.key, name, token) == want
        self.ref.create_failed(self.key, ref_token)
        self.store.create_failed(self.key, token)

    @rule(
        dt=steps,
        limit=st.integers(1, 4),
        keep=st.integers(0, 4),
        last_used_age=ages,
        created_age=ages,
        holder=st.none() | holders,
    )
    def take_idle(
        self,
        dt: int,
        limit: int,
        keep: int,
        last_used_age: float | None,
        created_age: float | None,
        holder: Holder | None,
    ) -> None:
        self.tick(dt)
        kwargs: dict[str, Any] = {
            "limit": limit,
            "keep": keep,
            "now": self.now,
            "last_used_before": None if last_used_age is None else self.now - last_used_age,
            "created_before": None if created_age is None else self.now - created_age,
            "holder": holder,
        }
        want = self.ref.take_idle(self.key, TakeIdle(**kwargs))
        got = self.store.take_idle(self.key, TakeIdle(**kwargs))
        assert [record for record, _ in got] == [record for record, _ in want]
        for (_, token), (_, ref_token) in zip(got, want, strict=True):
            self.pair(ref_token, token)

    @rule(dt=steps, length=st.integers(0, 20).map(float))
    def roll_window(self, dt: int, length: float) -> None:
        self.tick(dt)
        want = self.ref.roll_window(self.key, now=self.now, length=length)
        assert self.store.roll_window(self.key, now=self.now, length=length) == want

    @rule(data=st.data(), count=st.integers(0, 3), dt=steps)
    def reclaim(self, data: st.DataObject, count: int, dt: int) -> None:
        """Reclaim any tokens ever handed out (holders rarely die: not mostly live ones)."""
        self.tick(dt)
        picks = [data.draw(st.sampled_from(self.pairs)) for _ in range(count)]
        want = self.ref.reclaim(self.key, [ref for ref, _ in picks], now=self.now)
        assert self.store.reclaim(self.key, [token for _, token in picks], now=self.now) == want

    @rule(dt=steps, target_size=st.integers(0, 5), holder=holders)
    def reserve(self, dt: int, target_size: int, holder: Holder) -> None:
        self.tick(dt)
        kwargs: dict[str, Any] = {
            "holder": holder,
            "now": self.now,
            "target": target_size,
            "max_sessions": self.max_sessions,
        }
        want = self.ref.reserve(self.key, **kwargs)
        got = self.store.reserve(self.key, **kwargs)
        assert len(got) == len(want)
        # Permits of one step are alike (same holder and time): pair them in any order.
        for ref_token, token in zip(want, got, strict=True):
            self.pair(ref_token, token)

    @rule(
        dt=steps,
        force=st.booleans(),
        finish=st.sampled_from([True, True, False]),
        listed=st.lists(st.tuples(st.booleans(), st.integers(0, 120)), max_size=5),
    )
    def reconcile(self, dt: int, force: bool, finish: bool, listed: list[tuple[bool, int]]) -> None:
        """Take a lease (or not), then adopt what a server lists: names the store knows (or
        knew) and new ones, used on the server ``age`` seconds ago; or leave the lease open
        (to expire, or to be finished later by ``finish_lease``)."""
        self.tick(dt)
        args: dict[str, Any] = {"now": self.now, "lease_seconds": LEASE, "force": force}
        want = self.ref.start_reconcile(self.key, **args)
        got = self.store.start_reconcile(self.key, **args)
        assert (got is None) == (want is None)
        if want is None or got is None:
            return
        self.lease = (want, got)
        if finish:
            self.adopt(listed)

    @precondition(lambda self: self.lease is not None)
    @rule(dt=steps, listed=st.lists(st.tuples(st.booleans(), st.integers(0, 120)), max_size=5))
    def finish_lease(self, dt: int, listed: list[tuple[bool, int]]) -> None:
        """Adopt under a lease taken earlier: still the key's, or lost (expired and taken by
        another reconciliation, or cleared)."""
        self.tick(dt)
        self.adopt(listed)

    def adopt(self, listed: list[tuple[bool, int]]) -> None:
        assert self.lease is not None
        (ref_lease, lease), self.lease = self.lease, None
        records = []
        for index, (known, age) in enumerate(listed):
            name = self.all_names[(index * 7 + age) % len(self.all_names)] if known else None
            if name is None or any(r.name == name for r in records):
                name = self.new_record(0).name
            records.append(SessionRecord(name, self.now - 200, self.now - age))
        common: dict[str, Any] = {
            "records": tuple(records),
            "now": self.now,
            "max_sessions": self.max_sessions,
            "idle_before": self.now - 60,
        }
        want = self.ref.adopt(self.key, Adoption(lease=ref_lease, **common))
        got = self.store.adopt(self.key, Adoption(lease=lease, **common))
        assert got == want
        # Sessions adopted as held by nobody: their tokens pair by name.
        ref_claims = {c.name: c.token for c in self.ref.claims(self.key) if c.holder == NOBODY}
        for claim in self.store.claims(self.key):
            if claim.holder == NOBODY and claim.token not in self.to_ref:
                self.pair(ref_claims[claim.name], claim.token)

    @rule(rarely=st.integers(0, 5))
    def clear(self, rarely: int) -> None:
        if rarely < 5:  # hypothesis favours small numbers
            return
        want = self.ref.clear(self.key)
        self.same_records(self.store.clear(self.key), want)

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def stores_agree(self) -> None:
        want = self.ref.stats(self.key)
        assert self.store.stats(self.key) == want
        assert want.idle + want.in_use + want.creating <= self.max_sessions
        claims = self.store.claims(self.key)
        mapped = [Claim(self.to_ref[c.token], c.holder, c.since, c.name) for c in claims]
        if self.exact_ties:
            assert mapped == self.ref.claims(self.key)
        else:
            assert sorted(mapped, key=lambda c: c.token) == sorted(
                self.ref.claims(self.key), key=lambda c: c.token
            )
        held = {c.name for c in claims if c.name is not None}
        assert len(held) == want.in_use
        state = self.ref._pools[self.key]
        assert not state.idle.keys() & state.in_use.keys()
        if self.peek_idle is not None:
            idle = self.peek_idle(self.key)
            assert idle == set(state.idle.values())
            assert not {r.name for r in idle} & held


def sqlite_idle(path: Path) -> Iterator[IdlePeek]:
    conn = sqlite3.connect(path)

    def peek(key: str) -> set[SessionRecord]:
        rows = conn.execute(
            "SELECT name, created_at, last_used FROM sessions WHERE key = ? AND token IS NULL",
            (key,),
        )
        return {SessionRecord(*row) for row in rows}

    yield peek
    conn.close()


MODEL_SETTINGS = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_store_matches_the_reference(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    peeks: Iterator[IdlePeek] | None = None
    store: Store
    if kind == "sqlite":
        store = SQLiteStore(tmp_path / "model.db")
        peeks = sqlite_idle(tmp_path / "model.db")
    else:
        from spanpool.stores import RedisStore

        store = RedisStore(request.getfixturevalue("redis_url"))
    peek = None if peeks is None else next(peeks)
    try:
        run_state_machine_as_test(
            lambda: StoreComparison(store, kind == "sqlite", peek), settings=MODEL_SETTINGS
        )
    finally:
        if peeks is not None:
            next(peeks, None)
        store.close()
