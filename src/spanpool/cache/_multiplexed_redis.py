"""``RedisStore``'s steps for ``MultiplexedPool`` (``MultiplexedStore``): the fields
``mux_*`` of the key's meta hash, each step one script of ``redis.lua``."""

from __future__ import annotations

from typing import Any

from ._redis_scripts import fields, text, time_arg
from .store import Holder, MultiplexedClaim, MultiplexedRecord, new_token


class MultiplexedRedis:
    """The ``MultiplexedStore`` steps, over the store's scripts."""

    def _run(self, name: str, key: str, *args: str | int) -> Any:
        raise NotImplementedError  # RedisStore's

    def multiplexed_get(self, key: str) -> MultiplexedRecord | None:
        return _multiplexed_record(fields(self._run("multiplexed_get", key)))

    def multiplexed_claim(
        self, key: str, *, holder: Holder, now: float, lease: float, replacing: str | None
    ) -> MultiplexedClaim:
        reply = fields(
            self._run(
                "multiplexed_claim",
                key,
                holder.host,
                holder.pid,
                time_arg(now),
                time_arg(now + lease),
                replacing or "",
                new_token(),
            )
        )
        token = text(reply["token"]) or None
        return MultiplexedClaim(token, _multiplexed_record(reply))

    def multiplexed_publish(
        self, key: str, token: str, *, name: str, created_at: float
    ) -> MultiplexedRecord | None:
        reply = self._run("multiplexed_publish", key, token, name, time_arg(created_at))
        return _multiplexed_record(fields(reply))

    def multiplexed_abandon(self, key: str, token: str) -> None:
        self._run("multiplexed_abandon", key, token)


def _multiplexed_record(reply: dict[str, Any]) -> MultiplexedRecord | None:
    if "name" not in reply:
        return None
    return MultiplexedRecord(
        text(reply["name"]), float(reply["created_at"]), int(reply["generation"])
    )
