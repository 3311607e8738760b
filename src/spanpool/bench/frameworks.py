"""Frameworks: a request through the official DB-API and Django setup against the same request
through spanpool's, side by side, at 5 ms per RPC.

A request is: connect, one query (``SELECT 1``, autocommit), close; for Django, one request
through Django's test client to a view that runs that query, with the connection closed at
the end of the request as Django's request handler does with ``CONN_MAX_AGE=0``.

Each of the four runs in its own process (Django is configured once per process, and the
thread count must be the run's own), against one LocalSpanner in this process with 5 ms added
to every RPC. The process makes one warm-up request, then ``REQUESTS`` measured ones.
Reported: mean time per request, session RPCs per request (``CreateSession``,
``BatchCreateSessions``, ``GetSession``, ``DeleteSession``) and threads alive after the
requests (and how many of them the requests added).

Goals: spanpool <= 0.5x the official time per request, 0 session RPCs, no thread added.

Run with ``./dev run python -m spanpool.bench.frameworks [--quick] [--requests N]`` (or
``spanpool bench --only frameworks``, part of ``./dev bench``).
Django's rows need the ``django`` extra (``django-google-spanner``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from spanpool.testing import LocalSpanner

from .progress import report
from .table import Failed, Goal, Row, attempt, print_table, side_by_side

REQUESTS = 100
QUICK_REQUESTS = 20
LATENCY_MS = 5.0
RATIO_GOAL = 0.5
SESSION_METHODS = ("CreateSession", "BatchCreateSessions", "GetSession", "DeleteSession")
PROJECT, INSTANCE, DATABASE = "test-project", "test-instance", "bench"
RUNS = (
    ("DB-API connect, query, close", "dbapi"),
    ("Django request (test client)", "django"),
)

# -- the measured process ------------------------------------------------------------------


def _dbapi_request(side: str, endpoint: str) -> Callable[[], None]:
    from google.auth.credentials import AnonymousCredentials

    connect: Callable[..., Any]
    if side == "spanpool":
        from spanpool.dbapi import connect
    else:
        from google.cloud.spanner_dbapi import connect  # type: ignore[no-redef]
    kwargs: dict[str, Any] = {
        "project": PROJECT,
        "credentials": AnonymousCredentials(),
        "client_options": {"api_endpoint": endpoint},
    }

    def request() -> None:
        connection = connect(INSTANCE, DATABASE, **kwargs)
        connection.autocommit = True
        cursor = connection.cursor()
        cursor.execute("SELECT 1")
        assert cursor.fetchall() == [(1,)]
        connection.close()

    return request


def query(request: Any) -> Any:
    """The Django view: one query on the request's connection."""
    from django.db import connection
    from django.http import HttpResponse

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        (value,) = cursor.fetchone()
    return HttpResponse(str(value))


urlpatterns: list[Any] = []


def _django_request(side: str, endpoint: str) -> Callable[[], None]:
    os.environ["SPANNER_EMULATOR_HOST"] = endpoint
    import django
    from django.conf import settings
    from django.urls import path

    database: dict[str, Any] = {
        "ENGINE": "django_spanner",
        "PROJECT": PROJECT,
        "INSTANCE": INSTANCE,
        "NAME": DATABASE,
        "CONN_MAX_AGE": 0,
    }
    if side == "spanpool":
        from spanpool.frameworks.django import options

        database["OPTIONS"] = options(project=PROJECT)
    settings.configure(
        SECRET_KEY="bench",
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[],
        DATABASES={"default": database},
        MIDDLEWARE=[],
        USE_TZ=True,
    )
    django.setup()
    urlpatterns.append(path("query", query))
    from django.db import close_old_connections
    from django.test import Client

    client = Client()

    def request() -> None:
        response = client.get("/query")
        assert response.status_code == 200 and response.content == b"1", response
        close_old_connections()  # Django's handler does this at request_finished

    return request


def child(kind: str, side: str, endpoint: str, requests: int) -> None:
    """Warm up, say so, wait for the go, run ``requests`` requests, report as JSON."""
    make = _dbapi_request if kind == "dbapi" else _django_request
    request = make(side, endpoint)
    request()
    print("ready", flush=True)
    sys.stdin.readline()
    threads_before = threading.active_count()
    started = time.perf_counter()
    for _ in range(requests):
        request()
    elapsed = time.perf_counter() - started
    result = {
        "ms_per_request": elapsed * 1000 / requests,
        "threads": threading.active_count(),
        "threads_added": threading.active_count() - threads_before,
    }
    print(json.dumps(result), flush=True)
    os._exit(0)  # the official client's per-Database threads sleep for minutes


# -- the parent ----------------------------------------------------------------------------


def run_child(server: LocalSpanner, kind: str, side: str, requests: int) -> dict[str, Any]:
    """One run in a child process; its report plus the session RPCs per request."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOOGLE_CLOUD_SPANNER_")}
    env["SPANNER_DISABLE_BUILTIN_METRICS"] = "true"  # nothing to export them to
    env.pop("SPANNER_EMULATOR_HOST", None)
    command = [sys.executable, "-m", "spanpool.bench.frameworks", "--child", kind, side]
    process = subprocess.Popen(
        [*command, server.endpoint, "--requests", str(requests)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{kind}/{side}: the child failed (status {process.wait()})")
        server.control.reset_counts()
        process.stdin.write("go\n")
        process.stdin.flush()
        line = process.stdout.readline()
        counts = server.control.request_counts()
    finally:
        process.stdin.close()
        if process.wait(60) != 0:
            raise RuntimeError(f"{kind}/{side}: the child exited with status {process.returncode}")
    result: dict[str, Any] = json.loads(line)
    result["session_rpcs"] = sum(counts.get(m, 0) for m in SESSION_METHODS) / requests
    return result


def _has_django() -> bool:
    try:
        import django_spanner  # noqa: F401
    except ImportError:
        return False
    return True


def _get(measured: dict[str, Any] | Failed, key: str) -> float | Failed:
    return measured if isinstance(measured, Failed) else float(measured[key])


def rows_for(label: str, official: Any, ours: Any, requests: int) -> list[Row]:
    """Time, session RPCs and threads of one kind of request, side by side."""
    time_row = side_by_side(
        label,
        LATENCY_MS,
        "time per request",
        _get(official, "ms_per_request"),
        _get(ours, "ms_per_request"),
        "{:.2f} ms".format,
        Goal("<=", RATIO_GOAL, f"{RATIO_GOAL:g}x"),
    )
    rpc_row = side_by_side(
        label,
        LATENCY_MS,
        "session RPCs per request",
        _get(official, "session_rpcs"),
        _get(ours, "session_rpcs"),
        "{:.2f}".format,
        Goal("==", 0),
        absolute=True,
    )
    thread_row = side_by_side(
        label,
        LATENCY_MS,
        f"threads added by {requests} requests",
        _get(official, "threads_added"),
        _get(ours, "threads_added"),
        "{:+.0f}".format,
        Goal("==", 0),
        absolute=True,
    )
    for side, measured in (("official", official), ("spanpool", ours)):
        if not isinstance(measured, Failed):
            text = f"{measured['threads_added']:+d} ({measured['threads']} alive)"
            setattr(thread_row, side, text)
    return [time_row, rpc_row, thread_row]


def measure(args: argparse.Namespace) -> list[Row]:
    """Every run, as rows of the benchmark table (``spanpool bench --only frameworks``)."""
    requests = getattr(args, "requests", None) or (QUICK_REQUESTS if args.quick else REQUESTS)
    rows: list[Row] = []
    with LocalSpanner() as server:
        server.control.inject_latency(LATENCY_MS)
        for label, kind in RUNS:
            if kind == "django" and not _has_django():
                continue  # needs the django extra
            results = {}
            for side in ("official", "spanpool"):
                report("frameworks", f"{label}, {side}")
                results[side] = attempt(functools.partial(run_child, server, kind, side, requests))
            rows += rows_for(label, results["official"], results["spanpool"], requests)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, help=f"per run (default {REQUESTS})")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_REQUESTS} requests per run")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "SIDE", "ENDPOINT"))
    options = parser.parse_args(argv)
    if options.requests is not None and options.requests < 1:
        parser.error("--requests must be >= 1")
    if options.child:
        kind, side, endpoint = options.child
        child(kind, side, endpoint, options.requests or REQUESTS)
    began = time.monotonic()
    rows = measure(options)
    print()
    print(
        f"Frameworks: official setup vs spanpool's, {LATENCY_MS:g} ms per RPC, each run in its "
        f"own process, {os.cpu_count()} cores, {time.monotonic() - began:.0f} s"
    )
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
