"""Pools at interpreter exit, in a real separate process of each flavour: an unclosed pool
deletes its sessions (the official pools leave theirs), and never hangs on a server that is
gone. Hand-written: the scripts differ between the flavours."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from spanpool.testing import LocalSpanner

from ._support import rpcs


def _run_script(script: str, *args: str, prints: str) -> str:
    """Run ``script`` in a Python process of its own; it must succeed after printing
    ``prints``. Returns its stderr."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == prints
    return done.stderr


_EXIT_WITHOUT_CLOSE = textwrap.dedent(
    """
    import sys

    from spanpool.testing import connect

    endpoint, database_id, kind, size = sys.argv[1:]
    if kind == "spanpool":
        from spanpool import FixedSizePool
    else:
        from google.cloud.spanner_v1.pool import FixedSizePool
    pool = FixedSizePool(size=int(size))
    database = connect(endpoint, database_id, pool=pool)
    with pool.session() as session:
        assert list(session.execute_sql("SELECT 1")) == [[1]]
    print("used", flush=True)
    """
)


def _run_and_exit_without_close(server: LocalSpanner, kind: str, size: int) -> tuple[int, str]:
    """Run a process that uses a pool and exits without closing it; returns the session
    count it left on the server, and its stderr."""
    database_id = f"exit-{kind}-{size}"
    args = (server.endpoint, database_id, kind, str(size))
    stderr = _run_script(_EXIT_WITHOUT_CLOSE, *args, prints="used")
    return server.session_count(server.database_path(database_id)), stderr


@pytest.mark.parametrize(
    "size",
    [1, 5],
)
def test_process_exit_without_close_deletes_the_sessions(server: LocalSpanner, size: int) -> None:
    left, stderr = _run_and_exit_without_close(server, "spanpool", size)

    assert left == 0
    assert "Traceback" not in stderr


def test_official_pool_leaves_its_sessions_at_process_exit(server: LocalSpanner) -> None:
    left, _ = _run_and_exit_without_close(server, "official", 5)

    assert left == 5


_ASYNC_EXIT_WITHOUT_CLOSE = textwrap.dedent(
    """
    import asyncio
    import sys

    from spanpool import AsyncFixedSizePool
    from spanpool.testing import connect_async

    endpoint, database_id, size = sys.argv[1:]


    async def main() -> None:
        pool = AsyncFixedSizePool(size=int(size))
        await connect_async(endpoint, database_id, pool=pool)
        async with pool.session() as session:
            results = await session.execute_sql("SELECT 1")
            assert [list(row) async for row in results] == [[1]]


    asyncio.run(main())
    print("used", flush=True)
    """
)


def test_asyncio_process_exit_without_close_deletes_the_sessions(server: LocalSpanner) -> None:
    # The event loop, and the asyncio channel with it, are gone by then.
    stderr = _run_script(_ASYNC_EXIT_WITHOUT_CLOSE, server.endpoint, "exit", "3", prints="used")
    assert "Traceback" not in stderr
    assert rpcs(server, "BatchCreateSessions") == 1
    assert server.session_count(server.database_path("exit")) == 0


_EXIT_AFTER_THE_SERVER_IS_GONE = textwrap.dedent(
    """
    import asyncio, sys

    from spanpool import AsyncFixedSizePool, FixedSizePool
    from spanpool.testing import LocalSpanner, connect, connect_async

    flavour = sys.argv[1]
    server = LocalSpanner().start()
    if flavour == "blocking":
        pool = FixedSizePool(size=20)
        connect(server.endpoint, "gone", pool=pool)
    else:
        apool = AsyncFixedSizePool(size=20)

        async def bind() -> None:
            await connect_async(server.endpoint, "gone", pool=apool)

        asyncio.run(bind())
    server.stop(grace=None)
    print("server stopped", flush=True)
    """
)


@pytest.mark.parametrize("flavour", ["blocking", "asyncio"])
def test_exit_does_not_hang_when_the_server_is_gone(flavour: str) -> None:
    # Deleting at exit is best effort: one short attempt per session, no retries. With the
    # client's default retries each of the 20 deletes would keep the process alive for 30 s.
    stderr = _run_script(_EXIT_AFTER_THE_SERVER_IS_GONE, flavour, prints="server stopped")
    assert "delet" in stderr  # the failed deletes are logged, not raised
