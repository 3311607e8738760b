"""The stats vocabulary and the checkout tracker that leak warnings and close() read."""

from __future__ import annotations

import warnings

import pytest

from spanpool import stats
from spanpool.errors import SessionLeakWarning

from .conftest import FakeClock


class Item:
    name = "projects/p/instances/i/databases/d/sessions/s1"


def leaky_caller(tracker: stats.CheckoutTracker[object], item: object) -> None:
    tracker.checked_out(item)


def test_the_tracker_lists_long_held_items_with_their_checkout_site(clock: FakeClock) -> None:
    tracker: stats.CheckoutTracker[object] = stats.CheckoutTracker(clock)
    first, second = object(), object()
    leaky_caller(tracker, first)
    clock.advance(20)
    leaky_caller(tracker, second)
    clock.advance(10)
    late = tracker.overdue(15)
    assert [entry.item for entry in late] == [first]
    assert late[0].held_for == 30 and late[0].since == 1000
    assert late[0].site is not None
    # The innermost frame is the caller of the tracker (a pool's own frames are skipped).
    assert late[0].site[-1].name == "leaky_caller"
    assert [entry.item for entry in tracker.outstanding()] == [first, second]
    tracker.returned(first)
    tracker.returned(second)
    tracker.returned(second)  # twice is harmless
    assert tracker.outstanding() == []


def test_an_overdue_session_is_reported_once_naming_where(clock: FakeClock) -> None:
    tracker: stats.CheckoutTracker[object] = stats.CheckoutTracker(clock)
    item = Item()
    leaky_caller(tracker, item)
    clock.advance(61)
    with pytest.warns(SessionLeakWarning, match=r"sessions/s1 has been checked out for 61\.0s"):
        assert tracker.warn_overdue("FixedSizePool", 60) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tracker.warn_overdue("FixedSizePool", 60) == 1  # still overdue, not re-reported
    assert "leaky_caller" in stats.where(tracker.overdue(60)[0])


def test_counters_count_and_pop() -> None:
    counters = stats.Counters([stats.PINGS, stats.SESSIONS_DELETED])
    counters.add(stats.PINGS)
    counters.add(stats.SESSIONS_DELETED, 3)
    assert counters.snapshot() == {"pings": 1, "sessions_deleted": 3}
    assert counters.pop() == {"pings": 1, "sessions_deleted": 3}
    assert counters.snapshot() == {"pings": 0, "sessions_deleted": 0}


def test_gauges_report_pool_max_0_when_unbounded() -> None:
    bounded = stats.gauges(size=3, available=1, in_use=2, maximum=5, waiting=0)
    assert bounded == {
        "pool_size": 3,
        "pool_available": 1,
        "pool_in_use": 2,
        "pool_max": 5,
        "requests_waiting": 0,
    }
    assert set(bounded) == set(stats.COMMON)
    unbounded = stats.gauges(size=0, available=0, in_use=0, maximum=None, waiting=0)
    assert set(unbounded) == set(stats.COMMON)
    assert unbounded["pool_max"] == stats.UNBOUNDED == 0
