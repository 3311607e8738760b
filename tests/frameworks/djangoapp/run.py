"""A small Django site on django-google-spanner, run in its own process by the tests and the
benchmark: migrate, then requests through Django's test client, closing connections after
each request as Django's request handler does (``CONN_MAX_AGE=0``).

Prints one JSON object: what the server saw per request, threads, and the data.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import traceback
from typing import Any

SESSION_METHODS = ("CreateSession", "BatchCreateSessions", "GetSession", "DeleteSession")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--setup", choices=["spanpool", "official"], default="spanpool")
    parser.add_argument("--endpoint", help="a LocalSpanner to use (default: start one here)")
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--latency-ms", type=float, default=0)
    parser.add_argument("--regular", action="store_true", help="regular sessions, FixedSizePool")
    parser.add_argument("--store", help="SQLite file for spanpool's shared store")
    parser.add_argument("--migrate", action="store_true")
    args = parser.parse_args()

    from spanpool.testing import REGULAR_SESSIONS_ENV, LocalSpanner

    if args.regular:
        os.environ.update(REGULAR_SESSIONS_ENV)
    server = None
    endpoint = args.endpoint
    if endpoint is None:
        server = LocalSpanner().start()
        endpoint = server.endpoint
    os.environ["SPANNER_EMULATOR_HOST"] = endpoint

    import django
    from django.conf import settings

    pool = None
    database: dict[str, Any] = {
        "ENGINE": "django_spanner",
        "PROJECT": "test-project",
        "INSTANCE": "test-instance",
        "NAME": "shop",
        "CONN_MAX_AGE": 0,
    }
    if args.setup == "spanpool":
        from spanpool.frameworks.django import options

        if args.regular:
            pool = _counting_pool()
        store = None
        if args.store:
            from spanpool.stores import SQLiteStore

            store = SQLiteStore(args.store)
        database["OPTIONS"] = options(pool=pool, store=store)
    settings.configure(
        SECRET_KEY="tests",
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF="tests.frameworks.djangoapp.urls",
        INSTALLED_APPS=["tests.frameworks.djangoapp.shop"],
        DATABASES={"default": database},
        MIDDLEWARE=[],
        USE_TZ=True,
    )
    django.setup()

    from django.core.management import call_command
    from django.db import close_old_connections
    from django.test import Client

    if args.migrate:
        call_command("migrate", "shop", verbosity=0)
    if server is not None and args.latency_ms:
        server.control.inject_latency(args.latency_ms)
    client = Client()
    rpcs: list[dict[str, int]] = []
    seconds: list[float] = []
    threads: list[int] = []
    statuses: list[int] = []
    for i in range(args.requests):
        before = server.control.request_counts() if server is not None else {}
        started = time.perf_counter()
        if i % 3 == 0:
            response = client.post("/items", {"name": f"item-{i:03d}", "price": i})
        elif i % 3 == 1:
            response = client.post("/items", {"name": f"refused-{i:03d}", "fail": "1"})
        else:
            response = client.get("/items")
        # What Django's request handler does at request_finished (the test client skips it).
        close_old_connections()
        seconds.append(time.perf_counter() - started)
        statuses.append(response.status_code)
        threads.append(_threads())
        if server is not None:
            after = server.control.request_counts()
            rpcs.append({m: after.get(m, 0) - before.get(m, 0) for m in SESSION_METHODS})
    names = [name for name, _ in client.get("/items").json()["items"]]
    close_old_connections()
    report = {
        "statuses": statuses,
        "session_rpcs": rpcs,
        "seconds": seconds,
        "threads": threads,
        "names": names,
        "pool_clears": getattr(pool, "clears", None),
        "sessions_deleted": pool.get_stats().get("sessions_deleted") if pool else None,
    }
    json.dump(report, sys.stdout)
    sys.stdout.flush()
    os._exit(0)  # the official client's threads would keep the process up to 10 minutes


def _threads() -> int:
    return sum(1 for t in threading.enumerate() if not t.name.startswith("spanner_"))


def _counting_pool() -> Any:
    from spanpool import FixedSizePool

    class CountingPool(FixedSizePool):
        """A FixedSizePool that counts calls to ``clear()``."""

        clears = 0

        def clear(self) -> None:
            type(self).clears += 1
            super().clear()

    return CountingPool(size=2, default_timeout=10)


if __name__ == "__main__":
    try:
        main()
    except BaseException:
        traceback.print_exc()
        os._exit(1)
