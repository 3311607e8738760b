"""Row and table locks of one database's read-write transactions, with wound-wait.

A read-write transaction locks what it reads (shared) and what it writes (exclusive), on
rows (by table and key) or on whole tables (a read that scans a table, a delete of a key
range), and keeps its locks until it ends, as Cloud Spanner does. Row locks come with an
intention lock on their table, so that a table lock and a row lock of the same table conflict.

Deadlocks cannot happen: when a lock is held by a *younger* transaction, the older one
*wounds* it (aborts it, freeing its locks) and takes the lock; when it is held by an *older*
one, the younger waits. Age is the transaction's priority, which a retry inherits (see
``Transaction.priority``), so a transaction that keeps being wounded ends up the oldest.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from .transactions import Transaction

SHARED, EXCLUSIVE, INTENT_SHARED, INTENT_EXCLUSIVE = "S", "X", "IS", "IX"
_COMPATIBLE = {
    (INTENT_SHARED, INTENT_SHARED),
    (INTENT_SHARED, INTENT_EXCLUSIVE),
    (INTENT_SHARED, SHARED),
    (INTENT_EXCLUSIVE, INTENT_SHARED),
    (INTENT_EXCLUSIVE, INTENT_EXCLUSIVE),
    (SHARED, INTENT_SHARED),
    (SHARED, SHARED),
}

Key: TypeAlias = tuple[object, ...]
Resource: TypeAlias = tuple[str, Key | None]  # (table, key), or (table, None) for the table
Request: TypeAlias = tuple[Resource, str]


def row(table: str, key: Key, mode: str) -> list[Request]:
    """A row lock, with the intention lock on its table."""
    intent = INTENT_EXCLUSIVE if mode == EXCLUSIVE else INTENT_SHARED
    name = table.lower()
    return [((name, None), intent), ((name, key), mode)]


def table(name: str, mode: str) -> list[Request]:
    return [((name.lower(), None), mode)]


class LockTimeout(Exception):
    """Waiting for an older transaction took longer than allowed."""


class LockManager:
    def __init__(self) -> None:
        self._changed = threading.Condition(threading.RLock())
        self._holders: dict[Resource, dict[Transaction, set[str]]] = {}
        self._held: dict[Transaction, set[Resource]] = {}

    def _blockers(self, txn: Transaction, requests: Iterable[Request]) -> set[Transaction]:
        blockers = set()
        for resource, mode in requests:
            for other, modes in self._holders.get(resource, {}).items():
                if other is not txn and any((mode, m) not in _COMPATIBLE for m in modes):
                    blockers.add(other)
        return blockers

    def try_lock(self, txn: Transaction, requests: list[Request]) -> set[Transaction]:
        """Grant every request, wounding younger holders in the way; or, when older
        transactions hold conflicting locks, grant nothing and return them."""
        with self._changed:
            blockers = self._blockers(txn, requests)
            for other in [b for b in blockers if txn.priority < b.priority]:
                wounded = other.wound(
                    "Transaction was aborted: it held a lock that an older transaction "
                    f"needed ({txn.id.decode(errors='replace')})."
                )
                if wounded:  # (one that is writing its commit is waited for instead)
                    self._release(other)
                    blockers.discard(other)
            if blockers:
                return blockers
            held = self._held.setdefault(txn, set())
            for resource, mode in requests:
                self._holders.setdefault(resource, {}).setdefault(txn, set()).add(mode)
                held.add(resource)
            return blockers

    def lock(
        self,
        txn: Transaction,
        requests: list[Request],
        timeout: float,
        stale: Callable[[Transaction], bool],
    ) -> None:
        """Take the locks, waiting for older holders. A holder for which ``stale`` is true
        (idle too long) is aborted instead of waited for. Raises ``LockTimeout`` after
        ``timeout`` seconds, or returns early without the locks once ``txn`` is no longer
        active (the caller checks)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while txn.active:
                blockers = self.try_lock(txn, requests)
                if not blockers:
                    return
                for other in [b for b in blockers if stale(b)]:
                    if other.wound("Transaction was aborted because it was idle for too long."):
                        self._release(other)
                        blockers.discard(other)
                if not blockers:
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LockTimeout
                self._changed.wait(min(remaining, 0.5))

    def release(self, txn: Transaction) -> None:
        with self._changed:
            self._release(txn)

    def _release(self, txn: Transaction) -> None:
        resources = self._held.pop(txn, None)
        if not resources:
            return
        for resource in resources:
            holders = self._holders.get(resource)
            if holders is not None:
                holders.pop(txn, None)
                if not holders:
                    del self._holders[resource]
        self._changed.notify_all()

    def holds(self, txn: Transaction) -> bool:
        with self._changed:
            return bool(self._held.get(txn))
