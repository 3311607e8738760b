"""The ``spanpool`` command: ``serve`` a LocalSpanner, run the ``demo``, ``bench`` the pools,
``doctor`` a set-up, and list, count or clean a database's ``sessions``.

One module per command; what the commands that talk to Spanner share is in ``_common``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import bench, doctor, serve, sessions
from ._common import one_line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spanpool",
        description="Cloud Spanner session pools: a local Spanner server, a demo, benchmarks, "
        "and tools to see and clean a database's sessions.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.add_parsers(commands)
    doctor.add_parser(commands)
    sessions.add_parser(commands)
    bench.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.run(args)
    except KeyboardInterrupt:
        print("spanpool: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        command = " ".join(filter(None, [args.command, getattr(args, "action", None)]))
        message = one_line(exc, getattr(args, "database_name", None))
        print(f"spanpool {command}: error: {message}", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main())
