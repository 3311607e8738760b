"""Which operations the official client sends to a multiplexed session, and which to a pool's
regular sessions: its three environment variables, read exactly as google-cloud-spanner 3.71
reads them (``DatabaseSessionsManager._use_multiplexed``), at every request.

Each variable defaults to ``true``; only the text ``false`` (any case, surrounding blanks
ignored) turns its operation type over to regular sessions. A client made with
``instance_type="omni"`` uses multiplexed sessions for everything, whatever the variables say.
"""

from __future__ import annotations

import os
from typing import Any

ENV_MULTIPLEXED = "GOOGLE_CLOUD_SPANNER_MULTIPLEXED_SESSIONS"
ENV_MULTIPLEXED_FOR_RW = "GOOGLE_CLOUD_SPANNER_MULTIPLEXED_SESSIONS_FOR_RW"
ENV_MULTIPLEXED_PARTITIONED = "GOOGLE_CLOUD_SPANNER_MULTIPLEXED_SESSIONS_PARTITIONED_OPS"

READ_ONLY = "read-only"
READ_WRITE = "read/write"
PARTITIONED = "partitioned"

ENV_OF = {
    READ_ONLY: ENV_MULTIPLEXED,
    READ_WRITE: ENV_MULTIPLEXED_FOR_RW,
    PARTITIONED: ENV_MULTIPLEXED_PARTITIONED,
}
"""The variable that routes each operation type (the values of the client's
``TransactionType``)."""

OPERATIONS = {
    READ_ONLY: "snapshots, batch() commits, and the read-only side of everything else",
    READ_WRITE: "run_in_transaction and mutation_groups()",
    PARTITIONED: "execute_partitioned_dml and batch_snapshot()",
}
"""What the client sends under each operation type, in words (for ``spanpool doctor``)."""


def env_enabled(name: str, environ: Any = None) -> bool:
    """The client's reading of one variable: anything but ``false`` means multiplexed."""
    value = (os.environ if environ is None else environ).get(name, "true")
    return bool(value.lower().strip() != "false")


def uses_multiplexed(transaction_type: Any, environ: Any = None) -> bool:
    """Whether the client sends ``transaction_type`` (its ``TransactionType``, or one of
    ``READ_ONLY``, ``READ_WRITE``, ``PARTITIONED``) to a multiplexed session."""
    kind = getattr(transaction_type, "value", transaction_type)
    name = ENV_OF.get(kind)
    if name is None:
        raise ValueError(f"Transaction type {transaction_type} is not supported.")
    return env_enabled(name, environ)


def routing(environ: Any = None) -> dict[str, bool]:
    """For each operation type, whether it goes to a multiplexed session (True) or to the
    pool's regular sessions (False) under the environment ``environ`` (this process's when
    None)."""
    return {kind: env_enabled(name, environ) for kind, name in ENV_OF.items()}


def forces_multiplexed(database: Any) -> bool:
    """A client for Spanner Omni (``instance_type="omni"``) ignores the variables."""
    client = getattr(getattr(database, "_instance", None), "_client", None)
    return getattr(client, "instance_type", None) == "omni"
