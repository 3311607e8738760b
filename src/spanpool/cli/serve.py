"""``spanpool serve`` (a LocalSpanner server) and ``spanpool demo``."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path
from types import FrameType
from typing import Any


def _serve(args: argparse.Namespace) -> int:
    from ..testing import LocalSpanner

    ddl: list[str] = []
    if args.ddl:
        text = Path(args.ddl).read_text()
        ddl = [s.strip() for s in text.split(";") if s.strip()]
    server = LocalSpanner(
        host=args.host,
        port=args.port,
        ddl=ddl,
        session_idle_timeout=args.session_idle_timeout,
        max_sessions_per_database=args.max_sessions_per_database,
        max_sessions_per_batch=args.max_sessions_per_batch,
        strict=args.strict,
        data_dir=args.data_dir,
    )
    server.start()
    if args.latency_ms:
        server.inject_latency(args.latency_ms, jitter_ms=args.jitter_ms)
    print(server.endpoint, flush=True)

    def stop(signum: int, frame: FrameType | None) -> None:
        server.stop(grace=0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.wait()
    return 0


def _demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    return run_demo(threads=args.threads, seconds=args.seconds, accounts=args.accounts)


def add_parsers(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="run a LocalSpanner server",
        description="Run a LocalSpanner gRPC server. Prints host:port on the first line; "
        "exits 0 on SIGTERM or SIGINT.",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    serve.add_argument("--ddl", help="file of DDL statements separated by ';', for new databases")
    serve.add_argument("--latency-ms", type=float, default=0.0, help="added to every RPC")
    serve.add_argument("--jitter-ms", type=float, default=0.0)
    serve.add_argument("--session-idle-timeout", type=float, default=3600.0, metavar="S")
    serve.add_argument("--max-sessions-per-database", type=int, default=10_000, metavar="N")
    serve.add_argument("--max-sessions-per-batch", type=int, default=100, metavar="N")
    serve.add_argument("--strict", action="store_true", help="unknown databases are NOT_FOUND")
    serve.add_argument("--data-dir", help="keep the SQLite files here (default: temporary)")
    serve.set_defaults(run=_serve)

    demo = commands.add_parser(
        "demo",
        help="run a short concurrent workload against an embedded LocalSpanner",
    )
    demo.add_argument("--threads", type=int, default=6)
    demo.add_argument("--seconds", type=float, default=5.0)
    demo.add_argument("--accounts", type=int, default=20)
    demo.set_defaults(run=_demo)
