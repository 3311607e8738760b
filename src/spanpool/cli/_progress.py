"""A one-line progress bar on stderr, drawn only on a terminal and only once a task has taken
long enough to be worth watching."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

_WIDTH = 24


class Progress:
    """``with Progress("deleting", total=n) as bar: ... bar.advance()``.

    Nothing is drawn on a stream that is not a terminal, nor before ``delay`` seconds have
    passed; the line is erased when the task ends, so the command's output stays clean.
    Safe to advance from several threads.
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        delay: float = 0.5,
        interval: float = 0.1,
    ) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.note = ""
        self._stream = stream if stream is not None else sys.stderr
        isatty = getattr(self._stream, "isatty", None)
        self._enabled = enabled if enabled is not None else bool(isatty and isatty())
        self._began = time.monotonic()
        self._delay = delay
        self._interval = interval
        self._drawn_at = 0.0
        self._width = 0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """Whether the bar is drawn (on a terminal)."""
        return self._enabled

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def advance(self, count: int = 1, note: str | None = None) -> None:
        with self._lock:
            self.done += count
            if note is not None:
                self.note = note
            self._draw(force=False)

    def render(self) -> str:
        """The line as it is drawn now."""
        elapsed = time.monotonic() - self._began
        if self.total:
            filled = min(_WIDTH, _WIDTH * self.done // self.total)
            bar = f"[{'#' * filled}{'.' * (_WIDTH - filled)}] {self.done}/{self.total}"
        else:
            bar = f"{self.done}"
        note = f"  {self.note}" if self.note else ""
        return f"{self.label} {bar}  {elapsed:.0f}s{note}"

    def _draw(self, *, force: bool) -> None:
        if not self._enabled:
            return
        now = time.monotonic()
        if now - self._began < self._delay or (not force and now - self._drawn_at < self._interval):
            return
        self._drawn_at = now
        line = self.render()
        self._stream.write("\r" + line.ljust(self._width))
        self._stream.flush()
        self._width = len(line)

    def close(self) -> None:
        """Erase the line, if one was drawn."""
        with self._lock:
            if self._width:
                self._stream.write("\r" + " " * self._width + "\r")
                self._stream.flush()
                self._width = 0
