"""LocalSpanner: a real Cloud Spanner gRPC server on loopback, for tests, demos and benchmarks."""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import grpc
from google.cloud.spanner_v1.testing import spanner_database_admin_pb2_grpc, spanner_pb2_grpc

from .control import Control, RequestRecord
from .model import Backend, Rules
from .services import instance_admin
from .services.database_admin import DatabaseAdminService
from .services.spanner import SpannerService

__all__ = [
    "LocalSpanner",
    "RequestRecord",
    "ServerProcess",
    "connect",
    "connect_async",
    "serve_in_process",
]

MAX_MESSAGE_BYTES = 128 * 1024 * 1024
DEFAULT_PROJECT = "test-project"
DEFAULT_INSTANCE = "test-instance"

P = ParamSpec("P")
R = TypeVar("R")


def connect(
    endpoint: str,
    database_id: str,
    *,
    pool: Any = None,
    project: str = DEFAULT_PROJECT,
    instance: str = DEFAULT_INSTANCE,
    **database_options: Any,
) -> Any:
    """The official client's ``Database`` for ``database_id`` on a LocalSpanner ``endpoint``.

    ``pool`` and ``database_options`` go to ``Instance.database``.
    """
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import spanner

    client = spanner.Client(
        project=project,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": endpoint},
        # Built-in metrics would be exported to Cloud Monitoring: no use for a local server.
        disable_builtin_metrics=True,
    )
    return client.instance(instance).database(database_id, pool=pool, **database_options)


async def connect_async(
    endpoint: str,
    database_id: str,
    pool: Any = None,
    project: str = DEFAULT_PROJECT,
    instance: str = DEFAULT_INSTANCE,
    **database_options: Any,
) -> Any:
    """The official asyncio client's ``Database`` for ``database_id`` on a LocalSpanner
    ``endpoint``, with ``pool`` bound to it (``await``-ed, so an asyncio pool is filled).

    ``pool`` and ``database_options`` go to ``Instance.database``.
    """
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.spanner_v1 import AsyncClient

    client = AsyncClient(
        project=project,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": endpoint},
        # Built-in metrics would be exported to Cloud Monitoring: no use for a local server.
        disable_builtin_metrics=True,
    )
    return await client.instance(instance).database(database_id, pool=pool, **database_options)


@dataclass(frozen=True)
class ServerProcess:
    """A ``spanpool serve`` child process: where it listens, and its pid."""

    endpoint: str
    pid: int


@contextmanager
def serve_in_process(*options: str, timeout: float = 30.0) -> Iterator[ServerProcess]:
    """Run ``spanpool serve OPTIONS...`` in a child process; yields its endpoint and pid.

    A server in its own process does not compete with the client for the interpreter lock,
    which is what benchmarks want. The process is stopped with SIGTERM on exit.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "spanpool", "serve", *options],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        endpoint = process.stdout.readline().strip()
        if not endpoint:
            raise RuntimeError(f"spanpool serve exited with status {process.wait(timeout)}")
        yield ServerProcess(endpoint, process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _of_control(
    method: Callable[Concatenate[Control, P], R],
) -> Callable[Concatenate[LocalSpanner, P], R]:
    """A method of :class:`LocalSpanner` that is ``method`` of its ``control``."""

    @functools.wraps(method)
    def call(self: LocalSpanner, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return method(self.control, *args, **kwargs)

    call.__qualname__ = f"LocalSpanner.{method.__name__}"
    return call


class LocalSpanner:
    """A Spanner server speaking the real ``google.spanner.v1`` gRPC protocol on loopback.

    Point the official client at it with ``client_options={"api_endpoint": server.endpoint}``
    and ``AnonymousCredentials()``, or with ``SPANNER_EMULATOR_HOST=server.endpoint``::

        with LocalSpanner(ddl=["CREATE TABLE T (Id INT64) PRIMARY KEY (Id)"]) as server:
            client = Client(project="p", credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": server.endpoint})
            database = client.instance("i").database("d")

    Sessions behave as on Cloud Spanner: they expire after ``session_idle_timeout`` seconds
    unused (measured with ``clock``, which tests may replace; the create and last-use times
    that ``ListSessions`` reports move with it), at most
    ``max_sessions_per_batch`` are created per ``BatchCreateSessions`` call and at most
    ``max_sessions_per_database`` exist per database. A database is created on first use with
    the ``ddl`` given here, unless ``strict`` is set, in which case it must be created with
    ``database.create()``. Data lives in SQLite files under ``data_dir`` (a temporary folder,
    removed on ``stop()``, when not given).

    Read-write transactions lock the rows they read and write (whole tables when they scan
    them), so transactions on different rows run and commit concurrently; data has versions,
    so read-only transactions and stale reads see a consistent snapshot. Conflicts are settled
    by wound-wait: an older transaction aborts a younger one in its way, which the client
    retries after about ``abort_retry_delay`` seconds (the ``RetryInfo`` of the abort); a
    younger one waits for an older one, and is aborted after waiting ``lock_timeout`` seconds.
    A transaction left idle for ``transaction_idle_timeout`` seconds is aborted when another
    one needs its locks.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        session_idle_timeout: float = 3600.0,
        max_sessions_per_database: int = 10_000,
        max_sessions_per_batch: int = 100,
        strict: bool = False,
        ddl: Sequence[str] = (),
        transaction_idle_timeout: float = 10.0,
        lock_timeout: float = 10.0,
        abort_retry_delay: float = 0.005,
        data_dir: str | Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_workers: int = 64,
        request_log_size: int = 10_000,
        seed: int | None = None,
    ) -> None:
        if session_idle_timeout <= 0 or transaction_idle_timeout <= 0:
            raise ValueError("idle timeouts must be > 0 seconds")
        if max_sessions_per_database < 1 or max_sessions_per_batch < 1:
            raise ValueError("session limits must be >= 1")
        if lock_timeout < 0 or abort_retry_delay < 0:
            raise ValueError("lock_timeout and abort_retry_delay must be >= 0")
        self._host = host
        self._requested_port = port
        self._port = 0
        self._own_data_dir = data_dir is None
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._max_workers = max_workers
        self._server: grpc.Server | None = None
        self.control = Control(request_log_size=request_log_size, seed=seed, clock=clock)
        self._rules = Rules(
            clock=clock,
            session_idle_timeout=session_idle_timeout,
            transaction_idle_timeout=transaction_idle_timeout,
            max_sessions_per_database=max_sessions_per_database,
            max_sessions_per_batch=max_sessions_per_batch,
            lock_timeout=lock_timeout,
            abort_retry_delay=abort_retry_delay,
            strict=strict,
            ddl=tuple(ddl),
        )
        self._backend: Backend | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> LocalSpanner:
        if self._server is not None:
            return self
        if self._data_dir is None:
            self._data_dir = Path(tempfile.mkdtemp(prefix="localspanner-"))
        self._data_dir.mkdir(parents=True, exist_ok=True)
        self._backend = Backend(data_dir=self._data_dir, rules=self._rules)
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="spanner"),
            options=[
                ("grpc.so_reuseport", 0),
                # Cloud Spanner takes commits of up to 100 MB; results stream in small chunks.
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        spanner_pb2_grpc.add_SpannerServicer_to_server(
            SpannerService(self._backend, self.control), server
        )
        spanner_database_admin_pb2_grpc.add_DatabaseAdminServicer_to_server(
            DatabaseAdminService(self._backend, self.control), server
        )
        instance_admin.add_to_server(
            instance_admin.InstanceAdminService(self._backend, self.control), server
        )
        port = server.add_insecure_port(f"{self._host}:{self._requested_port}")
        if port == 0:
            raise OSError(f"LocalSpanner could not listen on {self._host}:{self._requested_port}")
        server.start()
        self._port = port
        self._server = server
        return self

    def stop(self, grace: float | None = 0.5) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace).wait()
        self.control.unfreeze()
        if self._backend is not None:
            self._backend.close()
            self._backend = None
        if self._own_data_dir and self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None

    def __enter__(self) -> LocalSpanner:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def wait(self) -> None:
        """Block until the server stops."""
        if self._server is not None:
            self._server.wait_for_termination()

    @property
    def port(self) -> int:
        self._require_started()
        return self._port

    @property
    def endpoint(self) -> str:
        """``host:port``, for ``api_endpoint`` or ``SPANNER_EMULATOR_HOST``."""
        return f"{self._host}:{self.port}"

    def database(self, database_id: str, *, pool: Any = None, **options: Any) -> Any:
        """The official client's ``Database`` for ``database_id`` on this server."""
        return connect(self.endpoint, database_id, pool=pool, **options)

    def database_path(
        self, database_id: str, project: str = DEFAULT_PROJECT, instance: str = DEFAULT_INSTANCE
    ) -> str:
        return f"projects/{project}/instances/{instance}/databases/{database_id}"

    @property
    def backend(self) -> Backend:
        return self._require_started()

    def _require_started(self) -> Backend:
        if self._backend is None:
            raise RuntimeError("LocalSpanner is not running: call start() or use it in a with")
        return self._backend

    # -- control ----------------------------------------------------------------------------

    # What the server's Control does, as methods of the server.
    inject_latency = _of_control(Control.inject_latency)
    inject_error = _of_control(Control.inject_error)
    clear_faults = _of_control(Control.clear_faults)
    freeze = _of_control(Control.freeze)
    unfreeze = _of_control(Control.unfreeze)
    request_counts = _of_control(Control.request_counts)
    status_counts = _of_control(Control.status_counts)
    request_log = _of_control(Control.request_log)

    def expire_sessions(self, fraction: float = 1.0, database: str | None = None) -> int:
        """Drop ``fraction`` of the regular sessions (of one database, or all), as the server
        does with idle ones; returns how many were dropped."""
        return self._require_started().expire_sessions(fraction, database)

    def multiplexed_sessions(self, database: str | None = None) -> list[str]:
        """Names of the live multiplexed sessions, in one database (full name) or in all."""
        return self._require_started().multiplexed_sessions(database)

    def lose_multiplexed_sessions(self, database: str | None = None) -> list[str]:
        """Lose the multiplexed sessions (of one database, or all): every later request
        naming one answers ``NOT_FOUND`` "Session not found". Returns their names."""
        return self._require_started().lose_multiplexed_sessions(database)

    def restart(self) -> None:
        """Lose every session and transaction, as a server restart would; data is kept."""
        self._require_started().reset()

    def sessions_created(self) -> int:
        """Sessions created since start, across every database."""
        return self._require_started().sessions_created

    def reset_counts(self) -> None:
        """Reset request and status counts, the request log and the session peaks."""
        self.control.reset_counts()
        if self._backend is not None:
            self._backend.reset_peaks()

    def session_count(self, database: str | None = None) -> int:
        """Live sessions, in one database (full name) or in all."""
        return self._require_started().session_count(database)

    def peak_session_count(self, database: str | None = None) -> int:
        """Most sessions alive at once, in one database (full name) or in all, since start
        or ``reset_counts()``."""
        return self._require_started().peak_session_count(database)

    def session_labels(self, database: str | None = None) -> list[dict[str, str]]:
        """The labels of each live session, for tests of what pools send."""
        backend = self._require_started()
        dbs = backend.databases()
        return [
            dict(s.labels)
            for db in dbs
            if database is None or db.name == database
            for s in backend.list_sessions(db.name)
        ]
