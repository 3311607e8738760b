"""Partition tokens of ``PartitionQuery`` and ``PartitionRead``.

LocalSpanner answers each partition request with one partition (Cloud Spanner may return
fewer partitions than asked for): running it runs the whole query or read, in the read-only
transaction it was made for. A token is good for the session and statement it was made for.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

from ..errors import invalid

_KEEP = 10_000


class Partitions:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: OrderedDict[bytes, tuple[str, str]] = OrderedDict()

    def make(self, session: str, statement: str) -> bytes:
        token = os.urandom(16)
        with self._lock:
            self._tokens[token] = (session, statement)
            while len(self._tokens) > _KEEP:
                self._tokens.popitem(last=False)
        return token

    def check(self, token: bytes, session: str, statement: str) -> None:
        with self._lock:
            made_for = self._tokens.get(token)
        if made_for is None:
            raise invalid(
                "Unknown partition token: it was not made by PartitionQuery or "
                "PartitionRead of this server, or it is too old."
            )
        if made_for != (session, statement):
            raise invalid(
                "The partition token was made for another session or statement: run a "
                "partition with the session, SQL (or table) and transaction it was made for."
            )
