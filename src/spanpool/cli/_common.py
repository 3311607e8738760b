"""What every command that talks to Spanner shares: naming the database, finding the endpoint
and credentials, connecting with a bounded wait, and turning failures into one line."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

SPANNER_DATA_SCOPE = "https://www.googleapis.com/auth/spanner.data"
EMULATOR_HOST = "SPANNER_EMULATOR_HOST"
PROJECT_ENV = "GOOGLE_CLOUD_PROJECT"

_FULL_NAME = re.compile(
    r"projects/(?P<project>[^/]+)/instances/(?P<instance>[^/]+)/databases/(?P<database>[^/]+)"
)
_PROJECT_ID = re.compile(r"[a-z0-9][a-z0-9.:-]*[a-z0-9]|[a-z0-9]")
_INSTANCE_ID = re.compile(r"[a-z][-a-z0-9]{0,62}[a-z0-9]")
_DATABASE_ID = re.compile(r"[a-z][a-z0-9_-]{0,28}[a-z0-9]")
_DURATION = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>s|m|min|h|d)?")
_UNIT_SECONDS = {"s": 1.0, None: 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_LABEL = re.compile(r"(?P<key>[a-z][a-z0-9_-]{0,62})(?:=(?P<value>[a-z0-9_-]{0,63}))?")


class CommandError(Exception):
    """A failure the user can act on, shown as one line without a traceback."""


# -- arguments -------------------------------------------------------------------------------


def duration(text: str) -> float:
    """``argparse`` type: ``90``, ``90s``, ``50m``, ``2h``, ``1d`` in seconds."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 90s, 50m, 2h or 1d")
    return float(match["number"]) * _UNIT_SECONDS[match["unit"]]


def label(text: str) -> tuple[str, str | None]:
    """``argparse`` type: ``key=value`` (that value) or ``key`` (any value)."""
    match = _LABEL.fullmatch(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a label selector KEY=VALUE or KEY (lower-case letters, digits, "
            "'_' and '-'; keys start with a letter)"
        )
    return match["key"], match["value"]


def add_connection_arguments(parser: argparse.ArgumentParser, *, database: str) -> None:
    """DATABASE (``database`` says whether it is ``required`` or ``optional``) and the options
    that say where it is."""
    parser.add_argument(
        "database",
        metavar="DATABASE",
        nargs=None if database == "required" else "?",
        help="projects/P/instances/I/databases/D, or D with --instance (and --project)",
    )
    parser.add_argument(
        "--project",
        help=f"for a short DATABASE (default: ${PROJECT_ENV}, "
        "then the project of the default credentials)",
    )
    parser.add_argument("--instance", help="for a short DATABASE")
    parser.add_argument(
        "--endpoint",
        metavar="HOST:PORT",
        help=f"an emulator or LocalSpanner, without credentials (default: ${EMULATOR_HOST}, "
        "else Cloud Spanner with the default Google credentials)",
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="give up when the endpoint cannot be reached in S seconds (default 10)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="deadline of each request (default 60)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


# -- where and what --------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """An emulator-style address (plain text, no credentials), or Cloud Spanner."""

    address: str | None
    source: str

    @property
    def description(self) -> str:
        if self.address is None:
            return "Cloud Spanner (spanner.googleapis.com), default Google credentials"
        return f"{self.address} (emulator protocol, from {self.source})"


def resolve_endpoint(given: str | None) -> Endpoint:
    """``--endpoint``, else ``SPANNER_EMULATOR_HOST``, else Cloud Spanner."""
    if given:
        source, address = "--endpoint", given
    elif os.environ.get(EMULATOR_HOST):
        source, address = EMULATOR_HOST, os.environ[EMULATOR_HOST]
    else:
        return Endpoint(None, "default")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise CommandError(f"{source} must be HOST:PORT, not {address!r}")
    return Endpoint(address, source)


def default_credentials() -> tuple[Any, str | None]:
    """The default Google credentials and their project; a ``CommandError`` when none."""
    import google.auth
    from google.auth import exceptions as auth_exceptions

    try:
        credentials, project = google.auth.default(scopes=[SPANNER_DATA_SCOPE])
    except auth_exceptions.DefaultCredentialsError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CommandError(
            f"no Google credentials ({first.rstrip('.')}): run 'gcloud auth application-default "
            f"login' or set GOOGLE_APPLICATION_CREDENTIALS, or give --endpoint for an emulator"
        ) from None
    return credentials, project


def database_name(
    text: str, project: str | None, instance: str | None, default_project: str | None = None
) -> str:
    """The full resource name of DATABASE, checked as Cloud Spanner checks its IDs."""
    match = _FULL_NAME.fullmatch(text)
    if match is not None:
        if project or instance:
            raise CommandError(
                "DATABASE is a full name: --project and --instance are for a short one"
            )
        project, instance, database = match["project"], match["instance"], match["database"]
    elif "/" in text:
        raise CommandError(
            f"DATABASE {text!r} is neither projects/P/instances/I/databases/D nor a database ID"
        )
    else:
        database = text
        project = project or os.environ.get(PROJECT_ENV) or default_project
        if not instance:
            raise CommandError(
                f"DATABASE {text!r} is a database ID: give --instance (and --project or "
                f"${PROJECT_ENV}), or the full name projects/P/instances/I/databases/{text}"
            )
        if not project:
            raise CommandError(
                f"no project for DATABASE {text!r}: give --project, set ${PROJECT_ENV}, "
                "or the full name projects/P/instances/I/databases/D"
            )
    for kind, value, pattern, rule in (
        ("project", project, _PROJECT_ID, "lower-case letters, digits, '-', '.' and ':'"),
        (
            "instance",
            instance,
            _INSTANCE_ID,
            "2-64 lower-case letters, digits and '-', starting with a letter",
        ),
        (
            "database",
            database,
            _DATABASE_ID,
            "2-30 lower-case letters, digits, '_' and '-', starting with a letter",
        ),
    ):
        if not pattern.fullmatch(value):
            raise CommandError(f"{kind} ID {value!r} is not valid: {rule}")
    return f"projects/{project}/instances/{instance}/databases/{database}"


@dataclass
class Target:
    """A connected Spanner API and the database the command works on."""

    api: Any  # google.cloud.spanner_v1.services.spanner.SpannerClient
    database: str
    endpoint: Endpoint
    timeout: float

    def close(self) -> None:
        self.api.transport.close()

    def __enter__(self) -> Target:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def connect(args: argparse.Namespace) -> Target:
    """Connect to the endpoint of ``args`` within ``--connect-timeout`` seconds."""
    from google.cloud.spanner_v1.services.spanner import SpannerClient
    from google.cloud.spanner_v1.services.spanner.transports import SpannerGrpcTransport

    if args.connect_timeout <= 0 or args.timeout <= 0:
        raise CommandError("--connect-timeout and --timeout must be > 0 seconds")
    endpoint = resolve_endpoint(args.endpoint)
    default_project = None
    if endpoint.address is None:
        credentials, default_project = default_credentials()
    name = database_name(args.database, args.project, args.instance, default_project)
    args.database_name = name  # for the error messages of main()
    if endpoint.address is not None:
        transport = SpannerGrpcTransport(channel=grpc.insecure_channel(endpoint.address))
        shown = endpoint.address
    else:
        transport = SpannerGrpcTransport(credentials=credentials)
        shown = "spanner.googleapis.com"
    try:
        grpc.channel_ready_future(transport.grpc_channel).result(timeout=args.connect_timeout)
    except grpc.FutureTimeoutError:
        transport.close()
        raise CommandError(
            f"cannot reach {shown} within {args.connect_timeout:g} s (--connect-timeout)"
        ) from None
    return Target(SpannerClient(transport=transport), name, endpoint, args.timeout)


# -- failures --------------------------------------------------------------------------------


def one_line(exc: BaseException, database: str | None = None) -> str:
    """What went wrong, in one line, for the errors that reach the command line."""
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions

    if isinstance(exc, CommandError):
        return str(exc)
    if isinstance(exc, api_exceptions.GoogleAPICallError):
        message = " ".join(str(exc.message or "").split()) or type(exc).__name__
        if isinstance(exc, api_exceptions.NotFound) and "atabase not found" in message:
            return f"database {database or ''} not found".replace("  ", " ")
        if isinstance(exc, api_exceptions.Unauthenticated):
            return f"the credentials were refused: {message}"
        if isinstance(exc, api_exceptions.PermissionDenied):
            return f"permission denied: {message}"
        if isinstance(exc, (api_exceptions.ServiceUnavailable, api_exceptions.DeadlineExceeded)):
            return f"the server did not answer ({type(exc).__name__}): {message}"
        return f"{type(exc).__name__}: {message}"
    if isinstance(exc, auth_exceptions.GoogleAuthError):
        text = " ".join(str(exc).split())
        return f"cannot use the Google credentials: {text}"
    if isinstance(exc, grpc.RpcError):
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else str(exc)
        return f"{getattr(code, 'name', 'RPC error')}: {details}"
    return f"{type(exc).__name__}: {exc}"


# -- output ----------------------------------------------------------------------------------


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Collection[int] = ()) -> str:
    """Columns padded to their widest cell; ``right`` names right-aligned columns."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            str(cell).rjust(width) if i in right else str(cell).ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(header), *(line(row) for row in rows)])


def age(seconds: float) -> str:
    """A short age: ``42s``, ``13m``, ``5h``, ``3d``."""
    if seconds < 0:
        return "0s"
    for limit, unit, size in ((120, "s", 1), (7200, "m", 60), (172800, "h", 3600)):
        if seconds < limit:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds / 86400:.0f}d"
