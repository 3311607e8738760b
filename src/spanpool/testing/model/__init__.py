"""LocalSpanner's model of Cloud Spanner.

- ``backend``: instances, databases and sessions, and the rules they follow;
- ``database``: one database's SQLite file, connections, locks and row versions;
- ``transactions``: read-write transactions (locks, buffered writes, commits) and read-only
  ones at a timestamp;
- ``locks``: row and table locks with wound-wait.
"""

from .backend import Backend, InstanceState, Rules, SessionState, validate_labels
from .database import DatabaseState
from .transactions import ABORTED, ACTIVE, COMMITTED, ROLLED_BACK, Transaction, rfc3339

__all__ = [
    "ABORTED",
    "ACTIVE",
    "COMMITTED",
    "ROLLED_BACK",
    "Backend",
    "DatabaseState",
    "InstanceState",
    "Rules",
    "SessionState",
    "Transaction",
    "rfc3339",
    "validate_labels",
]
