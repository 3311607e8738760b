"""What every LocalSpanner RPC goes through: counting, injected faults, errors as statuses."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2, message, timestamp_pb2

from ..control import Control
from ..errors import SpannerError
from ..sql.values import EngineError

log = logging.getLogger("spanpool.testing")

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def timestamp(nanos: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=nanos // 1_000_000_000, nanos=nanos % 1_000_000_000)


def pack(msg: message.Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(msg)
    return packed


def listed(items: list[T], request: Any, matches: Callable[[T, str], bool]) -> tuple[list[T], str]:
    """What a ``List...`` request asks for: the ``items`` that ``matches`` its ``filter`` (all
    without one), the page of them that its ``page_token`` and ``page_size`` (1000 when not
    given) name, and the token of the next page (empty after the last)."""
    if request.filter:
        items = [item for item in items if matches(item, request.filter)]
    start = int(request.page_token or 0)
    end = start + (request.page_size or 1000)
    return items[start:end], str(end) if end < len(items) else ""


def _target(request: Any) -> str:
    for attr in ("session", "database", "name"):
        value = getattr(request, attr, None)
        if isinstance(value, str) and value:
            return value
    return ""


def _fail(control: Control, method: str, target: str, exc: BaseException, context: Any) -> None:
    if isinstance(exc, EngineError):
        exc = SpannerError(exc.code, exc.message)
    if not isinstance(exc, SpannerError):
        log.exception("LocalSpanner: %s failed", method)
        exc = SpannerError(grpc.StatusCode.INTERNAL, f"LocalSpanner internal error: {exc!r}")
    control.record(method, target, exc.code)
    context.abort_with_status(exc.to_status())


def rpc(method: str, *, streaming: bool = False) -> Callable[[F], F]:
    """Wrap a servicer method: raw protobuf request in, counting, faults, errors as statuses."""

    def decorate(fn: F) -> F:
        if streaming:

            @functools.wraps(fn)
            def stream(self: Any, request: Any, context: Any) -> Iterator[Any]:
                raw = type(request).pb(request)
                target = _target(raw)
                try:
                    self.control.before(method, context)
                    yield from fn(self, raw, context)
                except Exception as exc:
                    _fail(self.control, method, target, exc, context)
                    return
                self.control.record(method, target, grpc.StatusCode.OK)

            return stream  # type: ignore[return-value]

        @functools.wraps(fn)
        def unary(self: Any, request: Any, context: Any) -> Any:
            raw = type(request).pb(request)
            target = _target(raw)
            try:
                self.control.before(method, context)
                response = fn(self, raw, context)
            except Exception as exc:
                _fail(self.control, method, target, exc, context)
                return None
            self.control.record(method, target, grpc.StatusCode.OK)
            return response

        return unary  # type: ignore[return-value]

    return decorate
