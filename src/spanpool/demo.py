"""``spanpool demo``: a short concurrent bank-transfer workload against an embedded LocalSpanner.

It runs on the client's main road, one multiplexed session for the whole ``Database``, taken
over by a ``MultiplexedPool``: the session is made once at bind, every transfer and read runs on
it, and halfway through the server loses it, which the pool replaces once without a failed
request.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .pools import MultiplexedPool
from .testing import LocalSpanner

SCHEMA = [
    "CREATE TABLE Accounts (Id INT64 NOT NULL, Owner STRING(MAX), Balance INT64 NOT NULL) "
    "PRIMARY KEY (Id)"
]
INITIAL_BALANCE = 1000


@dataclass
class Tally:
    transfers: int = 0
    reads: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, *, transfers: int = 0, reads: int = 0) -> None:
        with self.lock:
            self.transfers += transfers
            self.reads += reads


def _transfer(transaction: Any, source: int, target: int, amount: int) -> None:
    from google.cloud.spanner_v1 import param_types

    rows = transaction.execute_sql(
        "SELECT Id, Balance FROM Accounts WHERE Id IN UNNEST(@ids)",
        params={"ids": [source, target]},
        param_types={"ids": param_types.Array(param_types.INT64)},
    )
    balances = {row[0]: row[1] for row in rows}
    if balances[source] < amount:
        return
    transaction.batch_update(
        [
            (
                "UPDATE Accounts SET Balance = Balance - @amount WHERE Id = @id",
                {"amount": amount, "id": source},
                {"amount": param_types.INT64, "id": param_types.INT64},
            ),
            (
                "UPDATE Accounts SET Balance = Balance + @amount WHERE Id = @id",
                {"amount": amount, "id": target},
                {"amount": param_types.INT64, "id": param_types.INT64},
            ),
        ]
    )


def total_balance(database: Any) -> int:
    with database.snapshot() as snapshot:
        (row,) = snapshot.execute_sql("SELECT SUM(Balance) FROM Accounts")
        return int(row[0])


def _worker(database: Any, accounts: int, deadline: float, tally: Tally, seed: int) -> None:
    rng = random.Random(seed)
    while time.monotonic() < deadline:
        try:
            if rng.random() < 0.8:
                source, target = rng.sample(range(accounts), 2)
                database.run_in_transaction(_transfer, source, target, rng.randint(1, 50))
                tally.add(transfers=1)
            else:
                total_balance(database)
                tally.add(reads=1)
        except Exception as exc:  # reported in the summary, the demo goes on
            with tally.lock:
                tally.errors.append(f"{type(exc).__name__}: {exc}")


def _progress(elapsed: float, seconds: float, tally: Tally, aborts: int, final: bool) -> str:
    width = 30
    done = min(width, int(width * elapsed / seconds)) if seconds else width
    bar = "#" * done + "." * (width - done)
    line = (
        f"[{bar}] {elapsed:4.1f}s  transfers {tally.transfers:6d}  reads {tally.reads:5d}  "
        f"aborts retried {aborts:4d}"
    )
    return line + ("\n" if final else "")


def run_demo(*, threads: int = 6, seconds: float = 5.0, accounts: int = 20) -> int:
    if threads < 1 or seconds <= 0 or accounts < 2:
        print("spanpool demo: need threads >= 1, seconds > 0 and accounts >= 2", file=sys.stderr)
        return 2
    out = sys.stdout
    interactive = out.isatty()
    print(
        "spanpool demo: bank transfers through the official client's Database, whose one\n"
        "multiplexed session spanpool's MultiplexedPool owns; halfway through, the server\n"
        "loses that session, and the pool replaces it without a failed request.\n",
        file=out,
    )
    with LocalSpanner(ddl=SCHEMA, lock_timeout=0.02) as server:
        print(f"LocalSpanner (a local Spanner server) listening on {server.endpoint}", file=out)
        pool = MultiplexedPool()
        database = server.database("demo", pool=pool)
        first = pool.get()  # ready at bind: this only waits for the creation bind started
        print(f"spanpool MultiplexedPool bound: multiplexed session {first.session_id}", file=out)
        with database.batch() as batch:
            batch.insert(
                "Accounts",
                ("Id", "Owner", "Balance"),
                [(i, f"owner-{i}", INITIAL_BALANCE) for i in range(accounts)],
            )
        expected = accounts * INITIAL_BALANCE
        print(
            f"{accounts} accounts of {INITIAL_BALANCE}; {threads} threads transfer money "
            f"for {seconds:g}s",
            file=out,
        )
        tally = Tally()
        started = time.monotonic()
        deadline = started + seconds
        workers = [
            threading.Thread(
                target=_worker, args=(database, accounts, deadline, tally, n), daemon=True
            )
            for n in range(threads)
        ]
        for worker in workers:
            worker.start()
        last_print = 0.0
        lost: list[str] = []
        while any(w.is_alive() for w in workers):
            time.sleep(0.1)
            elapsed = time.monotonic() - started
            if not lost and elapsed >= seconds / 2:
                lost = server.lose_multiplexed_sessions(database.name)
                gone = lost[0].rsplit("/", 1)[-1]
                note = f"the server lost multiplexed session {gone}: the pool makes one successor"
                out.write(("\r" if interactive else "") + f"{note} for all\n")
            aborts = _aborts(server)
            if interactive:
                out.write("\r" + _progress(elapsed, seconds, tally, aborts, False))
                out.flush()
            elif elapsed - last_print >= 1.0 and elapsed < seconds:  # the last line follows
                last_print = elapsed
                out.write(_progress(elapsed, seconds, tally, aborts, True))
        elapsed = time.monotonic() - started
        aborts = _aborts(server)
        out.write(("\r" if interactive else "") + _progress(elapsed, seconds, tally, aborts, True))
        total = total_balance(database)
        counts = server.request_counts()
        stats = pool.get_stats()
        print(f"transactions committed: {tally.transfers}", file=out)
        print(f"snapshot reads:         {tally.reads}", file=out)
        print(
            f"aborts retried:         {aborts} (lock conflicts between the threads, "
            "retried by run_in_transaction)",
            file=out,
        )
        print(
            f"sessions created:       {server.sessions_created()} (multiplexed: one at bind, "
            "its successor)",
            file=out,
        )
        print(f"RPCs:                   {sum(counts.values())} ({_top(counts)})", file=out)
        print(
            f"multiplexed session:    generation {stats['generation']}, replaced "
            f"{stats['sessions_replaced']}, {stats['requests_served']} operations served, "
            "no RPC to get it",
            file=out,
        )
        database.close()  # returns at once; a multiplexed session cannot be deleted
        regular = server.session_count() - len(server.multiplexed_sessions())
        print(f"regular sessions on the server after close(): {regular}", file=out)
        print(f"total balance:          {total} (expected {expected})", file=out)
        for error in tally.errors[:5]:
            print(f"error: {error}", file=out)
        checks = {
            "the total balance is kept": total == expected,
            "no request failed": not tally.errors,
            "transfers were made": tally.transfers > 0,
            "the lost session was replaced once": stats["sessions_replaced"] == 1
            and counts.get("CreateSession", 0) == 2,
            "no session is left behind": regular == 0,
        }
        failed = [check for check, held in checks.items() if not held]
        if failed:
            print(f"FAILED: not {'; not '.join(failed)}", file=out)
            return 1
        print(f"OK: {', '.join(checks)}", file=out)
        return 0


def _aborts(server: LocalSpanner) -> int:
    return sum(n for (_, code), n in server.status_counts().items() if code == "ABORTED")


def _top(counts: dict[str, int]) -> str:
    ranked = sorted(counts.items(), key=lambda item: -item[1])[:4]
    return ", ".join(f"{method} {n}" for method, n in ranked)
