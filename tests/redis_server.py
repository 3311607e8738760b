"""The tests' name for :func:`spanpool.testing.redis_server.redis_server`."""

from spanpool.testing.redis_server import redis_server

__all__ = ["redis_server"]
