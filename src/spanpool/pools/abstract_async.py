"""The session pool contract of the official client, for custom pools and spanpool's own."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from .._labels import label_problem
from ..bridge import client_async


class AsyncAbstractSessionPool:
    """What ``Database`` needs from a pool: ``bind``, ``get``, ``put``, ``clear``.

    A custom pool subclasses this and implements those four; ``bind`` receives the database
    (``instance.database(name, pool=MyPool())`` calls it) and should set ``self._database``,
    and ``_new_session()`` builds an uncreated session for it with the pool's labels and
    database role.
    """

    _database: Any = None

    def __init__(
        self, labels: dict[str, str] | None = None, database_role: str | None = None
    ) -> None:
        labels = {} if labels is None else dict(labels)
        problem = label_problem(labels)
        if problem is not None:
            raise ValueError(problem)
        if database_role is not None and not isinstance(database_role, str):
            raise TypeError(f"database_role must be a string, not {type(database_role).__name__}")
        self._labels = labels
        self._database_role = database_role

    @property
    def labels(self) -> dict[str, str]:
        """Labels given to every session the pool creates."""
        return self._labels

    @property
    def database_role(self) -> str | None:
        """Database role of the sessions the pool creates (the database's when not set)."""
        return self._database_role

    @property
    def _resource_info(self) -> dict[str, Any] | None:
        # The client reads this for its metrics labels.
        return client_async.resource_info(self._database)

    async def bind(self, database: Any) -> None:
        """Associate the pool with ``database``; a pool may create its sessions here."""
        raise NotImplementedError

    async def get(self, *args: Any, **kwargs: Any) -> Any:
        """Check a session out."""
        raise NotImplementedError

    async def put(self, session: Any) -> None:
        """Return a checked-out session."""
        raise NotImplementedError

    async def clear(self) -> None:
        """Delete the pool's sessions."""
        raise NotImplementedError

    def _new_session(self) -> Any:
        """An uncreated session for the bound database, with the pool's labels and role."""
        if self._database is None:
            raise RuntimeError(f"{type(self).__name__} is not bound to a database yet")
        return client_async.new_session(self._database, self._labels, self._database_role, self)

    def _session_gone(self, session: Any) -> None:
        """Told when a session of this pool turned out to be deleted; pools may react."""

    async def _check_in(self, session: Any, error: BaseException | None) -> None:
        """Take back a session after a ``with`` block that ended with ``error`` (or None)."""
        await self.put(session)

    def session(self, **kwargs: Any) -> AsyncSessionCheckout:
        """A context manager that checks a session out and always returns it."""
        return AsyncSessionCheckout(self, **kwargs)


class AsyncSessionCheckout:
    """``async with AsyncSessionCheckout(pool) as session:`` checks a session out and always
    returns it.

    ``kwargs`` go to ``pool.get``. If the block fails because the server no longer has the
    session, the session is dropped from the pool (and replaced when needed) instead of
    being returned.
    """

    def __init__(self, pool: AsyncAbstractSessionPool, **kwargs: Any) -> None:
        self._pool = pool
        self._kwargs = kwargs
        self._session: Any = None

    async def __aenter__(self) -> Any:
        self._session = await self._pool.get(**self._kwargs)
        return self._session

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session, self._session = self._session, None
        if session is not None:
            await self._pool._check_in(session, exc)
