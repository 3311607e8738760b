"""The PNG chart of bench/pools.py: how far each key measurement of spanpool is from its goal."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Bar:
    """One measurement against its goal.

    ``score`` is the measurement divided by its goal, turned so that 1 is the goal and smaller
    is better (``value / limit`` for an upper bound, ``limit / value`` for a lower one).
    """

    label: str
    score: float
    text: str
    ok: bool


GOAL_AXIS = "measured / goal, log scale (1 = goal; left of it = goal met)"
RATIO_AXIS = "spanpool / official, log scale (1 = same; left of it = spanpool better)"


def write_chart(bars: Sequence[Bar], path: Path, title: str, xlabel: str = GOAL_AXIS) -> Path:
    """Draw ``bars`` on a log scale around the goal at 1 (green: met, red: missed); returns
    ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    path.parent.mkdir(parents=True, exist_ok=True)
    scores = [min(max(bar.score, 1e-3), 1e4) for bar in bars]
    figure, axes = pyplot.subplots(figsize=(10, 1.2 + 0.3 * max(len(bars), 1)))
    try:
        rows = range(len(bars))
        colors = ["#2e7d32" if bar.ok else "#c62828" for bar in bars]
        # Each bar runs from the goal (1) to the measurement: leftwards when the goal is met.
        axes.barh(rows, [score - 1 for score in scores], left=1, color=colors, height=0.7)
        axes.scatter(scores, list(rows), color=colors, s=14, zorder=3)  # visible when near 1
        axes.set_xscale("log")
        axes.axvline(1.0, color="black", linewidth=1)
        axes.set_yticks(list(rows), [bar.label for bar in bars], fontsize=7)
        axes.invert_yaxis()
        axes.set_xlim(min([*scores, 0.1]) / 3, max([*scores, 10.0]) * 30)
        for row, (bar, score) in enumerate(zip(bars, scores, strict=True)):
            axes.text(max(score, 1) * 1.1, row, bar.text, va="center", fontsize=7)
        axes.set_xlabel(xlabel)
        axes.set_title(title, fontsize=9)
        figure.savefig(path, dpi=110, bbox_inches="tight")
    finally:
        pyplot.close(figure)
    return path
