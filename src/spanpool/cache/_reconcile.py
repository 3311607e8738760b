"""How ``CacheSessionPool`` finds its sessions on the server, and settles the store with them.

Every session the pool creates carries the label ``spanpool-pool`` naming the pool, so that
``ListSessions`` on the database can list them whatever the store remembers. The store keeps an
*epoch* for the pool (see :mod:`spanpool.cache.store`); when it has none (it lost its state, or
the pool was cleared), the first step that notices takes a reconciliation lease, lists the
pool's sessions and adopts the ones the store does not know of, deleting any for which there is
no room under ``max_sessions``. ``reconcile()`` does the same on demand, for operators.

A session the server reports as used within ``ORPHAN_GRACE`` is adopted as checked out by
nobody rather than idle: a process that held it when the store lost its state may still be
using it. It goes back to idle once unused for that long (``Upkeep.reclaim_dead``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
from typing import TYPE_CHECKING, Any

from ..bridge import client
from ..bridge.common import is_permission_denied
from .store import Adoption, SessionRecord

if TYPE_CHECKING:
    from .pool import CacheSessionPool

log = logging.getLogger("spanpool")

POOL_LABEL = "spanpool-pool"
"""The label on every session a ``CacheSessionPool`` creates; its value names the pool."""
ORPHAN_GRACE = 60.0
"""A session found on the server used this recently is not handed out until unused this long."""
RECONCILE_LEASE = 30.0
"""Seconds a process may take to reconcile before another one takes over."""
_NAME = re.compile(r"[a-z0-9]([-_a-z0-9]{0,61}[a-z0-9])?")


@dataclasses.dataclass(frozen=True)
class ReconcileReport:
    """What one reconciliation found: the sessions the server lists for the pool, and how
    many of them were deleted for want of room under ``max_sessions``."""

    listed: int
    deleted: int


def check_pool_name(name: object) -> str | None:
    """``pool_name`` as the user gave it: None, or a valid label value."""
    if name is None:
        return None
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            "pool_name must be 1-63 lowercase letters, digits, dashes and underscores, "
            f"starting and ending with a letter or digit (a session label value), not {name!r}"
        )
    return name


def check_user_labels(labels: dict[str, str]) -> None:
    """The user's labels leave room for the pool's own (Cloud Spanner allows 64)."""
    if POOL_LABEL in labels:
        raise ValueError(
            f"labels must not use the key {POOL_LABEL!r}: CacheSessionPool sets it to name "
            "the pool (see pool_name)"
        )
    if len(labels) > 63:
        raise ValueError(
            f"labels must have at most 63 entries (CacheSessionPool adds {POOL_LABEL!r} and "
            f"a session has at most 64), not {len(labels)}"
        )


def store_identity(store: Any) -> str:
    """What tells one store from another across processes: its ``identity`` when it has one,
    else its type."""
    identity = getattr(store, "identity", None)
    if isinstance(identity, str) and identity:
        return identity
    return f"{type(store).__module__}.{type(store).__qualname__}"


def label_value(pool_name: str | None, store: Any, key: str) -> str:
    """The pool's label value: ``pool_name``, or a digest of the store and the pool's key.

    A digest has a fixed length, so that Cloud Spanner's filter (a value *containing* the
    text) matches it only."""
    if pool_name is not None:
        return pool_name
    text = f"{store_identity(store)}\n{key}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def reconcile(pool: CacheSessionPool, key: str, *, force: bool) -> ReconcileReport | None:
    """Take a reconciliation lease (``force``: even when the store kept its state) and settle
    the store with the sessions the server lists for the pool. None when another process holds
    the lease, or (without ``force``) when nothing calls for it."""
    steps, store = pool._steps, pool._steps.store
    lease = steps.run(
        "start_reconcile",
        store.start_reconcile,
        key,
        now=pool._clock(),
        lease_seconds=RECONCILE_LEASE,
        force=force,
    )
    if lease is None:
        return None
    # An RPC between steps. Should it fail, the lease runs out and a later step reconciles.
    try:
        listed = _list(pool)
    except _CannotList as exc:
        if force and exc.__cause__ is not None:
            raise exc.__cause__ from None
        # Without the permission to list sessions the pool cannot reconcile; it goes on with
        # the store's state as it is rather than stop working.
        log.error(
            "CacheSessionPool %s: cannot list the pool's sessions, so the store's state is "
            "taken as it is (grant spanner.sessions.list to reconcile a store that lost its "
            "state): %s",
            key,
            exc.__cause__,
        )
        listed = []
    now = pool._clock()
    # Most recently used first: with no room for all, the least recently used are deleted.
    listed.sort(key=lambda found: found.last_used, reverse=True)
    adoption = Adoption(
        lease=lease,
        records=tuple(
            SessionRecord(found.name, found.created_at, min(found.last_used, now))
            for found in listed
        ),
        now=now,
        max_sessions=pool.max_sessions,
        idle_before=now - ORPHAN_GRACE,
    )
    refused = steps.run("adopt", store.adopt, key, adoption)
    if refused is None:
        log.warning(
            "CacheSessionPool %s: reconciling took longer than %gs and another process took over",
            key,
            RECONCILE_LEASE,
        )
        return None
    if refused:
        log.warning(
            "CacheSessionPool %s: the server holds %d sessions of this pool beyond "
            "max_sessions=%d; deleting them",
            key,
            len(refused),
            pool.max_sessions,
        )
        pool._upkeep.delete_sessions([pool._session(name) for name in refused])
    log.info(
        "CacheSessionPool %s: reconciled with the server (%d sessions listed)", key, len(listed)
    )
    return ReconcileReport(listed=len(listed), deleted=len(refused))


class _CannotList(Exception):
    """The server refused to list sessions (no ``spanner.sessions.list`` permission)."""


def _list(pool: CacheSessionPool) -> list[client.ListedSession]:
    try:
        return client.list_sessions(pool._database, {POOL_LABEL: pool._pool_label})
    except Exception as exc:
        if is_permission_denied(exc):
            raise _CannotList() from exc
        raise


def delete_listed(pool: CacheSessionPool, deleted: bool, rounds: int = 3) -> bool:
    """After ``clear()``: delete what the server still lists for the pool (sessions the store
    did not know of) until it lists none; True when it lists none. Without the permission to
    list, ``deleted``: whether every session the store knew of was deleted."""
    try:
        for _ in range(rounds):
            listed = _list(pool)
            if not listed:
                return True
            pool._upkeep.delete_sessions([pool._session(found.name) for found in listed])
        return not _list(pool)
    except _CannotList as exc:
        log.warning(
            "CacheSessionPool %s: cannot list the pool's sessions to check that none is left: %s",
            pool._key,
            exc.__cause__,
        )
        return deleted
