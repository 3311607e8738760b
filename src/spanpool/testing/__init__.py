"""Testing helpers: LocalSpanner, a real Spanner gRPC server on loopback."""

from .server import LocalSpanner, RequestRecord, ServerProcess, connect, serve_in_process

__all__ = [
    "LocalSpanner",
    "RequestRecord",
    "ServerProcess",
    "connect",
    "serve_in_process",
]
