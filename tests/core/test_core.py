"""Tests of the session-pool core: ordering, waiting, hand-off, permits, maintenance, races."""

from __future__ import annotations

import asyncio
import queue
import random
import threading
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from spanpool.core import CreationPermit, PoolCore, Served, ThreadWaiter, Waiter
from spanpool.errors import NotCheckedOut, PoolClosed, PoolTimeout, PoolUsageError

# -- helpers ---------------------------------------------------------------------------------


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Item:
    """A stand-in for a session: hashable, compared by identity."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Item({self.name})"


class RecordingWaiter(Waiter[Item]):
    """A waiter whose requester is the test itself; ``alive=False`` plays a dead event loop."""

    __slots__ = ("alive", "woken")

    def __init__(self, timeout: float | None = 60.0, alive: bool = True) -> None:
        super().__init__(timeout)
        self.alive = alive
        self.woken = 0

    def wake(self) -> bool:
        self.woken += 1
        return self.alive


class ObservedCore(PoolCore[Item]):
    """A core that signals each request it queues, so tests coordinate without sleeping."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.queued = threading.Semaphore(0)

    def _enqueue_locked(self, waiter: Waiter[Served[Item]], now: float) -> Served[Item] | None:
        got = super()._enqueue_locked(waiter, now)
        if got is None:
            self.queued.release()
        return got

    def wait_queued(self, count: int = 1) -> None:
        for _ in range(count):
            assert self.queued.acquire(timeout=10), "a request never queued"


def fill(core: PoolCore[Item], count: int, clock: FakeClock | None = None) -> list[Item]:
    """Create ``count`` idle items, one clock tick apart (oldest first)."""
    items: list[Item] = []
    for reserved in core.reserve(count):
        fresh = Item(f"s{len(items)}")
        assert core.created_idle(reserved, fresh)
        items.append(fresh)
        if clock is not None:
            clock.advance(1)
    return items


def idle_items(core: PoolCore[Item]) -> list[Item]:
    return [item for _, item in core._idle]


def state(core: PoolCore[Item]) -> tuple[object, ...]:
    """Everything observable about a core, to check that a refused call changed nothing."""
    return (
        list(core._idle),
        dict(core._in_use),
        dict(core._in_maintenance),
        core._creating,
        list(core._waiters),
        core.get_stats(),
    )


def permit(got: Item | CreationPermit[Item]) -> CreationPermit[Item]:
    assert isinstance(got, CreationPermit), got
    return got


def item(got: Item | CreationPermit[Item] | None) -> Item:
    assert isinstance(got, Item), got
    return got


def start(target: Any, *args: Any) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def join(*threads: threading.Thread) -> None:
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive(), "thread did not finish"


def run_async(scenario: Coroutine[Any, Any, None], debug: bool = False) -> None:
    """Like asyncio.run, but a task stuck for ever fails the test instead of hanging it."""
    loop = asyncio.new_event_loop()
    loop.set_debug(debug)
    try:
        loop.run_until_complete(scenario)
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# -- order -----------------------------------------------------------------------------------


def test_lifo_hands_out_the_most_recently_used(clock: FakeClock) -> None:
    core: PoolCore[Item] = PoolCore(max_size=3, order="lifo", clock=clock)
    a, b, c = fill(core, 3, clock)
    assert core.acquire() is c
    assert core.acquire() is b
    core.release(b)  # now the warmest
    assert core.acquire() is b
    assert core.acquire() is a


def test_lru_hands_out_the_least_recently_used(clock: FakeClock) -> None:
    core: PoolCore[Item] = PoolCore(max_size=3, order="lru", clock=clock)
    a, b, c = fill(core, 3, clock)
    assert core.acquire() is a
    clock.advance(1)
    core.release(a)  # now the most recently used: goes out last
    assert [core.acquire(), core.acquire(), core.acquire()] == [b, c, a]


def test_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="max_size"):
        PoolCore(max_size=0)
    with pytest.raises(ValueError, match="order"):
        PoolCore(order="fifo")  # type: ignore[arg-type]


# -- permits, timeouts -----------------------------------------------------------------------


def test_empty_pool_gives_permits_up_to_max_size_then_times_out(clock: FakeClock) -> None:
    core: PoolCore[Item] = PoolCore(name="orders", max_size=2, clock=clock)
    first, second = permit(core.acquire(0)), permit(core.acquire(0))
    with pytest.raises(PoolTimeout) as caught:
        core.acquire(timeout=0)
    assert isinstance(caught.value, queue.Empty)
    message = str(caught.value)
    assert "'orders'" in message and "max_size=2" in message and "within 0 s" in message
    assert "being created=2" in message
    session = Item("new")
    core.created(first, session)
    core.create_failed(second)
    stats = core.get_stats()
    assert stats["pool_in_use"] == 1 and stats["pool_creating"] == 0
    assert stats["sessions_created"] == 1 and stats["sessions_create_failed"] == 1
    assert stats["requests_timeouts"] == 1 and stats["requests_num"] == 3
    assert core.release(session) and idle_items(core) == [session]


def test_unbounded_pool_always_gives_permits() -> None:
    core: PoolCore[Item] = PoolCore(max_size=None)
    permits = [permit(core.acquire(0)) for _ in range(50)]
    assert core.get_stats()["pool_creating"] == 50
    assert core.get_stats()["pool_max"] == 0  # unbounded
    for p in permits:
        core.create_failed(p)


def test_blocking_acquire_times_out_and_leaves_the_queue() -> None:
    core: PoolCore[Item] = PoolCore(name="tiny", max_size=1)
    fill(core, 1)
    held = item(core.acquire())
    with pytest.raises(PoolTimeout, match=r"'tiny': no session available within 0.05 s"):
        core.acquire(timeout=0.05)
    stats = core.get_stats()
    assert stats["requests_waiting"] == 0 and stats["requests_waiting_total"] == 1
    assert stats["requests_timeouts"] == 1
    core.release(held)
    assert core.acquire(0) is held  # the timed-out request was not handed anything


def test_permit_misuse_raises_and_changes_nothing(clock: FakeClock) -> None:
    core: PoolCore[Item] = PoolCore(max_size=3, clock=clock)
    other: PoolCore[Item] = PoolCore(max_size=3)
    (existing,) = fill(core, 1)
    assert core.acquire(0) is existing  # an idle item goes out before any permit
    mine = permit(core.acquire(0))
    foreign = permit(other.acquire(0))
    before = state(core)
    with pytest.raises(PoolUsageError, match="another pool"):
        core.created(foreign, Item("x"))
    with pytest.raises(PoolUsageError, match="already in this pool"):
        core.created(mine, existing)  # existing is in use
    assert state(core) == before
    core.created(mine, Item("fresh"))
    with pytest.raises(PoolUsageError, match="already used"):
        core.create_failed(mine)
    with pytest.raises(PoolUsageError, match="already used"):
        core.created_idle(mine, Item("again"))


# -- waiting and hand-off --------------------------------------------------------------------


def test_waiters_are_served_in_arrival_order() -> None:
    core = ObservedCore(max_size=1)
    (session,) = fill(core, 1)
    assert core.acquire() is session
    served: list[int] = []

    def borrower(index: int) -> None:
        got = item(core.acquire(timeout=10))
        served.append(index)
        core.release(got)

    threads = []
    for index in range(6):
        threads.append(start(borrower, index))
        core.wait_queued()  # the next thread starts only once this one is queued
    core.release(session)
    join(*threads)
    assert served == list(range(6))
    assert idle_items(core) == [session]
    assert core.get_stats()["requests_waiting_total"] == 6


def test_release_hands_the_item_directly_to_the_oldest_waiter() -> None:
    core = ObservedCore(max_size=1)
    (session,) = fill(core, 1)
    assert core.acquire() is session
    got: list[Item | CreationPermit[Item]] = []
    waiter = start(lambda: got.append(core.acquire(timeout=10)))
    core.wait_queued()
    assert core.release(session)
    # Handed over inside release(): not idle, so no one else can take it.
    assert idle_items(core) == [] and session in core._in_use
    with pytest.raises(PoolTimeout):
        core.acquire(timeout=0)
    join(waiter)
    assert got == [session]


def test_discard_gives_waiters_permits_but_never_more_than_waiting(clock: FakeClock) -> None:
    core: PoolCore[Item] = PoolCore(max_size=3, clock=clock)
    held = [item(core.acquire()) for _ in fill(core, 3)]
    waiters = [RecordingWaiter() for _ in range(4)]
    assert all(core.enqueue(w) is None for w in waiters)
    core.discard(held[0])
    core.discard(held[1])
    assert [isinstance(w.result, CreationPermit) for w in waiters] == [True, True, False, False]
    assert [w.waiting for w in waiters] == [False, False, True, True]
    assert core.get_stats()["pool_creating"] == 2
    # With nobody waiting, discarding gives the place back instead of creating anything.
    for w in waiters[2:]:
        core.abandon(w)
    core.discard(held[2])
    stats = core.get_stats()
    assert stats["pool_creating"] == 2 and stats["pool_size"] == 0
    assert stats["sessions_discarded"] == 3
    assert isinstance(core.acquire(0), CreationPermit)  # the freed place, on demand


def test_create_failed_passes_the_permit_to_the_next_waiter(clock: FakeClock) -> None:
    core: PoolCore[Item] = PoolCore(max_size=1, clock=clock)
    first = permit(core.acquire(0))
    w1, w2 = RecordingWaiter(), RecordingWaiter()
    assert core.enqueue(w1) is None and core.enqueue(w2) is None
    core.create_failed(first)
    second = permit(core.settle(w1))
    assert w2.waiting and core.get_stats()["pool_creating"] == 1
    core.create_failed(second)
    third = permit(core.settle(w2))
    session = Item("finally")
    core.created(third, session)
    stats = core.get_stats()
    assert stats["sessions_create_failed"] == 2 and stats["sessions_created"] == 1
    assert stats["pool_in_use"] == 1 and stats["pool_creating"] == 0


def test_created_idle_serves_a_waiter_first(clock: FakeClock) -> None:
    core: PoolCore[Item] = PoolCore(max_size=1, clock=clock)
    (reserved,) = core.reserve(5)
    assert core.reserve(1) == []  # the place is taken by the reservation
    w = RecordingWaiter()
    assert core.enqueue(w) is None
    session = Item("filled")
    assert core.created_idle(reserved, session)
    assert core.settle(w) is session and idle_items(core) == []


# -- timeout and cancellation races ----------------------------------------------------------


def test_served_at_the_instant_of_timeout_keeps_the_item(clock: FakeClock) -> None:
    core: PoolCore[Item] = PoolCore(max_size=1, clock=clock)
    held = Item("h")
    core.created(permit(core.acquire(0)), held)
    w = RecordingWaiter(timeout=1)
    assert core.enqueue(w) is None
    clock.advance(1)
    core.release(held)  # served after the timer fired, before the requester settled
    assert core.settle(w) is held
    assert core.get_stats()["requests_timeouts"] == 0
    with pytest.raises(PoolUsageError):
        core.settle(w)


def waiting_for_the_one(clock: FakeClock, *waiters: RecordingWaiter) -> tuple[PoolCore[Item], Item]:
    """A pool of one session, checked out, with ``waiters`` in line for it; returns the pool
    and its session."""
    core: PoolCore[Item] = PoolCore(max_size=1, clock=clock)
    (session,) = fill(core, 1)
    core.acquire()
    for waiter in waiters:
        core.enqueue(waiter)
    return core, session


def test_cancelled_at_the_instant_of_hand_off_passes_the_item_on(clock: FakeClock) -> None:
    w1, w2 = RecordingWaiter(), RecordingWaiter()
    core, session = waiting_for_the_one(clock, w1, w2)
    core.release(session)
    assert w1.result is session and w2.waiting
    assert core.abandon(w1) is None
    assert w2.result is session and session in core._in_use
    assert core.abandon(w2) is None
    assert idle_items(core) == [session] and core._in_use == {}
    assert core.get_stats()["requests_cancelled"] == 2


def test_cancelled_with_a_permit_passes_the_permit_on(clock: FakeClock) -> None:
    w1, w2 = RecordingWaiter(), RecordingWaiter()
    core, session = waiting_for_the_one(clock, w1, w2)
    core.discard(session)
    granted = w1.result
    assert isinstance(granted, CreationPermit)
    core.abandon(w1)
    assert granted.spent and isinstance(w2.result, CreationPermit)
    core.abandon(w2)
    assert core.get_stats()["pool_creating"] == 0
    assert isinstance(core.acquire(0), CreationPermit)


def test_a_waiter_that_cannot_be_woken_is_skipped(clock: FakeClock) -> None:
    dead, live = RecordingWaiter(alive=False), RecordingWaiter()
    core, session = waiting_for_the_one(clock, dead, live)
    core.release(session)
    assert dead.woken == 1 and dead.result is None
    assert live.result is session
    core.release(item(core.settle(live)))
    dead_again = RecordingWaiter(alive=False)
    core.acquire()
    core.enqueue(dead_again)
    core.release(session)
    assert idle_items(core) == [session]  # nobody left to serve: back to idle


def test_thread_interrupted_at_the_instant_it_is_served_passes_the_item_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    core = ObservedCore(max_size=1)
    (session,) = fill(core, 1)
    assert core.acquire() is session
    served = threading.Event()
    blocking = ThreadWaiter.block

    def interrupted(waiter: ThreadWaiter[Item]) -> bool:
        blocking(waiter)
        served.set()
        raise KeyboardInterrupt  # delivered just after the hand-off

    monkeypatch.setattr(ThreadWaiter, "block", interrupted)
    outcome: list[BaseException] = []

    def victim() -> None:
        try:
            core.acquire(timeout=10)
        except KeyboardInterrupt as exc:
            outcome.append(exc)

    thread = start(victim)
    core.wait_queued()
    core.release(session)
    join(thread)
    assert served.is_set() and len(outcome) == 1
    assert idle_items(core) == [session] and core._in_use == {}


def test_thread_storm_with_timeouts_discards_and_creation() -> None:
    core: PoolCore[Item] = PoolCore(max_size=3)
    created: list[Item] = []
    guard = threading.Lock()
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for step in range(300):
                try:
                    got = core.acquire(timeout=rng.choice([0, 0.0005, 0.002, None]))
                except PoolTimeout:
                    continue
                if isinstance(got, CreationPermit):
                    if rng.random() < 0.2:
                        core.create_failed(got)
                        continue
                    got_item = Item(f"t{seed}.{step}")
                    with guard:
                        created.append(got_item)
                    core.created(got, got_item)
                else:
                    got_item = got
                if rng.random() < 0.1:
                    core.discard(got_item)
                else:
                    core.release(got_item)
        except BaseException as exc:
            errors.append(exc)

    join(*[start(worker, seed) for seed in range(8)])
    assert errors == []
    stats = core.get_stats()
    assert stats["pool_in_use"] == stats["pool_creating"] == stats["requests_waiting"] == 0
    assert stats["pool_size"] == stats["pool_available"] <= 3
    assert stats["sessions_created"] == len(created)
    assert stats["sessions_discarded"] == len(created) - stats["pool_size"]


def test_abandon_after_close_returns_the_orphan(clock: FakeClock) -> None:
    orphans: list[Item] = []
    core: PoolCore[Item] = PoolCore(max_size=1, clock=clock, on_orphan=orphans.append)
    (session,) = fill(core, 1)
    core.acquire()
    w = RecordingWaiter()
    core.enqueue(w)
    core.release(session)
    assert core.close() == []
    assert core.abandon(w) is session
    assert core._in_use == {} and core.get_stats()["pool_size"] == 0


# -- returning -------------------------------------------------------------------------------


def test_double_and_foreign_release_raise_and_change_nothing(clock: FakeClock) -> None:
    core: PoolCore[Item] = PoolCore(name="p", max_size=2, clock=clock)
    fill(core, 2)
    got = item(core.acquire())
    core.release(got)
    before = state(core)
    for bad in (got, Item("stranger")):
        with pytest.raises(NotCheckedOut, match="not checked out from this pool") as caught:
            core.release(bad)
        assert isinstance(caught.value, ValueError)
        with pytest.raises(NotCheckedOut):
            core.discard(bad)
        with pytest.raises(NotCheckedOut):
            core.return_checked(bad)
    assert state(core) == before


def test_created_idle_many_serves_waiters_then_idles_and_refuses_duplicates() -> None:
    core: PoolCore[Item] = PoolCore(max_size=4)
    (old,) = fill(core, 1)
    assert core.acquire() is old
    permits = core.reserve(3)
    waiter = RecordingWaiter(timeout=5)
    assert core.enqueue(waiter) is None  # full: 1 in use, 3 being created
    batch = [Item("a"), Item("b")]
    assert core.created_idle_many(permits[:2], batch) == []
    assert waiter.result is batch[0]  # the first goes to the waiter, the second is idle
    assert idle_items(core) == [batch[1]]
    with pytest.raises(PoolUsageError, match="already in this pool"):
        core.created_idle_many([permits[2]], [batch[1]])
    core.create_failed(permits[2])
    assert core.get_stats()["pool_creating"] == 0
    spare = core.reserve(1)
    core.close()
    assert core.created_idle_many(spare, [Item("late")])[0].name == "late"


def test_release_beyond_max_idle_gives_the_item_back_for_deletion(clock: FakeClock) -> None:
    core: PoolCore[Item] = PoolCore(max_size=None, clock=clock)
    sessions = []
    for name in "abc":
        p = permit(core.acquire(0))
        sessions.append(Item(name))
        core.created(p, sessions[-1])
    assert core.release(sessions[0], max_idle=2)
    assert core.release(sessions[1], max_idle=2)
    assert not core.release(sessions[2], max_idle=2)  # full: the caller deletes it
    assert idle_items(core) == sessions[:2]
    assert core.get_stats()["sessions_discarded"] == 1
    with pytest.raises(NotCheckedOut):
        core.release(sessions[2])


# -- maintenance -----------------------------------------------------------------------------


def test_take_idle_older_than_takes_oldest_and_keeps_some_for_acquirers(clock: FakeClock) -> None:
    core: PoolCore[Item] = PoolCore(max_size=4, order="lru", clock=clock)
    a, b, c, d = fill(core, 4, clock)  # last used at 1000, 1001, 1002, 1003
    clock.now = 1010
    assert core.oldest_last_used() == 1000
    assert core.take_idle_older_than(8.5, limit=10) == [a, b]  # c, d are younger
    assert core.take_idle_older_than(0, limit=10) == [c]  # keep=1 leaves d
    stats = core.get_stats()
    assert stats["pool_in_maintenance"] == 3 and stats["pool_available"] == 1
    assert stats["pool_size"] == 4
    assert core.acquire() is d  # never handed out from maintenance
    with pytest.raises(PoolTimeout):
        core.acquire(0)
    core.return_checked(b, refreshed=True)  # last used now
    core.return_checked(a, refreshed=False)  # keeps 1000: sorted in front
    core.discard(c)
    assert idle_items(core) == [a, b]
    assert [t for t, _ in core._idle] == [1000, 1010]
    assert core.acquire() is a  # lru


def test_take_idle_with_a_predicate_and_limit(clock: FakeClock) -> None:
    core: PoolCore[Item] = PoolCore(max_size=5, clock=clock)
    items = fill(core, 5, clock)
    odd = core.take_idle(10, lambda it, _last: int(it.name[1:]) % 2 == 1, keep=0)
    assert odd == [items[1], items[3]]
    assert core.take_idle(1, keep=0) == [items[0]]  # oldest first
    assert core.take_idle(10, keep=2) == []  # only two left: both kept
    assert idle_items(core) == [items[2], items[4]]


def test_return_checked_hands_off_to_a_waiter(clock: FakeClock) -> None:
    core: PoolCore[Item] = PoolCore(max_size=2, clock=clock)
    a, b = fill(core, 2, clock)
    assert core.take_idle(1, keep=0) == [a]
    assert core.acquire() is b
    w = RecordingWaiter()
    assert core.enqueue(w) is None  # the only other item is being pinged
    assert core.return_checked(a)
    assert core.settle(w) is a


def test_maintenance_while_threads_acquire() -> None:
    core: PoolCore[Item] = PoolCore(max_size=4, order="lru")
    items = fill(core, 4)
    holders: set[Item] = set()
    guard = threading.Lock()
    done = threading.Event()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(400):
                got = item(core.acquire(timeout=10))
                with guard:
                    assert got not in holders, "one item, two holders"
                    holders.add(got)
                with guard:
                    holders.discard(got)
                core.release(got)
        except BaseException as exc:
            errors.append(exc)

    def maintainer() -> None:
        try:
            while not done.is_set():
                for taken in core.take_idle(2, keep=1):
                    with guard:
                        assert taken not in holders, "handed out while in maintenance"
                    core.return_checked(taken)
        except BaseException as exc:
            errors.append(exc)

    pinger = start(maintainer)
    workers = [start(worker) for _ in range(6)]
    join(*workers)
    done.set()
    join(pinger)
    assert errors == []
    assert sorted(idle_items(core), key=id) == sorted(items, key=id)
    stats = core.get_stats()
    assert stats["pool_in_use"] == stats["pool_in_maintenance"] == stats["requests_waiting"] == 0


# -- close -----------------------------------------------------------------------------------


def test_close_wakes_waiters_and_refuses_everything_after() -> None:
    core = ObservedCore(max_size=2)
    fill(core, 2)
    held = item(core.acquire())
    outcome: list[BaseException] = []

    def blocked() -> None:
        core.acquire()  # takes the last idle one
        try:
            core.acquire()  # no timeout: only close() can end this wait
        except PoolClosed as exc:
            outcome.append(exc)

    thread = start(blocked)
    core.wait_queued()
    assert core.close() == []
    join(thread)
    assert len(outcome) == 1 and "closed" in str(outcome[0])
    with pytest.raises(PoolClosed):
        core.acquire(0)
    with pytest.raises(PoolClosed):
        core.reserve(1)
    assert core.release(held) is False  # the caller deletes it
    assert core.close() == []


def test_close_returns_idle_items_and_later_returns_go_back_to_the_caller(
    clock: FakeClock,
) -> None:
    core: PoolCore[Item] = PoolCore(max_size=4, clock=clock)
    a, b, c, d = fill(core, 4)
    assert core.acquire() is d
    assert core.take_idle(1, keep=0) == [a]
    assert sorted(core.close(), key=id) == sorted([b, c], key=id)
    assert core.closed
    assert core.return_checked(a) is False
    assert core.release(d) is False
    assert core.get_stats()["pool_size"] == 0


def test_permit_settled_after_close() -> None:
    core: PoolCore[Item] = PoolCore(max_size=2)
    p1, p2 = permit(core.acquire(0)), permit(core.acquire(0))
    core.close()
    session = Item("late")
    core.created(p1, session)  # the holder still gets to use it ...
    assert core.release(session) is False  # ... and deletes it afterwards
    assert core.created_idle(p2, Item("late2")) is False
    assert core.get_stats()["pool_creating"] == 0


# -- stats, leaks, fork ----------------------------------------------------------------------


def test_stats_measure_waits_and_usage_and_pop_resets_counters(clock: FakeClock) -> None:
    core: PoolCore[Item] = PoolCore(max_size=1, clock=clock)
    (session,) = fill(core, 1)
    core.acquire()
    clock.advance(0.25)
    w = RecordingWaiter()
    core.enqueue(w)
    clock.advance(2)
    core.release(session)  # held 2.25 s; the waiter is handed the session after 2 s
    clock.advance(0.5)
    assert core.settle(w) is session  # the wait counts until the hand-off, not until here
    clock.advance(1)
    core.release(session)  # held 1.5 s (from the hand-off)
    stats = core.pop_stats()
    assert stats == {
        "pool_max": 1,
        "pool_size": 1,
        "pool_available": 1,
        "pool_in_use": 0,
        "pool_in_maintenance": 0,
        "pool_creating": 0,
        "requests_waiting": 0,
        "requests_num": 2,
        "requests_waiting_total": 1,
        "requests_wait_ms": 2000,
        "requests_wait_max_ms": 2000,
        "requests_timeouts": 0,
        "requests_cancelled": 0,
        "sessions_created": 1,
        "sessions_create_failed": 0,
        "sessions_discarded": 0,
        "usage_ms": 3750,
    }
    after = core.get_stats()
    assert after["requests_num"] == after["usage_ms"] == after["sessions_created"] == 0
    assert after["pool_size"] == after["pool_available"] == 1  # gauges stay


# -- asyncio ---------------------------------------------------------------------------------


def test_acquire_async_waits_times_out_and_takes_hand_offs() -> None:
    async def scenario() -> None:
        core: PoolCore[Item] = PoolCore(max_size=1)
        (session,) = fill(core, 1)
        assert await core.acquire_async() is session
        with pytest.raises(PoolTimeout):
            await core.acquire_async(timeout=0.01)
        task = asyncio.create_task(core.acquire_async(timeout=5))
        await asyncio.sleep(0)
        # Released from another thread: the waiter must be woken through
        # call_soon_threadsafe (debug mode rejects anything else).
        await asyncio.get_running_loop().run_in_executor(None, core.release, session)
        await asyncio.wait({task}, timeout=5)
        assert task.done() and task.result() is session

    run_async(scenario(), debug=True)


def test_asyncio_timeouts_share_one_timer_and_each_expires_on_time() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        core: PoolCore[Item] = PoolCore(max_size=1)
        (session,) = fill(core, 1)
        assert await core.acquire_async() is session

        def armed() -> int:
            return sum(not h.cancelled() for h in loop._scheduled)  # type: ignore[attr-defined]

        timers_before = armed()
        late = asyncio.create_task(core.acquire_async(timeout=0.2))
        early = asyncio.create_task(core.acquire_async(timeout=0.02))
        served = asyncio.create_task(core.acquire_async(timeout=30))
        await asyncio.sleep(0)
        # Three waiters with timeouts, one timer armed (for the earliest deadline).
        assert armed() - timers_before == 1
        began = loop.time()
        with pytest.raises(PoolTimeout):
            await early
        assert loop.time() - began < 0.15  # woken at its own deadline, not the later one's
        assert not late.done()
        with pytest.raises(PoolTimeout):
            await late
        # The first in line timed out: the release goes to the waiter still waiting.
        core.release(session)
        assert await asyncio.wait_for(served, 5) is session
        stats = core.get_stats()
        assert stats["requests_waiting"] == 0 and stats["pool_in_use"] == 1

    run_async(scenario(), debug=True)


def test_asyncio_waiters_of_two_event_loops_time_out_on_their_own_loops() -> None:
    core: PoolCore[Item] = PoolCore(max_size=1)
    (session,) = fill(core, 1)
    assert core.acquire() is session
    outcomes: list[str] = []

    def wait_on_a_new_loop() -> None:
        async def scenario() -> None:
            with pytest.raises(PoolTimeout):
                await core.acquire_async(timeout=0.05)
            outcomes.append("timed out")

        run_async(scenario())

    threads = [start(wait_on_a_new_loop) for _ in range(2)]
    join(*threads)
    assert outcomes == ["timed out", "timed out"]
    core.release(session)
    assert core.get_stats()["pool_available"] == 1


def test_task_cancelled_at_the_instant_it_is_served_passes_the_item_on() -> None:
    async def scenario() -> None:
        core: PoolCore[Item] = PoolCore(max_size=1)
        (session,) = fill(core, 1)
        await core.acquire_async()
        unlucky = asyncio.create_task(core.acquire_async())
        await asyncio.sleep(0)
        next_in_line = asyncio.create_task(core.acquire_async())
        await asyncio.sleep(0)
        core.release(session)  # served to `unlucky`, which has not run yet ...
        unlucky.cancel()  # ... and is cancelled before it does
        with pytest.raises(asyncio.CancelledError):
            await unlucky
        assert await asyncio.wait_for(next_in_line, 5) is session
        core.release(session)
        assert idle_items(core) == [session]

    run_async(scenario())


@pytest.mark.parametrize("seed", range(4))
def test_asyncio_cancellation_storm(seed: int) -> None:
    rng = random.Random(seed)
    max_size = 5
    created: list[Item] = []
    core: PoolCore[Item] = PoolCore(name="storm", max_size=max_size)
    executor = ThreadPoolExecutor(2)
    queued: list[asyncio.Task[None]] = []  # tasks inside acquire_async, oldest first

    async def use_once(index: int) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        queued.append(task)
        try:
            got = await core.acquire_async(timeout=rng.choice([None, None, 0.002, 0.05]))
        except PoolTimeout:
            return
        finally:
            queued.remove(task)
        if isinstance(got, CreationPermit):
            try:
                await asyncio.sleep(0)  # the creation RPC: cancellable
            except asyncio.CancelledError:
                core.create_failed(got)
                raise
            session = Item(f"c{index}")
            created.append(session)
            core.created(got, session)
        else:
            session = got
        try:
            for _ in range(rng.randrange(3)):
                await asyncio.sleep(0)
        finally:
            choice = rng.random()
            if choice < 0.1:
                core.discard(session)
            elif choice < 0.3:
                # Returned by a worker thread, even if this task is being cancelled.
                await asyncio.shield(loop.run_in_executor(executor, core.release, session))
            else:
                core.release(session)

    async def client(index: int) -> None:
        for _ in range(3):
            await use_once(index)

    async def storm() -> None:
        tasks = [asyncio.create_task(client(i)) for i in range(300)]
        give_up = asyncio.get_running_loop().time() + 20
        while (
            not all(task.done() for task in tasks) and asyncio.get_running_loop().time() < give_up
        ):
            # Mostly the oldest waiters, who are next to be served: cancelling one just
            # after a release handed it an item is the race under test.
            pool = queued[:3] if queued and rng.random() < 0.7 else tasks
            rng.choice(pool).cancel()
            for _ in range(rng.randrange(4)):
                await asyncio.sleep(0)
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 20)
        unexpected = [
            r
            for r in results
            if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)
        ]
        assert unexpected == []
        assert any(isinstance(r, asyncio.CancelledError) for r in results)

    run_async(storm())
    executor.shutdown(wait=True)
    stats = core.get_stats()
    assert stats["pool_in_use"] == stats["pool_creating"] == stats["requests_waiting"] == 0
    assert stats["requests_cancelled"] > 0
    assert stats["pool_size"] == stats["pool_available"] <= max_size
    assert len(set(idle_items(core))) == stats["pool_available"]
    assert stats["sessions_created"] == len(created)
    assert stats["sessions_discarded"] == len(created) - stats["pool_size"]


# -- the state machine, checked step by step ---------------------------------------------------


class CoreMachine(RuleBasedStateMachine):
    """Random sequences of every core operation; the model is what the test holds."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.core: PoolCore[Item] = PoolCore(max_size=3, clock=self.clock)
        self.held: list[Item] = []
        self.permits: list[CreationPermit[Item]] = []
        self.maintenance: list[Item] = []
        self.waiters: list[RecordingWaiter] = []
        self.alive: set[Item] = set()
        self.made = 0
        self.closed = False

    @initialize(max_size=st.sampled_from([None, 1, 2, 3]), order=st.sampled_from(["lifo", "lru"]))
    def setup(self, max_size: int | None, order: str) -> None:
        self.core = PoolCore(max_size=max_size, order=order, clock=self.clock)  # type: ignore[arg-type]

    def new_item(self) -> Item:
        self.made += 1
        fresh = Item(f"i{self.made}")
        self.alive.add(fresh)
        return fresh

    def take(self, got: Item | CreationPermit[Item]) -> None:
        if isinstance(got, CreationPermit):
            self.permits.append(got)
        else:
            assert got in self.alive and got not in self.held and got not in self.maintenance
            self.held.append(got)

    def gone(self, lost: Item) -> None:
        self.alive.remove(lost)

    # rules

    @rule(seconds=st.sampled_from([0.5, 3, 60]))
    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def acquire_now(self) -> None:
        try:
            got = self.core.acquire(timeout=0)
        except PoolTimeout:
            assert not self.closed and not self.core._idle
            assert self.core.max_size is not None
            assert self.core._size_locked() + self.core._creating >= self.core.max_size
        except PoolClosed:
            assert self.closed
        else:
            self.take(got)

    @rule(alive=st.booleans(), timeout=st.sampled_from([0, 1]))
    def request(self, alive: bool, timeout: float) -> None:
        waiter = RecordingWaiter(timeout=timeout, alive=alive)
        try:
            got = self.core.enqueue(waiter)
        except (PoolTimeout, PoolClosed):
            return
        if got is None:
            self.waiters.append(waiter)
        else:
            self.take(got)

    @precondition(lambda self: self.waiters)
    @rule(data=st.data(), cancel=st.booleans())
    def finish_request(self, data: st.DataObject, cancel: bool) -> None:
        waiter = data.draw(st.sampled_from(self.waiters))
        self.waiters.remove(waiter)
        if cancel:
            orphan = self.core.abandon(waiter)
            if orphan is not None:
                assert self.closed
                self.gone(orphan)
            return
        try:
            got = self.core.settle(waiter)
        except PoolTimeout:
            assert waiter.woken == 0
        except PoolClosed:
            assert self.closed
        else:
            assert waiter.woken == 1
            self.take(got)

    @precondition(lambda self: self.held)
    @rule(data=st.data(), max_idle=st.sampled_from([None, None, 0, 1]))
    def release(self, data: st.DataObject, max_idle: int | None) -> None:
        returned = data.draw(st.sampled_from(self.held))
        self.held.remove(returned)
        if not self.core.release(returned, max_idle):
            self.gone(returned)

    @precondition(lambda self: self.held or self.maintenance)
    @rule(data=st.data())
    def discard(self, data: st.DataObject) -> None:
        dead = data.draw(st.sampled_from(self.held + self.maintenance))
        (self.held if dead in self.held else self.maintenance).remove(dead)
        self.core.discard(dead)
        self.gone(dead)

    @precondition(lambda self: self.permits)
    @rule(data=st.data(), outcome=st.sampled_from(["created", "idle", "failed"]))
    def settle_permit(self, data: st.DataObject, outcome: str) -> None:
        granted = data.draw(st.sampled_from(self.permits))
        self.permits.remove(granted)
        if outcome == "failed":
            self.core.create_failed(granted)
            return
        fresh = self.new_item()
        if outcome == "created":
            self.core.created(granted, fresh)
            self.held.append(fresh)
        elif not self.core.created_idle(granted, fresh):
            assert self.closed
            self.gone(fresh)

    @rule(count=st.integers(0, 3))
    def reserve(self, count: int) -> None:
        try:
            self.permits.extend(self.core.reserve(count))
        except PoolClosed:
            assert self.closed

    @rule(age=st.sampled_from([0, 2, 30]), limit=st.integers(0, 3), keep=st.integers(0, 1))
    def take_idle(self, age: float, limit: int, keep: int) -> None:
        cutoff = self.clock() - age
        idle_before = len(self.core._idle)
        taken = self.core.take_idle(limit, lambda _item, last: last <= cutoff, keep=keep)
        assert len(taken) <= max(0, min(limit, idle_before - keep))
        for checked in taken:
            assert checked in self.alive and checked not in self.held
        self.maintenance.extend(taken)

    @precondition(lambda self: self.maintenance)
    @rule(data=st.data(), refreshed=st.booleans())
    def return_checked(self, data: st.DataObject, refreshed: bool) -> None:
        checked = data.draw(st.sampled_from(self.maintenance))
        self.maintenance.remove(checked)
        if not self.core.return_checked(checked, refreshed=refreshed):
            assert self.closed
            self.gone(checked)

    @rule(data=st.data())
    def misuse(self, data: st.DataObject) -> None:
        in_use = self.held + [r for r in self.served() if isinstance(r, Item)]
        candidates = [Item("stranger"), *[i for i in self.alive if i not in in_use]]
        wrong = data.draw(st.sampled_from(candidates))
        before = state(self.core)
        with pytest.raises(NotCheckedOut):
            self.core.release(wrong)
        assert state(self.core) == before

    @precondition(lambda self: not self.closed)
    @rule(chance=st.integers(0, 9))
    def close(self, chance: int) -> None:
        if chance:  # rarely
            return
        self.closed = True
        for leftover in self.core.close():
            self.gone(leftover)

    # invariants

    def served(self) -> list[Item | CreationPermit[Item]]:
        return [w.result for w in self.waiters if w.result is not None]

    @invariant()
    def every_item_in_exactly_one_place(self) -> None:
        core = self.core
        idle = [entry[1] for entry in core._idle]
        in_use_expected = self.held + [r for r in self.served() if isinstance(r, Item)]
        assert len(set(idle)) == len(idle)
        assert len(set(in_use_expected)) == len(in_use_expected), "one item, two holders"
        assert set(core._in_use) == set(in_use_expected)
        assert set(core._in_maintenance) == set(self.maintenance)
        places = [set(idle), set(core._in_use), set(core._in_maintenance)]
        assert sum(len(p) for p in places) == len(set().union(*places))
        assert set().union(*places) == self.alive, "an item was lost or invented"
        if self.closed:
            assert not idle

    @invariant()
    def capacity_and_queue(self) -> None:
        core = self.core
        permits = self.permits + [r for r in self.served() if isinstance(r, CreationPermit)]
        assert core._creating == len(permits)
        assert all(not p.spent for p in permits)
        size = core._size_locked()
        if core.max_size is not None:
            assert size + core._creating <= core.max_size
        queued = [w for w in self.waiters if w.waiting]
        assert list(core._waiters) == queued  # FIFO, nobody skipped or duplicated
        if queued:
            # Requests wait only when nothing is idle and there is no room to create.
            assert not core._idle and core.max_size is not None
            assert size + core._creating == core.max_size
        stats = core.get_stats()
        assert stats["pool_size"] == size and stats["requests_waiting"] == len(queued)
        last_used = [t for t, _ in core._idle]
        assert last_used == sorted(last_used)

    @invariant()
    def drop_unwakeable_waiters(self) -> None:
        # A waiter whose wake() failed was skipped: its requester never comes back.
        self.waiters = [w for w in self.waiters if w.alive or w.waiting or w.result is not None]


TestCoreMachine = CoreMachine.TestCase
TestCoreMachine.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
