"""The DB-API ``Connection`` of :mod:`spanpool.frameworks.dbapi`: the official class, with
what it does to its own private state changed (it owns no pool, and closing it returns its
session whatever state it is in).

With :func:`~spanpool.bridge.common.client_of` and
:func:`~spanpool.bridge.common.emulator_host`, all that :mod:`spanpool.frameworks` needs of the
client's internals.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from google.cloud import spanner_dbapi as _official

__all__ = ["Connection"]


class Connection(_official.Connection):  # type: ignore[misc]
    """The official DB-API connection on a shared ``Database``: it owns no pool, and closing
    it returns its session whatever state it is in."""

    # Set by the official __init__, which has no annotations.
    is_closed: bool
    _transaction: Any
    _spanner_transaction_started: bool

    @property
    def _own_pool(self) -> bool:
        return False

    @_own_pool.setter
    def _own_pool(self, value: bool) -> None:
        # The official __init__ (which django-spanner calls again on a live connection)
        # claims the pool; a connection on a shared Database never owns it.
        pass

    @property
    def inside_transaction(self) -> bool:
        """Whether a read-write transaction is open (the official property, without its
        deprecation warning: sqlalchemy-spanner asks on every return to its pool)."""
        transaction = self._transaction
        return bool(
            transaction is not None and not transaction.committed and not transaction.rolled_back
        )

    def close(self) -> None:
        """Close the connection: roll back an open read-write transaction, return the
        session to the pool, never touch the pool itself. Closing twice does nothing."""
        if self.is_closed:
            return
        try:
            transaction = self._transaction
            if (
                self._spanner_transaction_started
                and not self._read_only
                and transaction is not None
                and not transaction.committed
                and not transaction.rolled_back
            ):
                transaction.rollback()
        finally:
            self.is_closed = True
            self._transaction = None
            self._snapshot = None
            self._spanner_transaction_started = False
            self._transaction_begin_marked = False
            self._release_session()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Commit when the block succeeded, roll back when it raised; close either way."""
        try:
            if exc_type is None:
                self.commit()
            elif self._client_transaction_started:
                self.rollback()
        finally:
            self.close()
