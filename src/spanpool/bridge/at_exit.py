"""Deleting an asyncio pool's sessions at interpreter exit, when the event loop that owned its
gRPC channel is gone: through a blocking client made for the purpose."""

from __future__ import annotations

import logging
from typing import Any

from google.api_core import exceptions

from .common import DELETE_TIMEOUT, _metadata

log = logging.getLogger("spanpool")


def delete_sessions(database: Any, sessions: list[Any]) -> int:
    """Delete ``sessions`` of ``database`` (an asyncio ``Database``) through a new blocking
    channel. Best effort, no retries, a short deadline per call: exit must not hang on a
    server that is gone. Returns how many were deleted."""
    names = [s.name for s in sessions if getattr(s, "session_id", None) is not None]
    if not names or database is None:
        return 0
    from google.cloud.spanner_v1 import Client

    try:
        async_client = database._instance._client
        client = Client(
            project=async_client.project,
            credentials=async_client.credentials,
            client_options=async_client._client_options,
            disable_builtin_metrics=True,
        )
        blocking = client.instance(database._instance.instance_id).database(database.database_id)
        api = blocking.spanner_api
        metadata = _metadata(blocking)
    except Exception as exc:
        log.warning("could not delete %d sessions at exit: %s", len(names), exc)
        return 0
    deleted = 0
    for name in names:
        try:
            api.delete_session(name=name, metadata=metadata, retry=None, timeout=DELETE_TIMEOUT)
            deleted += 1
        except exceptions.NotFound:
            deleted += 1
        except Exception as exc:
            log.warning(
                "could not delete %d sessions at exit (%s): %s", len(names) - deleted, name, exc
            )
            break  # the server is unreachable or failing: the rest would fail the same way
    return deleted
