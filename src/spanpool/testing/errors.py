"""gRPC error statuses as Cloud Spanner sends them (rich details, retry delays)."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

SESSION_RESOURCE_TYPE = "type.googleapis.com/google.spanner.v1.Session"


@dataclass(frozen=True)
class _Status(grpc.Status):  # type: ignore[misc]
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, bytes], ...]


class SpannerError(Exception):
    """An error answered to the client as a gRPC status.

    ``retry_delay`` (seconds) adds a ``RetryInfo`` detail, both in the rich status and in the
    ``google.rpc.retryinfo-bin`` trailer that the official client reads on ``ABORTED``.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        resource: tuple[str, str] | None = None,
        retry_delay: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.resource = resource
        self.retry_delay = retry_delay

    def to_status(self) -> grpc.Status:
        details: list[any_pb2.Any] = []
        trailers: list[tuple[str, bytes]] = []
        if self.resource is not None:
            info = error_details_pb2.ResourceInfo(
                resource_type=self.resource[0],
                resource_name=self.resource[1],
                description=self.message,
            )
            packed = any_pb2.Any()
            packed.Pack(info)
            details.append(packed)
        if self.retry_delay is not None:
            seconds = int(self.retry_delay)
            delay = duration_pb2.Duration(
                seconds=seconds, nanos=int((self.retry_delay - seconds) * 1e9)
            )
            retry = error_details_pb2.RetryInfo(retry_delay=delay)
            packed = any_pb2.Any()
            packed.Pack(retry)
            details.append(packed)
            trailers.append(("google.rpc.retryinfo-bin", retry.SerializeToString()))
        rich = status_pb2.Status(
            code=getattr(code_pb2, self.code.name), message=self.message, details=details
        )
        trailers.append(("grpc-status-details-bin", rich.SerializeToString()))
        return _Status(self.code, self.message, tuple(trailers))


def session_not_found(name: str) -> SpannerError:
    return SpannerError(
        grpc.StatusCode.NOT_FOUND,
        f"Session not found: {name}",
        resource=(SESSION_RESOURCE_TYPE, name),
    )


def invalid(message: str) -> SpannerError:
    return SpannerError(grpc.StatusCode.INVALID_ARGUMENT, message)


def failed_precondition(message: str) -> SpannerError:
    return SpannerError(grpc.StatusCode.FAILED_PRECONDITION, message)


def aborted(message: str, retry_delay: float) -> SpannerError:
    return SpannerError(grpc.StatusCode.ABORTED, message, retry_delay=retry_delay)
