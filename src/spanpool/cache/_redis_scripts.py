"""The Lua scripts of ``RedisStore`` (``redis.lua``) and how their arguments and replies are
written and read, shared by the store's steps and its ``MultiplexedStore`` steps."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from importlib import resources
from typing import Any

from .store import SessionRecord


class Script:
    """One step's script with the prelude in front, and its SHA1 for EVALSHA."""

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


def load_scripts() -> dict[str, Script]:
    """The scripts of ``redis.lua``: a line ``--- <name>`` starts the script of a step, and
    the text before the first one is the prelude every script begins with."""
    text = resources.files("spanpool.cache").joinpath("redis.lua").read_text(encoding="utf-8")
    parts = re.split(r"^--- (\w+)\n", text, flags=re.MULTILINE)
    prelude, named = parts[0], parts[1:]
    return {
        name: Script(name, prelude + body)
        for name, body in zip(named[::2], named[1::2], strict=True)
    }


SCRIPTS = load_scripts()


def fields(reply: Sequence[Any]) -> dict[str, Any]:
    """A script's ``{'name', value, ...}`` reply as a dict."""
    return {text(reply[i]): reply[i + 1] for i in range(0, len(reply), 2)}


def time_arg(value: float) -> str:
    """A time as the script gets it: the shortest string that parses back to the double."""
    return repr(float(value))


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def records(flat: Sequence[Any]) -> tuple[SessionRecord, ...]:
    """Records from a flat ``[name, created_at, last_used, ...]`` reply."""
    return tuple(
        SessionRecord(text(flat[i]), float(flat[i + 1]), float(flat[i + 2]))
        for i in range(0, len(flat), 3)
    )
