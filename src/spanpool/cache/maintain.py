"""``CacheSessionPool.maintain()`` and the upkeep it shares with the pool's other operations:
refreshing sessions before the server drops them (spread over time), replacing old ones,
downsizing after bursts, and taking back the claims of holders that died.

The time rules of the shared pool are here too, as constants.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import TYPE_CHECKING, Any

from ..bridge import client
from ..pools._flavour import run_all
from ..stats import PINGS, PINGS_FAILED, SESSIONS_DELETED, SESSIONS_RECLAIMED
from ._reconcile import ORPHAN_GRACE
from .store import NOBODY, SessionRecord, TakeIdle, pid_alive

if TYPE_CHECKING:
    from .pool import CacheSessionPool

log = logging.getLogger("spanpool")

_MINUTE = 60.0
_DAY = 86_400.0
SERVER_IDLE_EXPIRY = 60 * _MINUTE
"""Cloud Spanner drops a session left unused for about an hour."""
VERIFY_AFTER = 55 * _MINUTE
"""An idle session unused for this long is checked (``GetSession``) before it is handed out."""
REFRESH_WITHIN = 10 * _MINUTE
"""``maintain()`` refreshes sessions that would expire within this time."""
SPREAD_PERIOD = SERVER_IDLE_EXPIRY - REFRESH_WITHIN
"""``maintain()`` spreads the refreshes of ``min_sessions`` sessions over this period."""
SPREAD_MIN_IDLE = 20 * _MINUTE
"""Sessions refreshed ahead of time to spread refreshes have been idle at least this long."""
REPLACE_AGE = 27 * _DAY
"""``maintain()`` replaces sessions this old, ahead of the server's 28-day maximum age."""
RETIRE_AGE = 27.5 * _DAY
"""``acquire()`` drops idle sessions this old: ``maintain()`` should have replaced them."""
WINDOW = 10 * _MINUTE
"""Auto-downsizing looks at the most sessions in use during each window of this length."""
ORPHAN_AFTER = 60.0
"""A claim of this process that it does not know of (a store step whose answer was lost) is
taken back once this old."""

Taken = list[tuple[SessionRecord, str | None]]


@dataclasses.dataclass(frozen=True)
class MaintenanceReport:
    """What one ``maintain()`` call did, in sessions."""

    reclaimed: int = 0  # claims of dead holders (and lost claims of this process) taken back
    downsized: int = 0  # idle sessions deleted by auto-downsizing
    expired: int = 0  # idle sessions dropped because the server has dropped them already
    refreshed: int = 0  # refreshed with SELECT 1
    lost: int = 0  # found gone on the server while refreshing, and dropped
    trimmed: int = 0  # near expiry but beyond min_sessions: deleted rather than refreshed
    replaced: int = 0  # deleted for age, ahead of the server's 28-day limit
    created: int = 0  # created to bring the pool back to min_sessions


class Upkeep:
    """The upkeep of one pool, and what it remembers between calls: when ``maintain()`` last
    ran (to spread refreshes), and when dead holders were last looked for."""

    def __init__(self, pool: CacheSessionPool) -> None:
        self._pool = pool
        self._steps = pool._steps
        self._last_dead_check = -math.inf
        self._last_maintain: float | None = None
        self._refresh_credit = 0.0

    def maintain(self, key: str) -> MaintenanceReport:
        """One round of upkeep; see ``CacheSessionPool.maintain``."""
        pool = self._pool
        now = pool._clock()
        reclaimed = self.reclaim_dead(key, rate_limited=False, orphans=True)
        downsized = 0
        if pool.should_auto_downsize:
            store = self._steps.store
            high_water = self._steps.run(
                "roll_window", store.roll_window, key, now=now, length=WINDOW
            )
            if high_water is not None:
                keep = max(pool.min_sessions, high_water)
                downsized = self.delete_claimed(key, self.take_idle(key, keep, mine=True))
        expired = self.take_idle(key, 0, last_used_before=now - SERVER_IDLE_EXPIRY)
        refreshed, lost, trimmed = self._refresh_due(key, now)
        old = self.take_idle(
            key,
            0,
            limit=max(2, math.ceil(pool.min_sessions / 10)),
            created_before=now - REPLACE_AGE,
            mine=True,
        )
        replaced = self.delete_claimed(key, old)
        created = pool.warmup()
        self._last_maintain = now
        return MaintenanceReport(
            reclaimed=reclaimed,
            downsized=downsized,
            expired=len(expired),
            refreshed=refreshed,
            lost=lost,
            trimmed=trimmed,
            replaced=replaced,
            created=created,
        )

    def take_idle(
        self,
        key: str,
        keep: int,
        *,
        limit: int = 1_000_000,
        last_used_before: float | None = None,
        created_before: float | None = None,
        mine: bool = False,
    ) -> Taken:
        """Idle sessions out of the store: checked out to this process when ``mine`` (to
        refresh or delete them), else removed."""
        pool = self._pool
        take = TakeIdle(
            limit=limit,
            keep=keep,
            now=pool._clock(),
            last_used_before=last_used_before,
            created_before=created_before,
            holder=pool._holder if mine else None,
        )
        taken: Taken = self._steps.run("take_idle", self._steps.store.take_idle, key, take)
        return taken

    def _refresh_due(self, key: str, now: float) -> tuple[int, int, int]:
        """Refresh idle sessions near expiry, keeping ``min_sessions`` alive in all; plus a
        share of the others, so that refreshes spread over time. Returns (refreshed, lost,
        trimmed)."""
        pool, steps = self._pool, self._steps
        minimum = pool.min_sessions
        stats = steps.run("stats", steps.store.stats, key)
        due = self.take_idle(key, 0, last_used_before=now - SPREAD_PERIOD, mine=True)
        # Sessions in use, being created, or idle but not near expiry stay alive anyway.
        alive = stats.idle + stats.in_use + stats.creating - len(due)
        wanted = max(0, minimum - alive)
        due.sort(key=lambda entry: entry[0].last_used, reverse=True)
        keep, trim = due[:wanted], due[wanted:]
        if self._last_maintain is not None and alive > 0:
            # Refresh min_sessions sessions per SPREAD_PERIOD ahead of time, in proportion
            # to the time since the last call, so that refreshes don't come in bursts.
            share = minimum * max(0.0, now - self._last_maintain) / SPREAD_PERIOD
            self._refresh_credit = min(self._refresh_credit + share, float(minimum))
            extra = min(math.floor(self._refresh_credit), alive)
            self._refresh_credit -= extra
            if extra > 0:
                keep += self.take_idle(
                    key, 0, limit=extra, last_used_before=now - SPREAD_MIN_IDLE, mine=True
                )
        with steps.in_flight(token for _, token in keep + trim):
            trimmed = self.delete_claimed(key, trim)
            outcomes = run_all(client.ping, [pool._session(r.name) for r, _ in keep])
            refreshed = lost = 0
            for (record, token), outcome in zip(keep, outcomes, strict=True):
                assert token is not None
                if outcome is True:
                    refreshed += 1
                    steps.run(
                        "release", steps.store.release, key, record.name, token, now=pool._clock()
                    )
                    continue
                lost += 1
                if isinstance(outcome, BaseException):
                    # Unknown state: delete it rather than keep a session in doubt.
                    self.delete_claimed(key, [(record, token)])
                else:
                    steps.run("discard", steps.store.discard, key, record.name, token)
        pool._count(PINGS, len(keep))
        pool._count(PINGS_FAILED, lost)
        return refreshed, lost, trimmed

    def reclaim_dead(self, key: str, *, rate_limited: bool, orphans: bool = False) -> int:
        """Take back the claims of holders on this host that no longer run, sessions that
        reconciliation found in use on the server and that stayed unused for
        ``ORPHAN_GRACE`` (held by ``NOBODY``), and, with ``orphans``, claims of this process
        that it lost track of."""
        if rate_limited:
            tick = time.monotonic()
            if tick - self._last_dead_check < self._pool.sleep_interval_seconds:
                return 0
            self._last_dead_check = tick
        pool, steps = self._pool, self._steps
        here = pool._holder
        claims = steps.run("claims", steps.store.claims, key)
        known = pool._holdings.tokens() | pool._leases.tokens() | steps.known_tokens()
        now = pool._clock()
        orphan_before = now - ORPHAN_AFTER
        dead = [
            claim.token
            for claim in claims
            if (claim.holder == NOBODY and claim.since < now - ORPHAN_GRACE)
            or (
                claim.holder.host == here.host
                and (
                    (claim.holder.pid != here.pid and not pid_alive(claim.holder.pid))
                    or (
                        orphans
                        and claim.holder == here
                        and claim.token not in known
                        and claim.since < orphan_before
                    )
                )
            )
        ]
        if not dead:
            return 0
        found: int = steps.run("reclaim", steps.store.reclaim, key, dead, now=pool._clock())
        if found:
            log.info("CacheSessionPool %s: took back %d claims of ended processes", key, found)
            pool._count(SESSIONS_RECLAIMED, found)
        return found

    def delete_claimed(self, key: str, taken: Taken) -> int:
        """Delete sessions checked out to this process for the purpose, and only then remove
        them from the store: counted until the server no longer has them, so that the server
        never holds more than ``max_sessions``. One whose delete fails goes back to idle.
        Returns how many were deleted."""
        if not taken:
            return 0
        pool, steps = self._pool, self._steps
        store = steps.store
        deleted = 0
        with steps.in_flight(token for _, token in taken):
            outcomes = run_all(client.delete, [pool._session(r.name) for r, _ in taken])
            for (record, token), outcome in zip(taken, outcomes, strict=True):
                assert token is not None
                if isinstance(outcome, BaseException):
                    log.warning(
                        "CacheSessionPool %s: deleting %s failed, keeping it: %s",
                        key,
                        record.name,
                        outcome,
                    )
                    # Back where it was in the LRU order.
                    steps.run(
                        "release", store.release, key, record.name, token, now=record.last_used
                    )
                    continue
                deleted += 1
                steps.run("discard", store.discard, key, record.name, token)
        pool._count(SESSIONS_DELETED, deleted)
        return deleted

    def delete_records(self, records: list[SessionRecord]) -> bool:
        """Delete sessions no longer in the store; True when every delete succeeded."""
        return self.delete_sessions([self._pool._session(record.name) for record in records])

    def delete_sessions(self, sessions: list[Any]) -> bool:
        """Delete sessions no longer in the store (best effort: failures are logged)."""
        if not sessions:
            return True
        for session in sessions:
            client.detach(session)
        outcomes = run_all(client.delete, sessions)
        failed = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        self._pool._count(SESSIONS_DELETED, len(sessions) - len(failed))
        for error in failed[:3]:
            log.warning(
                "CacheSessionPool %s: deleting a session failed: %s", self._pool._key, error
            )
        return not failed
