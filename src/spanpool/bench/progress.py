"""Where the benchmarks report their progress: a line on stderr per step, unless a listener
(``spanpool bench``'s progress bar) takes them."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Listener = Callable[[str, str], None]

_listeners: list[Listener] = []


def report(suite: str, message: str) -> None:
    """One step of ``suite`` begins: ``message`` says which."""
    if _listeners:
        _listeners[-1](suite, message)
    else:
        print(f"[{suite}] {message}", file=sys.stderr, flush=True)


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Send the steps reported meanwhile to ``listener(suite, message)``."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)
