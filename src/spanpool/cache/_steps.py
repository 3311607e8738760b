"""How ``CacheSessionPool`` runs its store steps.

- every step runs under the user's ``lock`` (when given) and turns the store's errors into
  :class:`~spanpool.errors.StoreError` naming the pool and the step;
- a step that failed after its effect on the server (a release, a discard, the record of a new
  session) goes to a journal and is retried before the pool's next operation, so that no session
  stays in limbo;
- the tokens of claims this process is working on (permits being created, sessions being
  refreshed or deleted) are *in flight*, so that finding lost claims leaves them alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal, TypeVar

from ..errors import SpanpoolError, StoreError
from .store import SessionRecord, Store

log = logging.getLogger("spanpool")

R = TypeVar("R")

# The steps the pool takes, read from the contract (the pool never closes a store it was given).
REQUIRED = tuple(
    name
    for name, value in vars(Store).items()
    if callable(value) and not name.startswith("_") and name != "close"
)


@dataclasses.dataclass(frozen=True)
class Unsettled:
    """A store step that failed after its effect on the server, retried at the next call."""

    kind: Literal["release", "discard", "created"]
    name: str
    token: str
    record: SessionRecord | None = None


class LockAdapter:
    """A user's ``lock``: ``acquire()``/``release()``, or a context manager."""

    def __init__(self, lock: Any) -> None:
        if callable(getattr(lock, "acquire", None)) and callable(getattr(lock, "release", None)):
            self._enter: Callable[[], object] = lock.acquire
            self._exit: Callable[[], object] = lock.release
        elif hasattr(lock, "__enter__") and hasattr(lock, "__exit__"):
            self._enter = lock.__enter__
            self._exit = functools.partial(lock.__exit__, None, None, None)
        else:
            raise TypeError(
                "lock must have acquire() and release() methods, or be a context manager, "
                f"not {type(lock).__name__}"
            )

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self._enter()
        try:
            yield
        finally:
            self._exit()


def check_store(store: object) -> None:
    """Refuse an object that lacks a step of the ``Store`` contract."""
    missing = [name for name in REQUIRED if not callable(getattr(store, name, None))]
    if missing:
        raise TypeError(
            f"store must implement spanpool.stores.Store (MemoryStore, SQLiteStore, "
            f"RedisStore); {type(store).__name__} lacks {', '.join(missing)}"
        )


class Steps:
    """The store steps of one pool, its journal of unsettled steps and its in-flight tokens."""

    def __init__(self, store: Store, lock: Any) -> None:
        check_store(store)
        self.store = store
        self.key: str | None = None  # set when the pool is bound, for messages
        self._lock = None if lock is None else LockAdapter(lock)
        self._mutex = threading.Lock()
        self.journal: list[Unsettled] = []
        self._in_flight: set[str] = set()

    def after_fork(self) -> None:
        """In a forked child: the parent's journal and tokens are the parent's."""
        self._mutex = threading.Lock()
        self.journal = []
        self._in_flight = set()

    def run(
        self,
        what: str,
        method: Callable[..., R],
        *args: Any,
        locked: bool = True,
        **kwargs: Any,
    ) -> R:
        """One atomic store step (under the user's ``lock``, when given); errors of the store
        become :class:`~spanpool.errors.StoreError`."""
        try:
            if self._lock is None or not locked:
                return method(*args, **kwargs)
            with self._lock.held():
                return method(*args, **kwargs)
        except SpanpoolError:
            raise
        except Exception as exc:
            raise StoreError(
                f"CacheSessionPool {self.key}: the store failed in {what}: {exc!r}"
            ) from exc

    def quietly(self, step: Callable[[], object]) -> None:
        """A clean-up step whose failure is only logged."""
        try:
            self.run("cleanup", step)
        except StoreError as exc:
            # A permit left behind is dropped after reclaim_after_seconds.
            log.warning("CacheSessionPool %s: %s", self.key, exc)

    # -- in-flight tokens -----------------------------------------------------------------------

    @contextlib.contextmanager
    def in_flight(self, tokens: Iterable[str | None]) -> Iterator[None]:
        """Mark the claims ``tokens`` as being worked on by this process for the block."""
        mine = [token for token in tokens if token is not None]
        with self._mutex:
            self._in_flight.update(mine)
        try:
            yield
        finally:
            with self._mutex:
                self._in_flight.difference_update(mine)

    def known_tokens(self) -> set[str]:
        """Tokens in flight or in the journal: claims this process has not lost track of."""
        with self._mutex:
            known = set(self._in_flight)
            known.update(entry.token for entry in self.journal)
        return known

    # -- the journal ------------------------------------------------------------------------------

    @property
    def unsettled(self) -> int:
        return len(self.journal)

    @property
    def pending(self) -> bool:
        """Whether any step waits to be retried."""
        return bool(self.journal)

    def unsettle(self, entry: Unsettled) -> None:
        with self._mutex:
            self.journal.append(entry)

    def settle(
        self,
        key: str,
        clock: Callable[[], float],
        orphaned: Callable[[list[SessionRecord]], object],
    ) -> None:
        """Retry the steps that failed, in order, until one fails again (it stays in the
        journal with those after it). ``orphaned`` deletes a new session that can no longer be
        recorded."""
        if not self.journal:
            return
        with self._mutex:
            entries, self.journal = self.journal, []
        for index, entry in enumerate(entries):
            try:
                self._settle_one(key, clock(), entry, orphaned)
            except StoreError:
                with self._mutex:
                    self.journal[:0] = entries[index:]
                return

    def _settle_one(
        self,
        key: str,
        now: float,
        entry: Unsettled,
        orphaned: Callable[[list[SessionRecord]], object],
    ) -> None:
        store = self.store
        if entry.kind == "discard":
            self.run("discard", store.discard, key, entry.name, entry.token)
            return
        if self.run("release", store.release, key, entry.name, entry.token, now=now):
            return
        if entry.kind == "created":
            assert entry.record is not None
            record = entry.record
            if not self.run(
                "created", store.created, key, entry.token, record, now=now, check_out=False
            ):
                # Neither recorded nor claimable any more: it has no place in the pool.
                orphaned([record])
        # A "release" whose claim is gone: the step went through before failing, or the
        # session was reclaimed; either way it is back in the pool.
