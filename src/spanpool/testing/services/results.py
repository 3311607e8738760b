"""Result messages as Cloud Spanner sends them: ``ResultSet``, and ``PartialResultSet`` streams
cut into messages of at most about 1 MiB of values, splitting a long value across messages
(``chunked_value``) so that no message comes near the client's 4 MiB receive limit."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from google.cloud.spanner_v1.types import result_set
from google.protobuf import struct_pb2

from ..model import Transaction
from ..sql import engine
from .rpc import timestamp

_PartialResultSet = result_set.PartialResultSet.pb()
_ResultSet = result_set.ResultSet.pb()
_ResultSetMetadata = result_set.ResultSetMetadata.pb()
_ResultSetStats = result_set.ResultSetStats.pb()
_Value = struct_pb2.Value
_ListValue = struct_pb2.ListValue

CHUNK_BYTES = 1 << 20


@dataclass
class Context:
    """What a statement ran in: its transaction (None: single-use read-only), whether the
    request began it, and the read timestamp to report (single-use reads that ask for it)."""

    txn: Transaction | None
    begun: bool
    read_timestamp: int | None = None  # to report
    precommit: Any = None  # the precommit token to send (multiplexed read-write)
    read_at: int | None = None  # single-use reads: the timestamp they read at


def metadata(result: engine.Result, context: Context) -> Any:
    pb = _ResultSetMetadata()
    pb.row_type.fields.extend(result.fields)
    txn = context.txn
    if context.begun and txn is not None:
        pb.transaction.id = txn.id
        if not txn.read_write:
            pb.transaction.read_timestamp.CopyFrom(timestamp(txn.read_timestamp))
    elif context.read_timestamp is not None:
        pb.transaction.read_timestamp.CopyFrom(timestamp(context.read_timestamp))
    return pb


def stats(result: engine.Result, txn: Transaction | None) -> Any:
    pb = _ResultSetStats()
    if result.row_count is not None:
        if txn is not None and txn.partitioned:
            pb.row_count_lower_bound = result.row_count
        else:
            pb.row_count_exact = result.row_count
    return pb


def result_set_of(result: engine.Result, context: Context) -> Any:
    response = _ResultSet(metadata=metadata(result, context))
    for row in result.rows:
        response.rows.add().values.extend(row)
    if result.row_count is not None:
        response.stats.CopyFrom(stats(result, context.txn))
    if context.precommit is not None:
        response.precommit_token.CopyFrom(context.precommit)
    return result_set.ResultSet.wrap(response)


def partial_result_sets(result: engine.Result, context: Context) -> Iterator[Any]:
    """The result as a stream: metadata in the first message, stats, the precommit token and
    ``last`` in the last one."""
    message = _PartialResultSet(metadata=metadata(result, context))
    room = CHUNK_BYTES
    for row in result.rows:
        for value in row:
            size = value.ByteSize()
            while size > room:
                head, tail = _split(value, room)
                if head is None:
                    if len(message.values) == 0:
                        break  # a value that cannot be split goes whole, in its own message
                else:
                    message.values.append(head)
                    message.chunked_value = True
                yield result_set.PartialResultSet.wrap(message)
                message, room = _PartialResultSet(), CHUNK_BYTES
                if head is not None:
                    value = tail
                    size = value.ByteSize()
            message.values.append(value)
            room -= size
    if result.row_count is not None:
        message.stats.CopyFrom(stats(result, context.txn))
    if context.precommit is not None:
        message.precommit_token.CopyFrom(context.precommit)
    message.last = True
    yield result_set.PartialResultSet.wrap(message)


def _split(value: Any, room: int) -> tuple[Any, Any]:
    """A value cut in two so that the head takes about ``room`` bytes, as the client merges
    them again (strings are joined; lists join the last and first elements when those are
    strings); (None, value) when it cannot be cut there."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        text = value.string_value
        cut = max(room - 16, 0)
        if cut <= 0 or cut >= len(text):
            return None, value
        return _Value(string_value=text[:cut]), _Value(string_value=text[cut:])
    if kind == "list_value":
        items = list(value.list_value.values)
        used = 8
        for i, item in enumerate(items):
            size = item.ByteSize() + 4
            if used + size > room:
                head, tail = _split(item, room - used)
                if head is None:
                    return None, value
                return (
                    _Value(list_value=_ListValue(values=[*items[:i], head])),
                    _Value(list_value=_ListValue(values=[tail, *items[i + 1 :]])),
                )
            used += size
    return None, value
