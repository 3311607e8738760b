"""``spanpool bench``: spanpool side by side with the official client's pools, from the
installed package, with progress, a summary table and a chart of the ratios."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

from ._common import CommandError, print_json, resolve_endpoint
from ._progress import Progress


def add_parser(commands: Any) -> None:
    from ..bench.run import SUITES

    names = ", ".join(suite.name for suite in SUITES)
    bench = commands.add_parser(
        "bench",
        help="benchmark spanpool against the official pools, with a chart of the ratios",
        description="Run the benchmark suites (" + names + ") on embedded LocalSpanner "
        "servers, or time the side-by-side suites against --endpoint. Prints one table; "
        "--chart writes a PNG of spanpool / official for every row measured on both sides.",
    )
    bench.add_argument(
        "--only",
        action="append",
        metavar="SUITE",
        help=f"run only this suite (repeat for several): {names}",
    )
    bench.add_argument("--quick", action="store_true", help="short runs, fewer rounds")
    bench.add_argument("--seconds", type=float, metavar="S", help="length of the timed windows")
    bench.add_argument(
        "--scenario",
        type=int,
        action="append",
        metavar="N",
        help="pools suite: only scenario N (1 warm get+put, 2 RPCs per checkout, "
        "3 contention, 4 bind, 5 get() during ping()); repeat for several",
    )
    bench.add_argument(
        "--latency",
        type=float,
        action="append",
        metavar="MS",
        help="pools suite: only at this injected latency (0 or 5); repeat for several",
    )
    bench.add_argument(
        "--endpoint",
        metavar="HOST:PORT",
        help="time the side-by-side suites against this server (emulator protocol); "
        "default: LocalSpanner processes started for the run",
    )
    bench.add_argument("--chart", type=Path, metavar="PNG", help="write the ratio chart here")
    bench.add_argument(
        "--goals-chart", type=Path, metavar="PNG", help="write the chart of the pools' goals here"
    )
    bench.add_argument("--json", action="store_true", help="print JSON for scripts")
    bench.set_defaults(run=run)


def _chosen(args: argparse.Namespace) -> list[Any]:
    from ..bench.run import SUITES, suite

    try:
        chosen = [suite(name) for name in args.only] if args.only else list(SUITES)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    if args.endpoint:
        if args.only:
            refused = [s.name for s in chosen if not s.endpoint]
            if refused:
                raise CommandError(
                    f"--endpoint times the side-by-side suites only, not {', '.join(refused)}"
                )
        chosen = [s for s in chosen if s.endpoint]
    return chosen


def _check(args: argparse.Namespace) -> None:
    from ..bench.harness import LATENCIES_MS
    from ..bench.pools import SCENARIOS

    if args.seconds is not None and args.seconds <= 0:
        raise CommandError("--seconds must be > 0")
    for number in args.scenario or ():
        if not 1 <= number <= len(SCENARIOS):
            raise CommandError(f"--scenario must be between 1 and {len(SCENARIOS)}, not {number}")
    for latency in args.latency or ():
        if latency not in LATENCIES_MS:
            shown = " or ".join(f"{x:g}" for x in LATENCIES_MS)
            raise CommandError(f"--latency must be {shown} ms, not {latency:g}")
    if args.endpoint:
        args.endpoint = resolve_endpoint(args.endpoint).address
    for option in (args.chart, args.goals_chart):
        if option is not None:
            try:
                import matplotlib  # noqa: F401
            except ImportError:
                raise CommandError(
                    "the chart needs matplotlib: pip install 'spanpool[bench]'"
                ) from None


def run(args: argparse.Namespace) -> int:
    from ..bench import progress as bench_progress

    _check(args)
    chosen = _chosen(args)
    total = sum(s.steps(args) for s in chosen)
    outcomes: dict[str, Any] = {}
    began = time.monotonic()
    # Suites talk on stderr as they go (tracebacks of failed measurements, notes): with a bar
    # on a terminal that is kept; their progress lines become the bar.
    with Progress("bench", total=total, delay=0) as bar:

        def step(suite: str, message: str) -> None:
            bar.advance(note=f"{suite}: {message}")
            if not bar_enabled:
                print(f"[{suite}] {message}", file=sys.stderr, flush=True)

        bar_enabled = bar.enabled
        with bench_progress.listening(step):
            for suite in chosen:
                bar.note = suite.name
                outcomes[suite.name] = suite.run(args)
    seconds = time.monotonic() - began
    rows = [row for s in chosen if s.side_by_side for row in outcomes[s.name].rows]
    charts = _charts(args, rows)
    if args.json:
        print_json(
            {
                "seconds": round(seconds, 1),
                "cores": os.cpu_count(),
                "endpoint": args.endpoint,
                "suites": {
                    name: {
                        "rows": [_row_json(row) for row in outcome.rows],
                        "text": outcome.text,
                    }
                    for name, outcome in outcomes.items()
                },
                "charts": charts,
            }
        )
        return 0
    _print_summary(args, chosen, outcomes, rows, seconds, charts)
    return 0


def _row_json(row: Any) -> dict[str, Any]:
    data = dataclasses.asdict(row)
    data["goal"] = str(row.goal) if row.goal else None
    data["verdict"] = row.verdict
    return data


def _charts(args: argparse.Namespace, rows: list[Any]) -> dict[str, str]:
    from ..bench.chart import RATIO_AXIS, write_chart
    from ..bench.run import ratio_bars
    from ..bench.table import chart_bars

    written = {}
    where = "an endpoint" if args.endpoint else "LocalSpanner on loopback"
    if args.chart is not None:
        title = (
            f"spanpool vs google-cloud-spanner's own pools and session manager, {where}:\n"
            "green bars left of 1 are where spanpool does better"
        )
        write_chart(ratio_bars(rows), args.chart, title, RATIO_AXIS)
        written["ratios"] = str(args.chart)
    if args.goals_chart is not None:
        title = "spanpool against its goals (bars left of the goal line meet them)"
        write_chart(chart_bars(rows), args.goals_chart, title)
        written["goals"] = str(args.goals_chart)
    return written


def _print_summary(
    args: argparse.Namespace,
    chosen: list[Any],
    outcomes: dict[str, Any],
    rows: list[Any],
    seconds: float,
    charts: dict[str, str],
) -> None:
    from ..bench.harness import fallback_warning
    from ..bench.table import print_table

    where = f"against {args.endpoint}" if args.endpoint else "LocalSpanner on loopback"
    print(
        f"spanpool bench: {', '.join(s.name for s in chosen)}; {where}, {os.cpu_count()} cores, "
        f"{seconds:.0f} s" + (" (--quick)" if args.quick else "")
    )
    warning = fallback_warning()
    if warning:
        print(warning)
    for suite in chosen:
        text = outcomes[suite.name].text
        if text:
            print()
            print(f"== {suite.name}: {suite.description}")
            print(text)
    if rows:
        print()
        print("== spanpool against the official client (ratio: spanpool / official)")
        print_table(rows)
    for kind, path in charts.items():
        print(f"chart ({kind}): {path}")
