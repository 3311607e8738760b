"""What a test can do to a running LocalSpanner: latency, errors, freezing, and what it saw."""

from __future__ import annotations

import collections
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from .errors import SpannerError


@dataclass(frozen=True)
class RequestRecord:
    """One entry of the request log."""

    time: float
    method: str
    target: str
    code: str


@dataclass
class _ErrorRule:
    method: str | None
    code: grpc.StatusCode
    remaining: int | None
    probability: float | None
    message: str


def status_code(code: grpc.StatusCode | str | int) -> grpc.StatusCode:
    """Accept a ``grpc.StatusCode``, its name (``"UNAVAILABLE"``) or its number."""
    if isinstance(code, grpc.StatusCode):
        return code
    for candidate in grpc.StatusCode:
        if code in (candidate.name, candidate.value[0]):
            return candidate
    raise ValueError(f"unknown gRPC status code: {code!r}")


class Control:
    """Fault injection, freezing, request counts and a bounded request log, for every RPC."""

    def __init__(
        self, *, request_log_size: int = 10_000, seed: int | None = None, clock: Callable[[], float]
    ) -> None:
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._clock = clock
        self._latency: dict[str | None, tuple[float, float]] = {}
        self._errors: list[_ErrorRule] = []
        self._counts: collections.Counter[str] = collections.Counter()
        self._codes: collections.Counter[tuple[str, str]] = collections.Counter()
        self._log: collections.deque[RequestRecord] = collections.deque(maxlen=request_log_size)
        self._running = threading.Event()
        self._running.set()

    # -- what tests set -------------------------------------------------------------------

    def inject_latency(self, ms: float, method: str | None = None, jitter_ms: float = 0) -> None:
        """Delay every call of ``method`` (every method when None) by ``ms`` plus up to
        ``jitter_ms`` milliseconds. ``inject_latency(0, method)`` removes it."""
        if ms < 0 or jitter_ms < 0:
            raise ValueError("latency and jitter must be >= 0 ms")
        with self._lock:
            if ms == 0 and jitter_ms == 0:
                self._latency.pop(method, None)
            else:
                self._latency[method] = (ms / 1000.0, jitter_ms / 1000.0)

    def inject_error(
        self,
        method: str | None,
        code: grpc.StatusCode | str | int,
        count: int | None = None,
        probability: float | None = None,
        message: str = "error injected by LocalSpanner",
    ) -> None:
        """Fail calls of ``method`` (every method when None) with ``code``: the next ``count``
        calls, or each call with ``probability``, or every call until ``clear_faults()``."""
        if count is not None and count < 1:
            raise ValueError("count must be >= 1 (or None for every call)")
        if probability is not None and not 0.0 <= probability <= 1.0:
            raise ValueError("probability must be within [0, 1]")
        rule = _ErrorRule(method, status_code(code), count, probability, message)
        with self._lock:
            self._errors.append(rule)

    def clear_faults(self) -> None:
        """Remove injected latency and errors, and unfreeze."""
        with self._lock:
            self._latency.clear()
            self._errors.clear()
        self._running.set()

    def freeze(self) -> None:
        """Hold every incoming RPC until ``unfreeze()`` (or its deadline), as a hung server."""
        self._running.clear()

    def unfreeze(self) -> None:
        self._running.set()

    # -- what tests read -----------------------------------------------------------------

    def request_counts(self) -> dict[str, int]:
        """Calls received per method since start (or ``reset_counts()``)."""
        with self._lock:
            return dict(self._counts)

    def status_counts(self) -> dict[tuple[str, str], int]:
        """Answers per (method, status code name), e.g. ``("Commit", "ABORTED")``."""
        with self._lock:
            return dict(self._codes)

    def reset_counts(self) -> None:
        with self._lock:
            self._counts.clear()
            self._codes.clear()
            self._log.clear()

    def request_log(self) -> list[RequestRecord]:
        """The most recent requests: time, method, target (session or database), status."""
        with self._lock:
            return list(self._log)

    # -- what every RPC goes through -----------------------------------------------------

    def before(self, method: str, context: grpc.ServicerContext) -> None:
        """Count the call, then apply freezing, latency and injected errors."""
        with self._lock:
            self._counts[method] += 1
            latency = self._latency.get(method) or self._latency.get(None)
            delay = 0.0
            if latency is not None:
                delay = latency[0] + (self._random.uniform(0, latency[1]) if latency[1] else 0.0)
            error = self._pick_error(method)
        if not self._running.is_set():
            remaining = context.time_remaining()
            if not self._running.wait(remaining):
                raise SpannerError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
        if delay:
            time.sleep(delay)
        if error is not None:
            raise error

    def _pick_error(self, method: str) -> SpannerError | None:
        for rule in self._errors:
            if rule.method not in (None, method):
                continue
            if rule.probability is not None and self._random.random() >= rule.probability:
                continue
            if rule.remaining is not None:
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self._errors.remove(rule)
            return SpannerError(rule.code, rule.message)
        return None

    def record(self, method: str, target: str, code: grpc.StatusCode) -> None:
        entry = RequestRecord(self._clock(), method, target, code.name)
        with self._lock:
            self._log.append(entry)
            self._codes[method, code.name] += 1
