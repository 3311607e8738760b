"""LocalSpanner: a real Cloud Spanner gRPC server on loopback, for tests, demos and benchmarks.

- ``server``: ``LocalSpanner`` (start, stop, what a test can do to it), ``connect``,
  ``connect_async`` and ``serve_in_process``;
- ``control``: injected latency and errors, freezing, request counts and the request log;
- ``model/``: instances, databases and sessions, and the rules they follow (idle expiry on
  the injectable clock, session limits); transactions with row locks (wound-wait) and row
  versions;
- ``errors``: errors as Cloud Spanner sends them (status codes, resource and retry details);
- ``services/``: the gRPC services (Spanner, DatabaseAdmin, InstanceAdmin), one module each,
  and what every RPC goes through;
- ``sql/``: the GoogleSQL engine on SQLite (tokens, values, schema, translation, execution).
"""

from ..bridge import REGULAR_SESSIONS_ENV
from . import server
from .server import *  # noqa: F403 (the server's names are listed once, in server.py)

__all__ = ["REGULAR_SESSIONS_ENV"]
__all__ += server.__all__
