"""``spanpool doctor [DATABASE]``: which session serves each kind of operation under this
environment and why, the client's known defects that matter here, and with a database whether
the server takes multiplexed sessions, the round trip time and a session census."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import statistics
import textwrap
import time
from dataclasses import dataclass
from typing import Any

from ..bridge import routing
from ._common import (
    EMULATOR_HOST,
    CommandError,
    Target,
    add_connection_arguments,
    connect,
    print_json,
    resolve_endpoint,
    table,
)
from ._defects import DEFECTS, KNOWN_VERSION
from ._listing import Census, fetch, now_utc

ROUND_TRIPS = 5


@dataclass(frozen=True)
class Operation:
    name: str
    calls: str
    transaction_type: str  # one of the client's TransactionType values
    note: str = ""


OPERATIONS = (
    Operation("read-only", "snapshot(), session()", routing.READ_ONLY),
    Operation("read-write", "run_in_transaction(), mutation_groups()", routing.READ_WRITE),
    Operation("partitioned", "execute_partitioned_dml(), batch_snapshot()", routing.PARTITIONED),
    Operation(
        "batch()",
        "batch() mutations",
        routing.READ_ONLY,
        "the client checks out batch() as a read-only operation",
    ),
)


def add_parser(commands: Any) -> None:
    doctor = commands.add_parser(
        "doctor",
        help="which sessions serve what here, known client defects, a database's health",
        description="Versions; for each kind of operation, whether google-cloud-spanner uses a "
        "multiplexed or a regular session under the current environment, and why; the "
        "client's known defects that matter here; with DATABASE, whether the server accepts "
        "multiplexed sessions, the round trip time and a session census.",
    )
    add_connection_arguments(doctor, database="optional")
    doctor.add_argument(
        "--all", action="store_true", help="list every known defect, not only those that matter"
    )
    doctor.set_defaults(run=run)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    return {
        "spanpool": _version("spanpool"),
        "google-cloud-spanner": _version("google-cloud-spanner"),
        "grpcio": _version("grpcio"),
        "python": platform.python_version(),
    }


def route(operation: Operation, environ: Any = None) -> dict[str, Any]:
    """Where the client sends ``operation`` under ``environ``, and the reason in words."""
    environ = os.environ if environ is None else environ
    variable = routing.ENV_OF[operation.transaction_type]
    multiplexed = routing.uses_multiplexed(operation.transaction_type, environ)
    value = environ.get(variable)
    if value is None:
        why = f"{variable} is not set (multiplexed by default)"
    elif multiplexed:
        why = f'{variable}="{value}" is not "false", so multiplexed stays on'
    else:
        why = f'{variable}="{value}" reads as "false"'
    if operation.note:
        why = f"{operation.note}: {why}"
    return {
        "operation": operation.name,
        "calls": operation.calls,
        "session": "multiplexed" if multiplexed else "regular",
        "variable": variable,
        "value": value,
        "why": why,
    }


def defects(routes: list[dict[str, Any]], client_version: str | None) -> list[dict[str, Any]]:
    roads = {r["session"] for r in routes}
    measured = bool(client_version and client_version.startswith(KNOWN_VERSION))
    return [
        {
            "id": defect.id,
            "defect": defect.text,
            "relevant": defect.relevant(roads),
            "when": "every operation uses the multiplexed session"
            if defect.road == "every"
            else f"an operation uses a {defect.road} session",
            "spanpool": defect.remedy,
            "remedy_installed": defect.available,
            "measured_on_installed_version": measured,
        }
        for defect in DEFECTS
    ]


def endpoint_info(args: argparse.Namespace) -> dict[str, Any]:
    endpoint = resolve_endpoint(args.endpoint)
    info: dict[str, Any] = {
        "address": endpoint.address or "spanner.googleapis.com",
        "kind": "Cloud Spanner" if endpoint.address is None else "emulator protocol",
        "from": endpoint.source,
    }
    if endpoint.address is None:
        from ._common import default_credentials

        try:
            credentials, project = default_credentials()
        except CommandError:
            info["credentials"] = "none found (gcloud auth application-default login)"
        else:
            info["credentials"] = type(credentials).__name__
            info["project"] = project
    return info


def check_database(target: Target) -> dict[str, Any]:
    """Census, multiplexed-session support and round trip time of the target database."""
    from google.api_core import exceptions

    sessions = fetch(target)  # also tells a missing database
    census = Census.of(sessions, now_utc())
    multiplexed = [s for s in sessions if s.multiplexed]
    result: dict[str, Any] = {"name": target.database}
    probe_name, temporary = None, False
    if multiplexed:
        result["multiplexed"] = f"accepted ({len(multiplexed)} in use)"
        result["multiplexed_accepted"] = True
        probe_name = multiplexed[0].name
    else:
        try:
            created = target.api.create_session(
                request={"database": target.database, "session": {"multiplexed": True}},
                timeout=target.timeout,
                retry=None,
            )
        except (exceptions.InvalidArgument, exceptions.MethodNotImplemented) as exc:
            result["multiplexed"] = f"not accepted: {exc.message}"
            result["multiplexed_accepted"] = False
        else:
            accepted = bool(created.multiplexed)
            result["multiplexed_accepted"] = accepted
            result["multiplexed"] = (
                "accepted (doctor created one; the server keeps it up to 28 days)"
                if accepted
                else "not accepted: the server made a regular session instead"
            )
            probe_name, temporary = created.name, not accepted
    if probe_name is None:
        created = target.api.create_session(
            database=target.database, timeout=target.timeout, retry=None
        )
        probe_name, temporary = created.name, True
    try:
        result["round_trip_ms"] = round_trips(target, probe_name)
    finally:
        if temporary:
            target.api.delete_session(name=probe_name, timeout=target.timeout, retry=None)
    result["census"] = census.to_json()
    result["census_line"] = census.one_line()
    return result


def round_trips(target: Target, session: str) -> dict[str, float]:
    """``SELECT 1`` in a single-use read-only transaction, ROUND_TRIPS times, in ms."""
    times = []
    for _ in range(ROUND_TRIPS):
        began = time.perf_counter()
        target.api.execute_sql(
            request={"session": session, "sql": "SELECT 1"}, timeout=target.timeout, retry=None
        )
        times.append((time.perf_counter() - began) * 1000)
    return {"median": round(statistics.median(times), 3), "min": round(min(times), 3)}


def run(args: argparse.Namespace) -> int:
    routes = [route(operation) for operation in OPERATIONS]
    report: dict[str, Any] = {
        "versions": versions(),
        "environment": {
            name: os.environ.get(name) for name in (*routing.ENV_OF.values(), EMULATOR_HOST)
        },
        "endpoint": endpoint_info(args),
        "routing": routes,
        "defects": defects(routes, versions()["google-cloud-spanner"]),
        "database": None,
    }
    if args.database:
        with connect(args) as target:
            report["database"] = check_database(target)
    if args.json:
        print_json(report)
    else:
        print_report(report, show_all=args.all)
    return 0


def print_report(report: dict[str, Any], *, show_all: bool) -> None:
    found = report["versions"]
    print(", ".join(f"{name} {version or 'not installed'}" for name, version in found.items()))
    endpoint = report["endpoint"]
    line = f"endpoint: {endpoint['address']} ({endpoint['kind']}, from {endpoint['from']})"
    if "credentials" in endpoint:
        line += f"; credentials: {endpoint['credentials']}"
    print(line)
    print()
    print("Sessions by operation, as the installed client reads the environment:")
    rows = [[r["operation"], r["session"], r["why"]] for r in report["routing"]]
    print(_indent(table(["OPERATION", "SESSION", "WHY"], rows)))
    print(
        '  (each variable is read at every request; only "false", in any case, turns one off; '
        'a client made\n  with instance_type="omni" uses multiplexed sessions for everything)'
    )
    print()
    client = found["google-cloud-spanner"]
    shown = [d for d in report["defects"] if show_all or d["relevant"]]
    hidden = len(report["defects"]) - len(shown)
    measured = report["defects"][0]["measured_on_installed_version"] if report["defects"] else 0
    title = f"Known defects of google-cloud-spanner {client}"
    if not measured:
        title += f" (measured on {KNOWN_VERSION}x; not checked on this version)"
    print(title + (" that matter here:" if not show_all else ":"))
    for defect in shown:
        remedy = defect["spanpool"]
        if not defect["remedy_installed"]:
            remedy += " (not in the installed spanpool)"
        mark = "!" if defect["relevant"] else "-"
        print(
            textwrap.fill(
                defect["defect"], 100, initial_indent=f"  {mark} ", subsequent_indent="    "
            )
        )
        print(
            textwrap.fill(remedy, 100, initial_indent="    spanpool: ", subsequent_indent="      ")
        )
    if not shown:
        print("  none")
    if hidden:
        print(f"  ({hidden} more that do not matter under this environment: doctor --all)")
    database = report["database"]
    if database is not None:
        print()
        print(f"Database {database['name']}:")
        print(f"  multiplexed sessions: {database['multiplexed']}")
        rtt = database["round_trip_ms"]
        print(
            f"  round trip: {rtt['median']:.2f} ms median, {rtt['min']:.2f} ms best "
            f"(SELECT 1, {ROUND_TRIPS} times)"
        )
        print(f"  census: {database['census_line']}")


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
