"""Exceptions raised by spanpool."""

from __future__ import annotations

import queue


class SpanpoolError(Exception):
    """Base class of every error raised by spanpool."""


class PoolTimeout(SpanpoolError, queue.Empty):
    """No session became available within the timeout.

    A subclass of :class:`queue.Empty`, which the client's own pools raise in the same case,
    so existing ``except queue.Empty`` handlers keep working.
    """


class PoolClosed(SpanpoolError):
    """The pool was closed: it hands out no more sessions."""


class PoolUsageError(SpanpoolError, ValueError):
    """The pool was called in a way that breaks its contract; nothing was changed."""


class NotCheckedOut(PoolUsageError):
    """The session is not checked out from this pool: returned twice, or never taken from it."""


class PoolFull(SpanpoolError, queue.Full):
    """The pool has no room for the session being returned.

    A subclass of :class:`queue.Full`, which the client's own pools raise in the same case.
    """


class StoreError(SpanpoolError):
    """A shared store (SQLite file, Redis server) could not be used: unreachable, failing, or
    holding state of an incompatible shape. The pool's sessions are unchanged or accounted for
    by the store."""


class SessionLeakWarning(ResourceWarning):
    """A session stayed checked out longer than the pool's ``leak_threshold``."""


class PoolForked(SpanpoolError):
    """The pool was made in another process: sessions and channels cannot cross ``fork``."""


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type: a string, a boolean or None where a number is needed.

    Also a :class:`ValueError`, so that handlers of the errors spanpool raised for bad
    arguments before keep working.
    """
