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
