"""The goals table of the side-by-side suites: measurements, the goals they are held to, the
rows comparing the official client with spanpool, and how those rows are printed and charted."""

from __future__ import annotations

import collections
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from .chart import Bar

T = TypeVar("T")
Metrics = dict[str, float]


@dataclass(frozen=True)
class Failed:
    """A measurement that could not be made, e.g. because the pool raised."""

    reason: str

    def __str__(self) -> str:
        return self.reason


def attempt(measure: Callable[[], T]) -> T | Failed:
    """``measure()``, or ``error: <type>`` when it raises."""
    try:
        return measure()
    except Exception as exc:
        return Failed(f"error: {type(exc).__name__}")


@dataclass(frozen=True)
class Goal:
    """What spanpool should achieve: ``value <op> limit``."""

    op: str  # "<=", ">=" or "=="
    limit: float
    text: str = ""

    def met(self, value: float) -> bool:
        if self.op == "<=":
            return value <= self.limit
        if self.op == ">=":
            return value >= self.limit
        return value == self.limit

    def score(self, value: float) -> float | None:
        """``value`` relative to the goal, 1 at the goal and smaller when better (bounds only)."""
        if self.op == "<=" and self.limit > 0:
            return value / self.limit
        if self.op == ">=":
            return self.limit / value if value > 0 else math.inf
        return None

    def __str__(self) -> str:
        return f"{self.op} {self.text or format(self.limit, 'g')}"


@dataclass
class Row:
    """One line of the table: ``checked`` is the number the goal applies to; without it the
    goal is missed when spanpool's measurement failed, and cannot be judged otherwise."""

    scenario: str
    latency: str
    pool: str
    official: str
    spanpool: str
    ratio: float | None = None
    goal: Goal | None = None
    checked: float | None = None
    spanpool_failed: bool = False
    official_value: float | None = None
    spanpool_value: float | None = None

    @property
    def verdict(self) -> str:
        if self.goal is None:
            return ""
        if self.checked is None:
            return "miss" if self.spanpool_failed else "n/a"
        return "ok" if self.goal.met(self.checked) else "miss"


def median_of(results: list[Metrics] | Failed, key: str) -> float | Failed:
    """The median of ``key`` over the rounds that measured it."""
    if isinstance(results, Failed):
        return results
    values = [metrics[key] for metrics in results if key in metrics]
    return statistics.median(values) if values else Failed("n/a")


def total_of(results: list[Metrics] | Failed, key: str) -> float | Failed:
    if isinstance(results, Failed):
        return results
    return sum(metrics.get(key, 0.0) for metrics in results)


def ratio(numerator: float | Failed, denominator: float | Failed) -> float | None:
    if isinstance(numerator, Failed) or isinstance(denominator, Failed) or denominator == 0:
        return None
    return numerator / denominator


def value(measured: float | Failed) -> float | None:
    return None if isinstance(measured, Failed) else measured


def cell(measured: float | Failed, fmt: Callable[[float], str]) -> str:
    return str(measured) if isinstance(measured, Failed) else fmt(measured)


def duration(ns: float) -> str:
    return f"{ns:,.0f} ns" if ns < 1e6 else f"{ns / 1e6:,.2f} ms"


def side_by_side(
    scenario: str,
    latency_ms: float,
    pool: str,
    official: float | Failed,
    ours: float | Failed,
    fmt: Callable[[float], str],
    goal: Goal | None = None,
    *,
    absolute: bool = False,
    official_prefix: str = "",
) -> Row:
    """A row comparing two measurements. The goal applies to spanpool/official, or with
    ``absolute`` to spanpool's own value (and no ratio is shown)."""
    relative = None if absolute else ratio(ours, official)
    return Row(
        scenario,
        f"{latency_ms:g} ms",
        pool,
        official_prefix + cell(official, fmt),
        cell(ours, fmt),
        relative,
        goal,
        value(ours) if absolute else relative,
        isinstance(ours, Failed),
        value(official),
        value(ours),
    )


def warm_rows(
    scenario: str,
    latency_ms: float,
    ns: dict[tuple[str, str], float | Failed],
    kinds: Sequence[str],
    patched: Sequence[str] = (),
) -> list[Row]:
    """Nanoseconds per warm checkout, for each kind of pool on both sides (the official pools
    of the ``patched`` kinds said so); spanpool's ``FixedSizePool`` is held to 0.3 of the
    official one."""
    return [
        side_by_side(
            scenario,
            latency_ms,
            kind,
            ns[("official", kind)],
            ns[("spanpool", kind)],
            duration,
            Goal("<=", 0.30) if kind == "FixedSizePool" else None,
            official_prefix="patched " if kind in patched else "",
        )
        for kind in kinds
    ]


def against(
    scenario: str,
    latency_ms: float,
    reference: tuple[str, float | Failed],
    ns: dict[str, float | Failed],
    goal: Goal,
) -> list[Row]:
    """Nanoseconds per warm checkout of spanpool's pools (``ns`` by kind) against one
    ``reference`` (its name, then its time), held to ``goal``."""
    name, measured = reference
    return [
        side_by_side(
            scenario, latency_ms, kind, measured, ours, duration, goal, official_prefix=name
        )
        for kind, ours in ns.items()
    ]


Measure = tuple[str, str, Callable[[float], str], "Goal | None"]
"""A row of a scenario: its name, the key of the metrics it shows, their format, its goal."""

FAIRNESS: tuple[Measure, ...] = (
    ("min/max cycles", "min/max", "{:.2f}".format, Goal(">=", 0.8)),
    ("worst get() wait", "worst ms", "{:,.1f} ms".format, Goal("<=", 50)),
    ("throughput / ideal", "throughput", "{:.1%}".format, Goal(">=", 0.95, "95%")),
)
"""What a contention run reports about a pool of a fixed size (keys of :func:`fairness`)."""


def errors(name: str) -> Measure:
    """The errors of a scenario, counted over every round: spanpool must meet none."""
    return (name, "errors", "{:.0f}".format, Goal("==", 0))


def measured_rows(
    title: str,
    latency_ms: float,
    pool: str,
    official: list[Metrics] | Failed,
    ours: list[Metrics] | Failed,
    measures: Sequence[Measure],
    *,
    official_prefix: str = "",
) -> list[Row]:
    """A row per measure, titled ``title`` and the measure's name: the medians of both sides
    over the rounds (for errors, their total); each goal applies to spanpool's own value."""
    rows = []
    for name, key, fmt, goal in measures:
        of = total_of if key == "errors" else median_of
        rows.append(
            side_by_side(
                f"{title} {name}" if title else name,
                latency_ms,
                pool,
                of(official, key),
                of(ours, key),
                fmt,
                goal,
                absolute=True,
                official_prefix=official_prefix,
            )
        )
    return rows


def fairness(
    cycles: Sequence[int], hold_ns: int, worst_ns: int, elapsed_ns: int, size: int
) -> Metrics:
    """The metrics of :data:`FAIRNESS`, from the cycles each worker of a contention run made,
    the time sessions were held in total, the longest get() and the run's length: throughput
    is measured against ``size`` sessions kept busy all the time."""
    mean_hold = hold_ns / max(sum(cycles), 1) / 1e9
    ceiling = size / mean_hold if mean_hold else math.inf
    return {
        "min/max": min(cycles) / max(max(cycles), 1),
        "worst ms": worst_ns / 1e6,
        "throughput": sum(cycles) / (elapsed_ns / 1e9) / ceiling,
    }


# -- the table and the goals chart -------------------------------------------------------------

HEADER = ("scenario", "latency", "pool", "official", "spanpool", "ratio", "goal", "")
RIGHT_ALIGNED = {3, 4, 5}


def print_table(rows: Sequence[Row]) -> None:
    lines = [
        (
            row.scenario,
            row.latency,
            row.pool,
            row.official,
            row.spanpool,
            "-" if row.ratio is None else f"{row.ratio:.2f}" if row.ratio >= 0.01 else "<0.01",
            str(row.goal) if row.goal else "-",
            row.verdict,
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [HEADER, *lines]) for i in range(len(HEADER))]

    def render(line: Sequence[str]) -> str:
        return "  ".join(
            text.rjust(width) if i in RIGHT_ALIGNED else text.ljust(width)
            for i, (text, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()

    print(render(HEADER))
    print("  ".join("-" * width for width in widths))
    for line in lines:
        print(render(line))
    verdicts = collections.Counter(row.verdict for row in rows if row.goal is not None)
    judged = verdicts["ok"] + verdicts["miss"]
    unjudged = f", {verdicts['n/a']} not judged (official reference failed)"
    print(f"{verdicts['ok']} of {judged} goals met" + (unjudged if verdicts["n/a"] else ""))


def chart_bars(rows: Sequence[Row]) -> list[Bar]:
    bars = []
    for row in rows:
        if row.goal is None or row.goal.op == "==":
            continue
        if row.verdict == "n/a":
            continue
        score = math.inf if row.checked is None else row.goal.score(row.checked)
        if score is None:
            continue
        shown = "error" if row.checked is None else f"{row.checked:.3g}"
        bars.append(
            Bar(
                f"{row.scenario} | {row.pool} | {row.latency}",
                score,
                f"{shown} (goal {row.goal})",
                row.verdict == "ok",
            )
        )
    return bars
