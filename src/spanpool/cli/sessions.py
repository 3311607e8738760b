"""``spanpool sessions list|census|clean DATABASE``: what sessions a database holds, and
deleting the leaked ones."""

from __future__ import annotations

import argparse
import datetime
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ._common import (
    CommandError,
    Target,
    add_connection_arguments,
    age,
    connect,
    duration,
    label,
    print_json,
    table,
)
from ._listing import Census, Selector, SessionInfo, fetch, now_utc, older, plural
from ._progress import Progress

DELETE_THREADS = 8


def _add_label_option(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    parser.add_argument(
        "--label",
        dest="labels",
        type=label,
        action="append",
        default=[],
        required=required,
        metavar="KEY=VALUE",
        help="only sessions with this label (KEY alone: any value); repeat to require several",
    )


def add_parser(commands: Any) -> None:
    sessions = commands.add_parser(
        "sessions",
        help="list, count or delete a database's sessions",
        description="What sessions a database holds (ListSessions), and deleting leaked ones.",
    )
    actions = sessions.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="one line per session")
    add_connection_arguments(listing, database="required")
    _add_label_option(listing)
    listing.add_argument(
        "--older-than",
        type=duration,
        metavar="AGE",
        help="only sessions created at least AGE ago (90s, 50m, 2h, 1d)",
    )
    listing.add_argument(
        "--idle-older-than",
        type=duration,
        metavar="AGE",
        help="only sessions last used at least AGE ago",
    )
    listing.set_defaults(run=run_list)

    census = actions.add_parser("census", help="counts by kind, label set and idle time")
    add_connection_arguments(census, database="required")
    _add_label_option(census)
    census.set_defaults(run=run_census)

    clean = actions.add_parser(
        "clean",
        help="delete the regular sessions with given labels",
        description="Delete the regular sessions that carry every --label (and, with "
        "--idle-older-than, were idle that long). Multiplexed sessions are never deleted.",
    )
    add_connection_arguments(clean, database="required")
    _add_label_option(clean, required=True)
    clean.add_argument(
        "--idle-older-than",
        type=duration,
        metavar="AGE",
        help="only sessions last used at least AGE ago (e.g. 55m)",
    )
    clean.add_argument("--dry-run", action="store_true", help="show what would be deleted")
    clean.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    clean.set_defaults(run=run_clean)


def _session_rows(sessions: list[SessionInfo]) -> list[list[str]]:
    now = now_utc()

    def ago(seconds: float | None) -> str:
        return "-" if seconds is None else f"{age(seconds)} ago"

    return [
        [
            s.id,
            s.kind,
            ago(s.age(now)),
            ago(s.idle(now)),
            s.creator_role or "-",
            s.label_text(),
        ]
        for s in sessions
    ]


def _kinds(sessions: list[SessionInfo]) -> str:
    multiplexed = sum(1 for s in sessions if s.multiplexed)
    return f"{len(sessions) - multiplexed} regular, {multiplexed} multiplexed"


def run_list(args: argparse.Namespace) -> int:
    with connect(args) as target:
        return _list(args, target)


def _list(args: argparse.Namespace, target: Target) -> int:
    sessions = fetch(target, args.labels)
    now = now_utc()
    sessions = older(sessions, lambda s: s.age(now), args.older_than)
    sessions = older(sessions, lambda s: s.idle(now), args.idle_older_than)
    sessions.sort(key=lambda s: (s.created is None, s.created or now))
    if args.json:
        print_json([s.to_json(now) for s in sessions])
        return 0
    if sessions:
        header = ["SESSION", "KIND", "CREATED", "LAST USED", "ROLE", "LABELS"]
        print(table(header, _session_rows(sessions)))
    print(f"{plural(len(sessions), 'session')} ({_kinds(sessions)}) in {target.database}")
    return 0


def run_census(args: argparse.Namespace) -> int:
    with connect(args) as target:
        return _census(args, target)


def _census(args: argparse.Namespace, target: Target) -> int:
    sessions = fetch(target, args.labels)
    census = Census.of(sessions, now_utc())
    if args.json:
        print_json({"database": target.database, **census.to_json()})
        return 0
    print(f"{target.database}: {census.one_line()}")
    print()
    print(
        table(
            ["LABELS (regular sessions)", "COUNT"],
            [[text, str(n)] for text, n in census.by_labels] or [["-", "0"]],
            {1},
        )
    )
    print()
    print(
        table(
            ["IDLE (regular sessions)", "COUNT"],
            [[name, str(n)] for name, n in census.by_idle],
            {1},
        )
    )
    print()
    print(
        table(
            ["CREATOR ROLE", "COUNT"],
            [[role, str(n)] for role, n in sorted(census.by_role.items())] or [["-", "0"]],
            {1},
        )
    )
    return 0


def choose_for_clean(
    sessions: list[SessionInfo],
    labels: list[Selector],
    idle_older_than: float | None,
    now: datetime.datetime,
) -> tuple[list[SessionInfo], list[SessionInfo]]:
    """The regular sessions ``clean`` deletes, and the multiplexed ones it leaves alone, among
    those carrying ``labels`` and idle ``idle_older_than`` seconds or more.

    Multiplexed sessions take no labels, so a label selects none on Cloud Spanner; they are
    left out here all the same: the server refuses to delete one, and the clients using it
    would lose their road to the database.
    """
    if not labels:
        raise CommandError("clean needs at least one --label")
    matching = [s for s in sessions if s.matches(labels)]
    matching = older(matching, lambda s: s.idle(now), idle_older_than)
    return [s for s in matching if not s.multiplexed], [s for s in matching if s.multiplexed]


def _confirm(question: str) -> bool:
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline()
    if not sys.stdin.isatty():
        sys.stderr.write("\n")  # the answer was not echoed: end the question's line
    if not answer:
        raise CommandError(
            "no answer to the confirmation question: nothing deleted (--yes deletes without asking)"
        )
    return answer.strip().lower() in ("y", "yes")


def run_clean(args: argparse.Namespace) -> int:
    with connect(args) as target:
        return _clean(args, target)


def _clean(args: argparse.Namespace, target: Target) -> int:
    from google.api_core import exceptions

    chosen, multiplexed = choose_for_clean(
        fetch(target, args.labels), args.labels, args.idle_older_than, now_utc()
    )
    selection = " ".join(f"{k}={v}" if v is not None else k for k, v in args.labels)
    if args.idle_older_than is not None:
        selection += f", idle >= {age(args.idle_older_than)}"
    report: dict[str, Any] = {
        "database": target.database,
        "selection": selection,
        "matched": [s.name for s in chosen],
        "skipped_multiplexed": [s.name for s in multiplexed],
        "dry_run": bool(args.dry_run),
        "deleted": [],
        "already_gone": [],
        "failed": [],
    }
    if not args.json:
        if chosen:
            print(
                table(
                    ["SESSION", "KIND", "CREATED", "LAST USED", "ROLE", "LABELS"],
                    _session_rows(chosen),
                )
            )
        print(f"{plural(len(chosen), 'regular session')} match {selection} in {target.database}")
        if multiplexed:
            print(f"{len(multiplexed)} multiplexed sessions left alone: they are never deleted")
    if args.dry_run or not chosen:
        if args.json:
            print_json(report)
        elif args.dry_run and chosen:
            print("dry run: nothing deleted")
        return 0
    if not args.yes and not _confirm(f"Delete these {len(chosen)} sessions?"):
        raise CommandError("not confirmed: nothing deleted")

    def delete(session: SessionInfo) -> tuple[SessionInfo, str | None]:
        try:
            target.api.delete_session(name=session.name, timeout=target.timeout, retry=None)
        except exceptions.NotFound:
            return session, "gone"
        except exceptions.GoogleAPICallError as exc:
            return session, f"{type(exc).__name__}: {' '.join(str(exc.message).split())}"
        return session, None

    with (
        Progress("deleting", total=len(chosen)) as progress,
        ThreadPoolExecutor(DELETE_THREADS) as executor,
    ):
        for session, problem in executor.map(delete, chosen):
            if problem is None:
                report["deleted"].append(session.name)
            elif problem == "gone":
                report["already_gone"].append(session.name)
            else:
                report["failed"].append({"name": session.name, "error": problem})
            progress.advance()
    if args.json:
        print_json(report)
    else:
        print(
            f"deleted {len(report['deleted'])}, already gone {len(report['already_gone'])}, "
            f"failed {len(report['failed'])}"
        )
        for failure in report["failed"]:
            print(f"  {failure['name']}: {failure['error']}")
    return 1 if report["failed"] else 0
