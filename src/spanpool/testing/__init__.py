"""Testing helpers: LocalSpanner, a real Spanner gRPC server on loopback."""

from ..bridge import REGULAR_SESSIONS_ENV
from .server import (
    LocalSpanner,
    RequestRecord,
    ServerProcess,
    connect,
    connect_async,
    serve_in_process,
)

__all__ = [
    "REGULAR_SESSIONS_ENV",
    "LocalSpanner",
    "RequestRecord",
    "ServerProcess",
    "connect",
    "connect_async",
    "serve_in_process",
]
