"""A store in a Redis server, for pools shared by processes on many hosts.

Every step is one Lua script run with ``EVALSHA`` (``EVAL`` once after the server lost its
script cache): one round trip, atomic on the server, and touching only the keys of one pool.
The scripts are in ``redis.lua`` beside this module, each headed with what it reads and
returns. A pool's keys share the hash tag ``{<key>}``, so a pool lives on one slot of a
cluster: ``<prefix>:{<key>}:idle`` (a ZSET of idle sessions by ``last_used``), ``...:idle:born``,
``...:idle:rec``, ``...:used``, ``...:used:since``, ``...:permits``, ``...:permits:since``,
``...:meta``, ``...:signal`` (release markers popped with ``BLPOP`` by ``wait_for_release``)
and ``...:wants`` (a stream read with a blocking ``XREAD`` by ``wait_for_want``);
``redis.lua`` describes each.

A failed step raises :class:`~spanpool.errors.StoreError`. Redis runs a script whole, without
other clients in between, and refuses one that cannot write (out of memory) before its first
write. Redis does not undo the writes of a script that fails halfway; these scripts fail so
only when the pool's keys hold data that they did not write (a key of another type, say).
When the connection fails *after* a script was sent (a timeout, a server that went
away), the reply is lost and the step may or may not have happened: an ``acquire`` may have
checked out a session or granted a permit that its caller never learns of (reclaimed as stale
after ``reclaim_before``), a ``release`` may have made the session idle already (a retry then
answers False). Clients built from a URL never resend a command for that reason; a client
passed in is used with its own retry settings, which should not retry on timeouts.
"""

from __future__ import annotations

import json
import math
import secrets
import threading
import time
from typing import TYPE_CHECKING, Any

try:
    import redis
    import redis.cluster
    import redis.exceptions
    import redis.sentinel
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("RedisStore needs the redis package: pip install 'spanpool[redis]'") from exc

from .. import _validate
from ..errors import StoreError
from ._multiplexed_redis import MultiplexedRedis
from ._redis_scripts import SCRIPTS, fields, records, text, time_arg
from .store import Acquired, Claim, ClosingHooks, Holder, SessionRecord, StoreStats

if TYPE_CHECKING:
    from .store import Adoption, Checkout, TakeIdle

_SUFFIXES = (
    "idle",
    "idle:born",
    "idle:rec",
    "used",
    "used:since",
    "permits",
    "permits:since",
    "meta",
    "signal",
    "wants",
)
# What a failing server or connection raises from the client.
_FAILURES = (redis.exceptions.RedisError, OSError)
_MIN_BLOCK = 0.01  # BLPOP rounds its timeout down to milliseconds, and 0 blocks forever


class RedisStore(MultiplexedRedis, ClosingHooks):
    """Keeps pool state in a Redis server (see the module's documentation for the layout).

    ``url_or_client`` is one of:

    - a ``redis://``, ``rediss://`` or ``unix://`` URL, for which the store builds (and
      closes) its own client with ``socket_timeout``;
    - a ``redis.Redis`` client, used as given (a ``Sentinel.master_for(...)`` client too);
    - a ``redis.cluster.RedisCluster`` client: every key of one pool is in one hash slot, so
      each step is still one atomic script, on the master of that slot;
    - a ``redis.sentinel.Sentinel``, with ``service_name``: the store asks it for the current
      master (and again after a failover) through a client it makes and closes.

    Valkey speaks the same protocol and runs the same scripts. Every step is one round trip,
    counted in ``round_trips``.

    Safe to share between threads. A forked child may keep using the store: redis-py's
    connection pool notices the new pid and opens the child's own connections, leaving the
    parent's sockets alone.
    """

    def __init__(
        self,
        url_or_client: str | redis.Redis | redis.cluster.RedisCluster | redis.sentinel.Sentinel,
        *,
        prefix: str = "spanpool",
        socket_timeout: float = 5.0,
        service_name: str | None = None,
    ) -> None:
        super().__init__()
        socket_timeout = _validate.number("socket_timeout", socket_timeout, above=True)
        if not isinstance(prefix, str) or not prefix:
            raise (ValueError if isinstance(prefix, str) else TypeError)(
                f"prefix must be a non-empty string, not {prefix!r}"
            )
        self._client: Any
        timeouts = {"socket_timeout": socket_timeout, "socket_connect_timeout": socket_timeout}
        if isinstance(url_or_client, str):
            # No retries: a resent script whose first reply was lost would run twice.
            self._client = redis.Redis.from_url(url_or_client, retry=None, **timeouts)
            self._owned = True
        elif isinstance(url_or_client, redis.sentinel.Sentinel):
            if not isinstance(service_name, str) or not service_name:
                raise ValueError(
                    f"service_name must name the master the Sentinel watches, not {service_name!r}"
                )
            self._client = url_or_client.master_for(  # type: ignore[no-untyped-call]
                service_name, retry=None, **timeouts
            )
            self._owned = True
        elif isinstance(url_or_client, (redis.Redis, redis.cluster.RedisCluster)):
            self._client = url_or_client
            self._owned = False
        else:
            raise TypeError(
                "url_or_client must be a redis:// URL, a redis.Redis, a "
                "redis.cluster.RedisCluster or a redis.sentinel.Sentinel, not "
                f"{type(url_or_client).__name__}"
            )
        self._prefix = prefix
        self._keys: dict[str, list[str]] = {}
        self._counter_lock = threading.Lock()
        self._round_trips = 0
        self._closed = False
        self._address, timeout = _where(self._client)
        # A blocking pop must answer within the socket timeout: wait in slices of half of it.
        self._block_slice = math.inf if timeout is None else max(_MIN_BLOCK, timeout / 2)

    @property
    def identity(self) -> str:
        """The server (or cluster, or Sentinel service) and prefix: what the pools of every
        process using this Redis agree on, to name their sessions on the Spanner server."""
        return f"redis:{self._address}:{self._prefix}"

    @property
    def round_trips(self) -> int:
        """Commands sent to the server so far (one per step; two when a script is reloaded)."""
        with self._counter_lock:
            return self._round_trips

    def _count(self) -> None:
        with self._counter_lock:
            self._round_trips += 1

    def _pool_keys(self, key: str) -> list[str]:
        keys = self._keys.get(key)
        if keys is None:
            # The hash tag {key} puts every key of one pool on one cluster slot.
            keys = self._keys[key] = [f"{self._prefix}:{{{key}}}:{s}" for s in _SUFFIXES]
        return keys

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self!r} is closed")

    def _fail(self, what: str, exc: Exception) -> StoreError:
        return StoreError(f"Redis at {self._address}: {what} failed: {exc}")

    def _run(self, name: str, key: str, *args: str | int) -> Any:
        """Runs one script: EVALSHA, or EVAL when the server does not have it (yet)."""
        self._check_open()
        script = SCRIPTS[name]
        keys = self._pool_keys(key)
        try:
            try:
                self._count()
                return self._client.evalsha(script.sha, len(keys), *keys, *args)
            except redis.exceptions.NoScriptError:
                # Not run: the server does not know the script. EVAL also caches it.
                self._count()
                return self._client.eval(script.source, len(keys), *keys, *args)
        except _FAILURES as exc:
            raise self._fail(name, exc) from exc

    def acquire(self, key: str, checkout: Checkout) -> Acquired:
        holder = checkout.holder
        reply = fields(
            self._run(
                "acquire",
                key,
                holder.host,
                holder.pid,
                time_arg(checkout.now),
                checkout.max_sessions,
                time_arg(checkout.reclaim_before),
                time_arg(checkout.expired_before),
                time_arg(checkout.retire_before),
                secrets.token_hex(16),
            )
        )
        outcome = text(reply["outcome"])
        dropped = records(reply["dropped"])
        releases, wants = int(reply["releases"]), int(reply["wants"])
        if outcome == "reset":
            return Acquired(releases=releases, reset=True)
        if outcome == "full":
            return Acquired(dropped=dropped, releases=releases, wants=wants)
        record = None
        if outcome != "permit":
            record = SessionRecord(
                text(reply["name"]), float(reply["created"]), float(reply["last_used"])
            )
        token = text(reply["token"])
        spare = int(reply["spare"])
        reclaimed = outcome == "reclaimed"
        return Acquired(record, token, dropped, reclaimed, releases, spare, wants=wants)

    def start_reconcile(
        self, key: str, *, now: float, lease_seconds: float, force: bool
    ) -> str | None:
        flag, seed = "1" if force else "0", secrets.token_hex(16)
        reply = fields(
            self._run("start_reconcile", key, time_arg(now), time_arg(lease_seconds), flag, seed)
        )
        if text(reply["outcome"]) != "granted":
            return None
        return text(reply["lease"])

    def adopt(self, key: str, adoption: Adoption) -> list[str] | None:
        listed: list[str] = []
        for record in adoption.records:
            listed += [record.name, time_arg(record.created_at), time_arg(record.last_used)]
        reply = fields(
            self._run(
                "adopt",
                key,
                adoption.lease,
                time_arg(adoption.now),
                adoption.max_sessions,
                time_arg(adoption.idle_before),
                secrets.token_hex(16),
                *listed,
            )
        )
        if text(reply["outcome"]) != "adopted":
            return None
        return [text(name) for name in reply["refused"]]

    def created(
        self, key: str, token: str, record: SessionRecord, *, now: float, check_out: bool
    ) -> bool:
        times = (time_arg(record.created_at), time_arg(record.last_used), time_arg(now))
        flag = "1" if check_out else "0"
        reply = self._run("created", key, token, record.name, *times, flag)
        return text(reply) == "recorded"

    def create_failed(self, key: str, token: str) -> None:
        self._run("create_failed", key, token)

    def reserve(
        self, key: str, *, holder: Holder, now: float, target: int, max_sessions: int
    ) -> list[str]:
        seed = secrets.token_hex(16)
        reply = self._run(
            "reserve", key, holder.host, holder.pid, time_arg(now), target, max_sessions, seed
        )
        return [text(token) for token in reply]

    def release(self, key: str, name: str, token: str, *, now: float) -> bool:
        return text(self._run("release", key, name, token, time_arg(now))) == "released"

    def keep_alive(self, key: str, name: str, token: str, *, now: float) -> bool:
        return text(self._run("keep_alive", key, name, token, time_arg(now))) == "kept"

    def discard(self, key: str, name: str, token: str) -> bool:
        return text(self._run("discard", key, name, token)) == "discarded"

    def take_idle(self, key: str, take: TakeIdle) -> list[tuple[SessionRecord, str | None]]:
        holder = take.holder
        reply = self._run(
            "take_idle",
            key,
            take.limit,
            take.keep,
            time_arg(take.now),
            "" if take.last_used_before is None else time_arg(take.last_used_before),
            "" if take.created_before is None else time_arg(take.created_before),
            "0" if holder is None else "1",
            "" if holder is None else holder.host,
            0 if holder is None else holder.pid,
            secrets.token_hex(16),
        )
        taken: list[tuple[SessionRecord, str | None]] = []
        for i in range(0, len(reply), 4):
            record = SessionRecord(text(reply[i]), float(reply[i + 1]), float(reply[i + 2]))
            token = text(reply[i + 3])
            taken.append((record, token or None))
        return taken

    def roll_window(self, key: str, *, now: float, length: float) -> int | None:
        reply = self._run("roll_window", key, time_arg(now), time_arg(length))
        return None if reply is None else int(reply)

    def claims(self, key: str) -> list[Claim]:
        reply = fields(self._run("claims", key))
        used, permits = reply["used"], reply["permits"]
        # (seq, claim): sorted by seq, claims come in the order they were made.
        found: list[tuple[str, Claim]] = []
        for i in range(0, len(used), 2):
            seq, token, host, pid, since = json.loads(used[i + 1])[:5]
            found.append((seq, Claim(token, Holder(host, int(pid)), float(since), text(used[i]))))
        found.sort()
        made: list[tuple[str, Claim]] = []
        for i in range(0, len(permits), 2):
            seq, host, pid, since = json.loads(permits[i + 1])
            made.append((seq, Claim(text(permits[i]), Holder(host, int(pid)), float(since))))
        made.sort()
        return [claim for _, claim in found + made]

    def reclaim(self, key: str, tokens: list[str], *, now: float) -> int:
        if not tokens:
            self._check_open()
            return 0
        return int(self._run("reclaim", key, *tokens))

    def clear(self, key: str) -> list[SessionRecord]:
        reply = fields(self._run("clear", key))
        idle, used = reply["idle"], reply["used"]
        records: list[tuple[str, SessionRecord]] = []
        for raw in idle:
            member, created, last_used = json.loads(raw)
            records.append((member, SessionRecord(member[17:], float(created), float(last_used))))
        in_use: list[tuple[str, SessionRecord]] = []
        for i in range(0, len(used), 2):
            seq, _, _, _, _, created, last_used = json.loads(used[i + 1])
            in_use.append((seq, SessionRecord(text(used[i]), float(created), float(last_used))))
        # Sorted by seq: sessions come in the order they became idle, or were checked out.
        records.sort(key=lambda item: item[0])
        in_use.sort(key=lambda item: item[0])
        return [record for _, record in records] + [record for _, record in in_use]

    def stats(self, key: str) -> StoreStats:
        reply = fields(self._run("stats", key))
        window_start = reply["window_start"]
        return StoreStats(
            idle=int(reply["idle"]),
            in_use=int(reply["in_use"]),
            creating=int(reply["creating"]),
            high_water=int(reply["high_water"]),
            window_start=None if window_start is None else float(window_start),
        )

    def wait_for_release(self, key: str, timeout: float, releases: int) -> bool:
        if self._closed:
            return True
        deadline = time.monotonic() + timeout
        meta, signal = self._pool_keys(key)[7:9]
        try:
            # A release since the caller's acquire: no need to block.
            self._count()
            if int(self._client.hget(meta, "releases") or 0) > releases:
                return True
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    return self._closed
                self._count()
                popped = self._client.blpop(
                    [signal], timeout=max(_MIN_BLOCK, min(remaining, self._block_slice))
                )
                # A marker not newer than `releases` is stale: that session was taken before
                # the caller's acquire found the pool full. Keep waiting.
                if popped is not None and int(popped[1]) > releases:
                    return True
        except Exception as exc:
            if self._closed:
                return True  # close() cut the connection under the blocking pop
            if isinstance(exc, _FAILURES):
                raise self._fail("wait_for_release", exc) from exc
            raise

    def wait_for_want(self, key: str, timeout: float, wants: int) -> int:
        """Blocks on the pool's wants stream (``XREAD``), to which an acquire that finds the
        pool full appends the new count: one blocking read (in slices shorter than the socket
        timeout), then one read of the count when nothing came. Background reads, not steps:
        not in ``round_trips``."""
        self._check_open()
        keys = self._pool_keys(key)
        deadline = time.monotonic() + max(0.0, timeout)
        try:
            while wants >= 0 and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                block = max(1, int(min(remaining, self._block_slice) * 1000))
                found = self._client.xread({keys[9]: f"{wants}-1"}, count=1, block=block)
                if found:
                    entries = next(iter(found.values())) if isinstance(found, dict) else found[0][1]
                    return int(text(entries[-1][0]).partition("-")[0])
            return int(self._client.hget(keys[7], "wants") or 0)
        except _FAILURES as exc:
            if self._closed:
                return wants  # close() cut the connection under the blocking read
            raise self._fail("wait_for_want", exc) from exc

    def close(self) -> None:
        """Closes the client when the store made it; a client passed in stays open."""
        self._before_closing()
        self._closed = True
        if self._owned:
            self._client.close()

    def __repr__(self) -> str:
        return f"<RedisStore {self._address} prefix={self._prefix!r}>"


def _where(client: Any) -> tuple[str, float | None]:
    """The server a client talks to, without credentials, and its socket timeout."""
    if isinstance(client, redis.cluster.RedisCluster):
        manager = client.nodes_manager
        nodes = ",".join(sorted(manager.startup_nodes))
        return f"cluster:{nodes}", manager.connection_kwargs.get("socket_timeout")
    pool = getattr(client, "connection_pool", None)
    kwargs: dict[str, Any] = getattr(pool, "connection_kwargs", {})
    timeout = kwargs.get("socket_timeout")
    if isinstance(pool, redis.sentinel.SentinelConnectionPool):
        return f"sentinel:{pool.service_name}/{kwargs.get('db', 0)}", timeout
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}", timeout
    if "host" in kwargs:
        return f"{kwargs['host']}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}", timeout
    return "an unknown address", timeout
