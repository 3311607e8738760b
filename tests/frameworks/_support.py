"""What the framework tests share: how to reach a LocalSpanner, and what counts as a session
RPC."""

from __future__ import annotations

import threading
from typing import Any

from google.auth.credentials import AnonymousCredentials

from spanpool.testing import LocalSpanner

SESSION_METHODS = (
    "CreateSession",
    "BatchCreateSessions",
    "GetSession",
    "DeleteSession",
    "ListSessions",
)

QUIET_METRICS = {"SPANNER_DISABLE_BUILTIN_METRICS": "true"}
"""The official client's built-in metrics would be exported to Cloud Monitoring (and a process
would wait for that export at exit): no use against LocalSpanner."""

PROJECT = "test-project"
INSTANCE = "test-instance"


def session_rpcs(server: LocalSpanner) -> dict[str, int]:
    """The session RPCs the server has answered since its counts were last reset."""
    counts = server.control.request_counts()
    return {method: counts[method] for method in SESSION_METHODS if counts.get(method)}


def client_kwargs(endpoint: str) -> dict[str, Any]:
    """``connect`` arguments for a LocalSpanner at ``endpoint``."""
    return {
        "project": PROJECT,
        "credentials": AnonymousCredentials(),
        "client_options": {"api_endpoint": endpoint},
    }


def client_threads() -> int:
    """Threads alive in this process, less the in-process LocalSpanner's gRPC workers (its
    executor names them ``spanner_N`` and grows it on demand)."""
    return sum(1 for thread in threading.enumerate() if not thread.name.startswith("spanner_"))
