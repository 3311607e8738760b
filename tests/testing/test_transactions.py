"""LocalSpanner's transactions: row locks with wound-wait, versions, the multiplexed protocol.

Driven by the unmodified official client over real gRPC.
"""

from __future__ import annotations

import datetime
import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from google.api_core import exceptions
from google.cloud.spanner_v1 import (
    BeginTransactionRequest,
    CommitRequest,
    CreateSessionRequest,
    ExecuteSqlRequest,
    KeySet,
    Mutation,
    Session,
    TransactionOptions,
    TransactionSelector,
    param_types,
)

from spanpool.testing import LocalSpanner

from ..conftest import ACCOUNTS_DDL, FakeClock, begun_transactions, run_in_threads

INT64 = param_types.INT64


@pytest.fixture
def server() -> Iterator[LocalSpanner]:
    with LocalSpanner(ddl=ACCOUNTS_DDL, abort_retry_delay=0.001) as srv:
        yield srv


def _accounts(database: Any, n: int, balance: int = 100) -> None:
    with database.batch() as batch:
        batch.insert(
            "Accounts", ("Id", "Owner", "Balance"), [(i, f"o{i}", balance) for i in range(n)]
        )


def _balances(database: Any) -> dict[int, int]:
    with database.snapshot() as snapshot:
        return dict(snapshot.execute_sql("SELECT Id, Balance FROM Accounts"))  # type: ignore[arg-type]


def _balance(transaction: Any, account: int) -> int:
    rows = list(
        transaction.execute_sql(
            "SELECT Balance FROM Accounts WHERE Id = @id",
            params={"id": account},
            param_types={"id": INT64},
        )
    )
    return int(rows[0][0])


def _multiplexed_session(database: Any) -> str:
    request = CreateSessionRequest(database=database.name, session=Session(multiplexed=True))
    return str(database.spanner_api.create_session(request=request).name)


def _begin(api: Any, session: str, previous: bytes = b"") -> bytes:
    """A read-write transaction begun on a multiplexed session; a retry names the transaction
    it retries as ``previous``."""
    read_write = TransactionOptions.ReadWrite(multiplexed_session_previous_transaction_id=previous)
    options = TransactionOptions(read_write=read_write)
    return bytes(api.begin_transaction(session=session, options=options).id)


def _execute(api: Any, session: str, transaction: bytes, sql: str, seqno: int = 0) -> Any:
    request = ExecuteSqlRequest(
        session=session, sql=sql, transaction=TransactionSelector(id=transaction), seqno=seqno
    )
    return api.execute_sql(request=request)


def _move(transaction: Any, source: int, target: int, amount: int) -> None:
    transaction.batch_update(
        [
            (
                "UPDATE Accounts SET Balance = Balance - @a WHERE Id = @id",
                {"a": amount, "id": source},
                {"a": INT64, "id": INT64},
            ),
            (
                "UPDATE Accounts SET Balance = Balance + @a WHERE Id = @id",
                {"a": amount, "id": target},
                {"a": INT64, "id": INT64},
            ),
        ]
    )


def test_transfers_between_disjoint_pairs_commit_in_parallel(server: LocalSpanner) -> None:
    """N transactions each read their own pair of accounts, then all wait for each other
    while holding their locks, then write and commit: possible only if transactions on
    different rows run at the same time. None of them is aborted."""
    database = server.database("parallel")
    pairs = 8
    _accounts(database, 2 * pairs)
    together = threading.Barrier(pairs, timeout=60)
    errors: list[BaseException] = []

    def transfer(pair: int) -> None:
        source, target = 2 * pair, 2 * pair + 1
        attempts = 0

        def work(transaction: Any) -> None:
            nonlocal attempts
            attempts += 1
            assert _balance(transaction, source) == 100
            assert _balance(transaction, target) == 100
            if attempts == 1:
                together.wait()  # every transaction holds its read locks here
            _move(transaction, source, target, 10 + pair)

        try:
            database.run_in_transaction(work)
            assert attempts == 1
        except BaseException as exc:  # reported below
            errors.append(exc)

    run_in_threads(pairs, transfer)
    assert errors == []
    balances = _balances(database)
    for pair in range(pairs):
        assert (balances[2 * pair], balances[2 * pair + 1]) == (90 - pair, 110 + pair)
    assert ("Commit", "ABORTED") not in server.status_counts()


def test_money_is_neither_created_nor_lost_under_contention(server: LocalSpanner) -> None:
    """Six threads move money between five accounts at random: conflicting transactions
    wait or are aborted and retried, and every balance equals the initial one plus the
    transfers that committed."""
    database = server.database("contention")
    accounts, threads_count, transfers = 5, 6, 25
    _accounts(database, accounts)
    committed: list[tuple[int, int, int]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(transfers):
                source, target = rng.sample(range(accounts), 2)
                amount = rng.randint(1, 20)

                def work(
                    transaction: Any, s: int = source, t: int = target, a: int = amount
                ) -> bool:
                    if _balance(transaction, s) < a:
                        return False
                    _move(transaction, s, t, a)
                    return True

                if database.run_in_transaction(work):
                    with lock:
                        committed.append((source, target, amount))
        except BaseException as exc:
            errors.append(exc)

    run_in_threads(threads_count, worker)
    assert errors == []
    expected = dict.fromkeys(range(accounts), 100)
    for source, target, amount in committed:
        expected[source] -= amount
        expected[target] += amount
    assert _balances(database) == expected
    assert all(balance >= 0 for balance in expected.values())
    assert committed


def test_an_older_transaction_wounds_a_younger_one_holding_its_row(
    server: LocalSpanner,
) -> None:
    database = server.database("wound")
    _accounts(database, 2)
    first, second = begun_transactions(database, 2)  # the first is the older
    _move(second, 0, 1, 5)  # the younger one locks rows 0 and 1
    assert _balance(first, 0) == 100  # the older one takes row 0 at once: the younger is wounded
    first.commit()
    with pytest.raises(exceptions.Aborted) as aborted:
        second.commit()
    assert aborted.value.errors[0].trailing_metadata() is not None  # carries RetryInfo
    assert _balances(database) == {0: 100, 1: 100}


def test_a_younger_transaction_waits_for_an_older_one(server: LocalSpanner) -> None:
    database = server.database("wait")
    _accounts(database, 2)
    first, second = begun_transactions(database, 2)  # the first is the older
    _move(first, 0, 1, 7)
    seen: list[int] = []
    reader = threading.Thread(target=lambda: seen.append(_balance(second, 0)))
    reader.start()
    first.commit()  # the waiting reader goes on, and reads the committed balance
    reader.join(60)
    assert seen == [93]
    second.commit()


def test_an_idle_transaction_loses_its_locks_to_one_that_needs_them() -> None:
    clock = FakeClock()
    with LocalSpanner(ddl=ACCOUNTS_DDL, clock=clock) as server:
        database = server.database("idle")
        _accounts(database, 2)
        [holder] = begun_transactions(database, 1)
        _move(holder, 0, 1, 1)  # then never committed nor rolled back
        seen: list[int] = []

        def later() -> None:
            seen.append(database.run_in_transaction(lambda t: _balance(t, 0)))

        thread = threading.Thread(target=later)
        thread.start()
        clock.advance(11)  # past transaction_idle_timeout
        thread.join(60)
        assert seen == [100]
        with pytest.raises(exceptions.Aborted, match="idle"):
            holder.commit()


def test_a_retry_keeps_the_age_of_the_transaction_it_retries() -> None:
    """A transaction begun with multiplexed_session_previous_transaction_id is as old as its
    predecessor: it wounds a younger holder instead of waiting (here: instead of being
    aborted at once, as lock_timeout=0)."""
    with LocalSpanner(ddl=ACCOUNTS_DDL, lock_timeout=0) as server:
        database = server.database("retry")
        _accounts(database, 1)
        api = database.spanner_api
        session = _multiplexed_session(database)
        old = _begin(api, session)
        young = _begin(api, session)
        _execute(api, session, young, "UPDATE Accounts SET Balance = 1 WHERE Id = 0", seqno=1)
        retry = _begin(api, session, previous=old)
        rows = _execute(api, session, retry, "SELECT Balance FROM Accounts WHERE Id = 0")
        assert list(rows.rows[0]) == ["100"]
        with pytest.raises(exceptions.Aborted):
            api.commit(request=CommitRequest(session=session, transaction_id=young))


def test_commit_needs_the_precommit_token_with_the_highest_sequence_number(
    server: LocalSpanner,
) -> None:
    database = server.database("tokens")
    _accounts(database, 1)
    api = database.spanner_api
    session = _multiplexed_session(database)
    txn = _begin(api, session)
    tokens = []
    for seqno in (1, 2):
        sql = f"UPDATE Accounts SET Balance = {seqno} WHERE Id = 0"
        tokens.append(_execute(api, session, txn, sql, seqno=seqno).precommit_token)
    assert [t.seq_num for t in tokens] == [1, 2]
    for token in (None, tokens[0]):
        with pytest.raises(exceptions.FailedPrecondition, match="precommit token"):
            api.commit(
                request=CommitRequest(session=session, transaction_id=txn, precommit_token=token)
            )
    api.commit(
        request=CommitRequest(session=session, transaction_id=txn, precommit_token=tokens[1])
    )
    assert _balances(database) == {0: 2}


def test_a_mutation_only_transaction_begins_with_its_mutation_key(server: LocalSpanner) -> None:
    database = server.database("mutation-key")
    api = database.spanner_api
    session = _multiplexed_session(database)
    insert = Mutation(
        insert=Mutation.Write(
            table="Accounts", columns=["Id", "Owner", "Balance"], values=[["7", "x", "70"]]
        )
    )
    begun = api.begin_transaction(
        request=BeginTransactionRequest(
            session=session,
            options=TransactionOptions(read_write=TransactionOptions.ReadWrite()),
            mutation_key=insert,
        )
    )
    assert begun.precommit_token.seq_num == 1
    api.commit(
        request=CommitRequest(
            session=session,
            transaction_id=begun.id,
            mutations=[insert],
            precommit_token=begun.precommit_token,
        )
    )
    assert _balances(database) == {7: 70}


def test_a_strong_snapshot_keeps_reading_what_it_read_first(server: LocalSpanner) -> None:
    database = server.database("snapshot")
    _accounts(database, 3)
    with database.snapshot(multi_use=True) as snapshot:
        before = list(snapshot.read("Accounts", ("Id", "Balance"), KeySet(all_=True)))
        with database.batch() as batch:
            batch.delete("Accounts", KeySet(keys=[[1]]))
            batch.update("Accounts", ("Id", "Balance"), [(0, 1)])
        assert list(snapshot.read("Accounts", ("Id", "Balance"), KeySet(all_=True))) == before
        assert list(snapshot.execute_sql("SELECT Id, Balance FROM Accounts ORDER BY Id")) == before
    assert _balances(database) == {0: 1, 2: 100}


def test_reads_at_a_timestamp_see_the_data_of_that_time(server: LocalSpanner) -> None:
    database = server.database("timestamps")
    with database.batch() as batch:
        batch.insert("Accounts", ("Id", "Owner", "Balance"), [(1, "a", 10)])
    first = batch.committed
    with database.batch() as batch:
        batch.update("Accounts", ("Id", "Balance"), [(1, 20)])
        batch.insert("Accounts", ("Id", "Owner", "Balance"), [(2, "b", 30)])
    second = batch.committed
    sql = "SELECT Id, Balance FROM Accounts ORDER BY Id"
    before_any = first - datetime.timedelta(microseconds=1)
    for at, expected in ((before_any, []), (first, [[1, 10]]), (second, [[1, 20], [2, 30]])):
        with database.snapshot(read_timestamp=at) as snapshot:
            assert [list(r) for r in snapshot.execute_sql(sql)] == expected
        with database.snapshot(read_timestamp=at) as snapshot:
            rows = snapshot.read("Accounts", ("Id", "Balance"), KeySet(all_=True))
            assert [list(r) for r in rows] == expected
    too_old = datetime.timedelta(hours=2)
    with (
        database.snapshot(exact_staleness=too_old) as snapshot,
        pytest.raises(exceptions.FailedPrecondition, match="retention"),
    ):
        list(snapshot.execute_sql(sql))


def test_batch_dml_returns_the_counts_so_far_and_the_failing_status(server: LocalSpanner) -> None:
    database = server.database("batch")
    _accounts(database, 1)

    def work(transaction: Any) -> tuple[Any, list[int]]:
        return transaction.batch_update(  # type: ignore[no-any-return]
            [
                "UPDATE Accounts SET Balance = 5 WHERE Id = 0",
                "INSERT INTO Accounts (Id, Owner, Balance) VALUES (0, 'dup', 1)",
                "UPDATE Accounts SET Balance = 6 WHERE Id = 0",
            ]
        )

    status, counts = database.run_in_transaction(work)
    assert counts == [1]
    assert status.code == 6  # ALREADY_EXISTS
    assert "Statement 1" in status.message
    assert _balances(database) == {0: 5}


def test_results_larger_than_the_client_receive_limit_stream_in_chunks(
    server: LocalSpanner,
) -> None:
    database = server.database("large")
    big = "x" * (5 * 1024 * 1024)  # one value larger than a gRPC message may be by default
    rows = [(i, big[: (i + 1) * 1024 * 1024] + str(i), i) for i in range(4)]
    with database.batch() as batch:  # a commit of over 12 MiB
        batch.insert("Accounts", ("Id", "Owner", "Balance"), [*rows, (9, big, 9)])
    with database.snapshot() as snapshot:
        got = list(snapshot.execute_sql("SELECT Id, Owner, Balance FROM Accounts ORDER BY Id"))
    assert [tuple(r) for r in got] == [*rows, (9, big, 9)]


def test_partitioned_queries_and_reads_and_batch_writes(server: LocalSpanner) -> None:
    database = server.database("partitions")
    with database.mutation_groups() as groups:
        for i in range(3):
            groups.group().insert("Accounts", ("Id", "Owner", "Balance"), [(i, f"o{i}", i)])
        groups.group().insert("Accounts", ("Id", "Owner", "Balance"), [(0, "dup", 0)])
        responses = list(groups.batch_write())
    assert [list(r.indexes) for r in responses] == [[0], [1], [2], [3]]
    assert [r.status.code for r in responses] == [0, 0, 0, 6]

    snapshot = database.batch_snapshot()
    rows = []
    for batch in snapshot.generate_query_batches("SELECT Id FROM Accounts"):
        rows += [r[0] for r in snapshot.process_query_batch(batch)]
    for batch in snapshot.generate_read_batches("Accounts", ("Id",), KeySet(all_=True)):
        rows += [r[0] for r in snapshot.process_read_batch(batch)]
    snapshot.close()
    assert sorted(rows) == [0, 0, 1, 1, 2, 2]


def test_interleaved_transactions_replay_their_writes_in_foreign_key_order() -> None:
    """Two read-write transactions take turns on the writer: each one's writes are set aside
    and applied again, parents before the rows that refer to them."""
    ddl = [
        "CREATE TABLE Customers (Id INT64 NOT NULL, Name STRING(MAX)) PRIMARY KEY (Id)",
        "CREATE TABLE Carts (Id INT64 NOT NULL, CustomerId INT64 NOT NULL, CONSTRAINT FK "
        "FOREIGN KEY (CustomerId) REFERENCES Customers (Id)) PRIMARY KEY (Id)",
    ]
    with LocalSpanner(ddl=ddl) as server:
        database = server.database("replay")
        one, two = begun_transactions(database, 2)
        one.execute_update("INSERT INTO Customers (Id, Name) VALUES (1, 'a')")
        two.execute_update("INSERT INTO Customers (Id, Name) VALUES (2, 'b')")
        one.execute_update("INSERT INTO Carts (Id, CustomerId) VALUES (10, 1)")
        two.execute_update("INSERT INTO Carts (Id, CustomerId) VALUES (20, 2)")
        assert list(one.execute_sql("SELECT CustomerId FROM Carts WHERE Id = 10")) == [[1]]
        two.commit()
        one.commit()
        with database.snapshot() as snapshot:
            rows = snapshot.execute_sql("SELECT Id, CustomerId FROM Carts ORDER BY Id")
            assert [list(r) for r in rows] == [[10, 1], [20, 2]]
