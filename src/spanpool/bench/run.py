"""Every benchmark suite in one place, for ``spanpool bench`` (and ``./dev bench``, which
calls it).

A suite is a module of this package with its own command line; here each gets a name, says
whether it sets spanpool against the official client (its rows then go into the ratio chart)
and whether it can time a server given with ``--endpoint``. To add a suite, add a ``Suite``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from . import async_pools, cache, frameworks, harness, localspanner, multiplexed, pools
from .chart import Bar
from .table import Row


@dataclass
class Outcome:
    """What one suite measured: side-by-side ``rows`` and/or the ``text`` it printed."""

    rows: list[Row] = field(default_factory=list)
    text: str = ""


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    side_by_side: bool
    endpoint: bool  # can time a server given with --endpoint
    run: Callable[[argparse.Namespace], Outcome]
    steps: Callable[[argparse.Namespace], int]  # progress steps it reports, for the bar


def _printed(main: Callable[[], object]) -> str:
    """What ``main()`` prints on stdout."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        main()
    return buffer.getvalue().strip("\n")


def _pools(args: argparse.Namespace) -> Outcome:
    return Outcome(rows=pools.measure(args))


def _pools_steps(args: argparse.Namespace) -> int:
    chosen = args.scenario or range(1, len(pools.SCENARIOS) + 1)
    if args.endpoint:
        return len(chosen)
    wanted = args.latency or harness.LATENCIES_MS
    return sum(
        1 for number in chosen for latency in pools.SCENARIOS[number - 1][2] if latency in wanted
    )


def _async_pools(args: argparse.Namespace) -> Outcome:
    return Outcome(rows=async_pools.run(args))


def _cache(args: argparse.Namespace) -> Outcome:
    argv = ["--quick"] if args.quick else []
    if args.seconds:
        argv += ["--seconds", str(args.seconds)]
    return Outcome(text=_printed(lambda: cache.main(argv)))


def _multiplexed(args: argparse.Namespace) -> Outcome:
    rows: list[Row] = []
    text = _printed(lambda: multiplexed.run(args.quick, table=rows))
    return Outcome(rows=rows, text=text)


def _localspanner(args: argparse.Namespace) -> Outcome:
    def main() -> None:
        saved = sys.argv
        sys.argv = ["localspanner", *(["--seconds", "1"] if args.quick else [])]
        try:
            localspanner.main()
        finally:
            sys.argv = saved

    return Outcome(text=_printed(main))


def _frameworks(args: argparse.Namespace) -> Outcome:
    return Outcome(rows=frameworks.measure(args))


SUITES: tuple[Suite, ...] = (
    Suite(
        "localspanner",
        "LocalSpanner's own speed: GetSession/s and SELECT 1/s",
        False,
        False,
        _localspanner,
        lambda args: 1,
    ),
    Suite(
        "pools",
        "spanpool's pools against the official ones",
        True,
        True,
        _pools,
        _pools_steps,
    ),
    Suite(
        "async_pools",
        "the asyncio pools against the official asyncio ones",
        True,
        True,
        _async_pools,
        lambda args: 2,
    ),
    Suite(
        "cache",
        "CacheSessionPool over each store, 1 to 16 processes",
        False,
        False,
        _cache,
        lambda args: 7,
    ),
    Suite(
        "multiplexed",
        "MultiplexedPool against the client's own multiplexed-session manager",
        True,
        False,
        _multiplexed,
        lambda args: 1,
    ),
    Suite(
        "frameworks",
        "a DB-API connection and a Django request: the official setup against spanpool's",
        True,
        False,
        _frameworks,
        lambda args: 4,
    ),
)


def suite(name: str) -> Suite:
    for found in SUITES:
        if found.name == name:
            return found
    raise ValueError(f"no benchmark suite {name!r}: {', '.join(s.name for s in SUITES)}")


def better_when_lower(row: Row) -> bool:
    """Times, counts and errors are better low; a ``>=`` goal says this row's are better high."""
    return row.goal is None or row.goal.op != ">="


def ratio_bars(rows: Sequence[Row]) -> list[Bar]:
    """One bar per row with both sides measured: spanpool / official, turned so that smaller
    is better (green when spanpool is at least as good). Rows that set spanpool against a bare
    deque rather than the official client are left out."""
    bars = []
    for row in rows:
        official, ours = row.official_value, row.spanpool_value
        if official is None or ours is None or (official == 0 and ours == 0):
            continue
        if row.official.startswith("bare "):
            continue
        lower = better_when_lower(row)
        top, bottom = (ours, official) if lower else (official, ours)
        score = math.inf if bottom == 0 else top / bottom
        text = f"{score:.2g}x ({row.spanpool} vs {row.official})"
        bars.append(Bar(f"{row.scenario} | {row.pool} | {row.latency}", score, text, score <= 1))
    return bars


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m spanpool.bench.run [--quick]``: the same as ``spanpool bench``."""
    from ..cli import main as cli_main

    return cli_main(["bench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
