"""The sessions a database holds, as ``ListSessions`` reports them, and what to make of them."""

from __future__ import annotations

import collections
import datetime
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ._common import Target, age
from ._progress import Progress

Selector = tuple[str, str | None]  # (label key, value or None for any value)

IDLE_BUCKETS: tuple[tuple[str, float], ...] = (
    ("< 1 min", 60.0),
    ("1-10 min", 600.0),
    ("10-30 min", 1800.0),
    ("30-55 min", 3300.0),
    (">= 55 min", float("inf")),
)
"""Idle-time buckets of the census: Cloud Spanner drops a regular session idle for about an
hour, so the last bucket holds sessions nobody has used for almost that long."""

LEAK_IDLE_SECONDS = 3300.0


@dataclass(frozen=True)
class SessionInfo:
    name: str
    multiplexed: bool
    labels: dict[str, str]
    creator_role: str
    created: datetime.datetime | None
    last_used: datetime.datetime | None

    @property
    def id(self) -> str:
        return self.name.rpartition("/")[2]

    @property
    def kind(self) -> str:
        return "multiplexed" if self.multiplexed else "regular"

    def age(self, now: datetime.datetime) -> float | None:
        """Seconds since creation."""
        return None if self.created is None else (now - self.created).total_seconds()

    def idle(self, now: datetime.datetime) -> float | None:
        """Seconds since last use (since creation when the server reports no use)."""
        last = self.last_used or self.created
        return None if last is None else (now - last).total_seconds()

    def label_text(self) -> str:
        return ",".join(f"{k}={v}" for k, v in sorted(self.labels.items())) or "-"

    def matches(self, selectors: Sequence[Selector]) -> bool:
        return all(
            key in self.labels and (value is None or self.labels[key] == value)
            for key, value in selectors
        )

    def to_json(self, now: datetime.datetime) -> dict[str, Any]:
        return {
            "name": self.name,
            "multiplexed": self.multiplexed,
            "labels": self.labels,
            "creator_role": self.creator_role,
            "create_time": self.created.isoformat() if self.created else None,
            "approximate_last_use_time": self.last_used.isoformat() if self.last_used else None,
            "age_seconds": _rounded(self.age(now)),
            "idle_seconds": _rounded(self.idle(now)),
        }


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def _timestamp(value: Any) -> datetime.datetime | None:
    """A proto-plus timestamp field, or None when unset."""
    if not value:
        return None
    stamp: datetime.datetime = value
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.timezone.utc)
    return None if stamp.timestamp() <= 0 else stamp


def server_filter(selectors: Sequence[Selector]) -> str:
    """The ``ListSessions`` filter narrowing to ``selectors`` (Cloud Spanner matches values by
    substring, so the exact match is checked again on the answer)."""
    return " AND ".join(
        f"labels.{key}:{'*' if value is None else value}" for key, value in selectors
    )


def fetch(target: Target, selectors: Sequence[Selector] = ()) -> list[SessionInfo]:
    """Every session of the target database that carries ``selectors``."""
    request: dict[str, Any] = {"database": target.database, "page_size": 1000}
    if selectors:
        request["filter"] = server_filter(selectors)
    sessions = []
    with Progress("listing sessions") as progress:
        pager = target.api.list_sessions(request=request, timeout=target.timeout, retry=None)
        for pb in pager:
            info = SessionInfo(
                name=pb.name,
                multiplexed=bool(pb.multiplexed),
                labels=dict(pb.labels),
                creator_role=pb.creator_role,
                created=_timestamp(pb.create_time),
                last_used=_timestamp(pb.approximate_last_use_time),
            )
            if info.matches(selectors):
                sessions.append(info)
            progress.advance()
    return sessions


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def older(
    sessions: Iterable[SessionInfo],
    measure: Callable[[SessionInfo], float | None],
    seconds: float | None,
) -> list[SessionInfo]:
    """The sessions whose ``measure`` (age or idle time) is at least ``seconds``."""
    if seconds is None:
        return list(sessions)
    return [s for s in sessions if (value := measure(s)) is not None and value >= seconds]


def bucket(idle: float | None) -> str:
    if idle is None:
        return "unknown"
    return next(name for name, limit in IDLE_BUCKETS if idle < limit)


@dataclass(frozen=True)
class Census:
    total: int
    by_kind: dict[str, int]
    by_labels: list[tuple[str, int]]  # label set ("-" for none) of regular sessions, most first
    by_idle: list[tuple[str, int]]  # idle bucket of regular sessions, in bucket order
    by_role: dict[str, int]
    stale: int  # regular sessions idle LEAK_IDLE_SECONDS or more

    @classmethod
    def of(cls, sessions: Sequence[SessionInfo], now: datetime.datetime) -> Census:
        regular = [s for s in sessions if not s.multiplexed]
        kinds = collections.Counter(s.kind for s in sessions)
        labels = collections.Counter(s.label_text() for s in regular)
        idle = collections.Counter(bucket(s.idle(now)) for s in regular)
        buckets = [name for name, _ in IDLE_BUCKETS] + (["unknown"] if idle["unknown"] else [])
        return cls(
            total=len(sessions),
            by_kind={"regular": kinds["regular"], "multiplexed": kinds["multiplexed"]},
            by_labels=sorted(labels.items(), key=lambda item: (-item[1], item[0])),
            by_idle=[(name, idle[name]) for name in buckets],
            by_role=dict(collections.Counter(s.creator_role or "-" for s in sessions)),
            stale=sum(1 for s in regular if (s.idle(now) or 0) >= LEAK_IDLE_SECONDS),
        )

    def one_line(self) -> str:
        kinds = self.by_kind
        line = (
            f"{plural(self.total, 'session')}: {kinds['regular']} regular, "
            f"{kinds['multiplexed']} multiplexed"
        )
        if self.stale:
            line += f"; {self.stale} regular idle >= {age(LEAK_IDLE_SECONDS)} (likely leaked)"
        return line

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_kind": self.by_kind,
            "by_labels": [{"labels": text, "count": n} for text, n in self.by_labels],
            "by_idle": [{"idle": name, "count": n} for name, n in self.by_idle],
            "by_role": self.by_role,
            "stale": self.stale,
        }
