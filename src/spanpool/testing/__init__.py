"""Testing helpers: LocalSpanner, a real Spanner gRPC server on loopback."""

from .server import LocalSpanner, RequestRecord, connect, serve_in_process

__all__ = ["LocalSpanner", "RequestRecord", "connect", "serve_in_process"]
