"""spanpool's seed pools against LocalSpanner, through the unmodified official client."""

from __future__ import annotations

import queue
import threading
from typing import Any

import pytest
from google.cloud.spanner_v1 import pool as official

import spanpool
from spanpool import (
    AbstractSessionPool,
    BurstyPool,
    FixedSizePool,
    NotCheckedOut,
    PingingPool,
    PoolClosed,
    PoolFull,
    PoolTimeout,
    SessionCheckout,
    TransactionPingingPool,
)
from spanpool.testing import LocalSpanner

from ..conftest import ACCOUNTS_DDL

POOLS = [BurstyPool, FixedSizePool, PingingPool, TransactionPingingPool]


def _make(cls: type, **kw: Any) -> Any:
    if cls is BurstyPool:
        kw = {"target_size": kw.pop("size", 10), **kw}
    return cls(**kw)


def _use(database: Any, rounds: int) -> None:
    for i in range(rounds):
        with database.snapshot() as snapshot:
            assert list(snapshot.execute_sql("SELECT 1")) == [[1]]
        database.run_in_transaction(
            lambda t, i=i: t.execute_update(
                f"INSERT INTO Accounts (Id, Owner, Balance) VALUES ({i}, 'o', {i})"
            )
        )


@pytest.mark.parametrize("cls", POOLS, ids=lambda c: c.__name__)
def test_drop_in_for_the_official_database_any_number_of_uses(
    server: LocalSpanner, regular_sessions: None, cls: type
) -> None:
    pool = _make(cls, size=3)
    database = server.database(f"dropin{cls.__name__.lower()}", pool=pool)
    _use(database, 6)
    with database.snapshot() as snapshot:
        assert list(snapshot.execute_sql("SELECT COUNT(*) FROM Accounts")) == [[6]]
    stats = pool.get_stats()
    assert stats["pool_in_use"] == 0
    pool.close()
    assert server.session_count(database.name) == 0


def test_the_official_fixed_size_pool_breaks_on_its_second_use(
    server: LocalSpanner, regular_sessions: None
) -> None:
    # What spanpool's FixedSizePool fixes: in 3.71 a session used by a query comes back
    # with a naive last-use time, which the official pool compares with an aware one.
    database = server.database("officialfixed", pool=official.FixedSizePool(size=2))
    with pytest.raises(TypeError, match="offset-naive and offset-aware"):
        _use(database, 3)


@pytest.mark.parametrize("cls", POOLS, ids=lambda c: c.__name__)
def test_no_rpc_on_a_warm_checkout(server: LocalSpanner, cls: type) -> None:
    pool = _make(cls, size=2)
    server.database(f"warm{cls.__name__.lower()}", pool=pool)
    pool.put(pool.get())  # a BurstyPool creates its first session here
    server.reset_counts()
    for _ in range(50):
        pool.put(pool.get())
    assert server.request_counts() == {}
    pool.close()


def test_the_official_bursty_pool_asks_the_server_on_every_checkout(
    server: LocalSpanner,
) -> None:
    pool = official.BurstyPool(target_size=2)
    server.database("officialbursty", pool=pool)
    pool.put(pool.get())
    server.reset_counts()
    for _ in range(10):
        pool.put(pool.get())
    assert server.request_counts() == {"GetSession": 10}


@pytest.mark.parametrize("cls", POOLS, ids=lambda c: c.__name__)
def test_labels_and_role_are_sent_on_every_creation_path(server: LocalSpanner, cls: type) -> None:
    labels = {"app": "billing", "tier": "gold"}
    pool = _make(cls, size=2, labels=labels, database_role="auditor")
    database = server.database(f"labels{cls.__name__.lower()}", pool=pool)
    held = [pool.get() for _ in range(2)]
    if cls is BurstyPool:
        held.append(pool.get())  # more than idle: created with CreateSession
    assert server.session_labels(database.name) == [labels] * len(held)
    roles = {database.spanner_api.get_session(name=s.name).creator_role for s in held}
    assert roles == {"auditor"}
    for session in held:
        pool.put(session)
    pool.close()


def test_bind_creates_exactly_size_sessions_in_capped_batches() -> None:
    with LocalSpanner(max_sessions_per_batch=7) as server:
        pool = FixedSizePool(size=250)
        database = server.database("bind", pool=pool)
        assert server.session_count(database.name) == 250
        calls = server.request_counts()["BatchCreateSessions"]
        assert 36 <= calls <= 40  # 250 / 7, in 3 groups of 100 asked for concurrently
        assert pool.get_stats()["pool_available"] == 250
        pool.close()


def test_waiters_are_served_first_come_first_served(server: LocalSpanner) -> None:
    pool = FixedSizePool(size=1, default_timeout=30)
    server.database("fifo", pool=pool)
    held = pool.get()
    order: list[int] = []
    threads = []
    for n in range(5):

        def wait(n: int = n) -> None:
            session = pool.get()
            order.append(n)
            pool.put(session)

        thread = threading.Thread(target=wait)
        thread.start()
        threads.append(thread)
        # The next waiter starts only once this one is queued.
        while pool.get_stats()["requests_waiting"] < n + 1:
            threading.Event().wait(0.001)
    pool.put(held)
    for thread in threads:
        thread.join(10)
    assert order == [0, 1, 2, 3, 4]
    pool.close()


def test_get_times_out_with_an_error_that_is_queue_empty(server: LocalSpanner) -> None:
    pool = FixedSizePool(size=1, default_timeout=0.05)
    server.database("timeout", pool=pool)
    session = pool.get()
    with pytest.raises(queue.Empty) as info:
        pool.get()
    assert isinstance(info.value, PoolTimeout)
    assert "0.05" in str(info.value)
    with pytest.raises(PoolTimeout):
        pool.get(timeout=0)
    assert pool.get_stats()["requests_timeouts"] == 2
    pool.put(session)
    pool.close()


def test_foreign_double_and_closed_use_are_refused(server: LocalSpanner) -> None:
    pool = FixedSizePool(size=2)
    other = FixedSizePool(size=1)
    server.database("mine", pool=pool)
    other_db = server.database("theirs", pool=other)
    session = pool.get()
    pool.put(session)
    with pytest.raises(NotCheckedOut, match="not checked out"):
        pool.put(session)  # twice
    stranger = other.get()
    with pytest.raises(NotCheckedOut, match=other_db.name):
        pool.put(stranger)
    loose = other_db.session()
    loose.create()
    with pytest.raises(NotCheckedOut):
        pool.put(loose)
    assert pool.get_stats()["pool_available"] == 2  # nothing changed
    other.put(stranger)
    pool.close()
    with pytest.raises(PoolClosed):
        pool.get()
    other.close()


def test_put_on_a_full_pool_raises_queue_full(server: LocalSpanner) -> None:
    pool = FixedSizePool(size=1)
    server.database("full", pool=pool)
    extra = pool._new_session()
    extra.create()
    with pytest.raises(queue.Full) as info:
        pool.put(extra)
    assert isinstance(info.value, PoolFull)
    pool.close()


def test_bursty_pool_creates_when_empty_and_deletes_when_full(server: LocalSpanner) -> None:
    pool = BurstyPool(target_size=2)
    database = server.database("bursty", pool=pool)
    held = [pool.get() for _ in range(3)]
    assert server.session_count(database.name) == 3
    for session in held:
        pool.put(session)
    assert server.session_count(database.name) == 2
    assert pool.get_stats()["sessions_deleted"] == 1
    pool.close()


class ListPool(AbstractSessionPool):
    """The custom pool of the documentation: a list, sessions created on demand."""

    def __init__(self) -> None:
        super().__init__(labels={"custom": "yes"})
        self.sessions: list[Any] = []

    def bind(self, database: Any) -> None:
        self._database = database

    def get(self, *args: Any, **kwargs: Any) -> Any:
        if self.sessions:
            return self.sessions.pop()
        session = self._new_session()
        session.create()
        return session

    def put(self, session: Any) -> None:
        self.sessions.append(session)

    def clear(self) -> None:
        while self.sessions:
            self.sessions.pop().delete()


def test_a_custom_pool_works_with_the_official_database(
    server: LocalSpanner, regular_sessions: None
) -> None:
    pool = ListPool()
    database = server.database("custom", pool=pool)
    _use(database, 3)
    assert len(pool.sessions) == 1
    assert server.session_labels(database.name) == [{"custom": "yes"}]
    with SessionCheckout(pool) as session:
        assert session is not None
        assert pool.sessions == []
    assert len(pool.sessions) == 1
    pool.clear()
    assert server.session_count(database.name) == 0


def test_session_checkout_returns_the_session_even_when_the_block_fails(
    server: LocalSpanner,
) -> None:
    pool = FixedSizePool(size=1)
    server.database("checkout", pool=pool)
    with pytest.raises(RuntimeError), pool.session():
        raise RuntimeError("boom")
    assert pool.get_stats()["pool_available"] == 1
    pool.close()


def test_transaction_pinging_pool_hands_out_begun_transactions(
    server: LocalSpanner,
) -> None:
    pool = TransactionPingingPool(size=2)
    database = server.database("txpool", pool=pool)
    assert server.request_counts()["BeginTransaction"] == 2
    session = pool.get()
    transaction = session.transaction()
    assert transaction._transaction_id is not None  # begun before it was handed out
    transaction.insert("Accounts", ("Id", "Owner", "Balance"), [(1, "a", 5)])
    transaction.commit()
    assert server.request_counts()["BeginTransaction"] == 2  # no new round trip
    pool.put(session)
    assert pool.begin_pending_transactions() == 1
    with database.snapshot() as snapshot:
        assert list(snapshot.execute_sql("SELECT Balance FROM Accounts")) == [[5]]
    pool.close()


def test_stats_have_the_documented_keys(server: LocalSpanner) -> None:
    pool = PingingPool(size=2)
    server.database("stats", pool=pool)
    pool.put(pool.get())
    stats = pool.get_stats()
    for key in (
        "pool_max",
        "pool_size",
        "pool_available",
        "pool_in_use",
        "requests_waiting",
        "requests_num",
        "requests_wait_ms",
        "requests_timeouts",
        "sessions_created",
        "sessions_deleted",
        "sessions_replaced",
        "pings",
    ):
        assert key in stats, key
    assert stats["pool_max"] == 2 and stats["sessions_created"] == 2
    assert stats["requests_num"] == 1
    assert pool.pop_stats()["requests_num"] == 1
    assert pool.get_stats()["requests_num"] == 0
    pool.close()


def test_public_names() -> None:
    for name in (
        "AbstractSessionPool",
        "BurstyPool",
        "FixedSizePool",
        "PingingPool",
        "TransactionPingingPool",
        "SessionCheckout",
    ):
        assert hasattr(spanpool, name)
    assert ACCOUNTS_DDL
