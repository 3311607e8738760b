"""A store in a Redis server, for pools shared by processes on many hosts.

Every step is one Lua script run with ``EVALSHA`` (``EVAL`` once after the server lost its
script cache): one round trip, atomic on the server, and touching only the keys of one pool.
Those keys share the hash tag ``{<key>}``, so a pool lives on one slot of a cluster:

- ``<prefix>:{<key>}:idle``: ZSET of idle sessions, scored by ``last_used``; each member is
  ``<seq>:<name>``, ``<seq>`` being a 16-digit number that grows each time a session becomes
  idle, so that sessions with equal times keep the order in which they became idle;
- ``...:idle:born``: ZSET of the same members, scored by ``created_at``;
- ``...:idle:rec``: HASH name -> JSON ``[member, created_at, last_used]``;
- ``...:used``: HASH name -> JSON ``[seq, token, host, pid, since, created_at, last_used]`` of
  the checked-out sessions;
- ``...:used:since``: ZSET name -> ``since`` of the checked-out sessions;
- ``...:permits``: HASH token -> JSON ``[seq, host, pid, since]`` of the creation permits;
- ``...:permits:since``: ZSET token -> ``since`` of the permits;
- ``...:meta``: HASH with ``window_start``, ``high_water``, ``releases`` (a counter of the
  steps that made a session idle) and ``seq``;
- ``...:signal``: LIST of release markers (the value of ``releases`` after each release, the
  newest first, at most 16), popped with ``BLPOP`` by ``wait_for_release``.

Times are passed to the scripts as ``repr(float)`` strings and kept as those strings, so they
come back exactly; the scripts compare them as doubles (ZSET scores and ``tonumber`` parse them
into the same double as Python). Tokens are made by the scripts from a random seed the caller
passes in, so the scripts stay deterministic.

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

import hashlib
import json
import math
import secrets
import threading
import time
from collections.abc import Sequence
from typing import Any

try:
    import redis
    import redis.exceptions
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("RedisStore needs the redis package: pip install 'spanpool[redis]'") from exc

from ..errors import StoreError
from .store import Acquired, Claim, Holder, SessionRecord, StoreStats

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
)
# What a failing server or connection raises from the client.
_FAILURES = (redis.exceptions.RedisError, OSError)
_SIGNAL_LENGTH = 16  # markers kept in the signal list
_MIN_BLOCK = 0.01  # BLPOP rounds its timeout down to milliseconds, and 0 blocks forever

# Shared by every script: the keys of one pool, in the order of _SUFFIXES, and helpers.
_PRELUDE = """
local k_idle, k_born, k_irec = KEYS[1], KEYS[2], KEYS[3]
local k_used, k_usince = KEYS[4], KEYS[5]
local k_permits, k_psince = KEYS[6], KEYS[7]
local k_meta, k_signal = KEYS[8], KEYS[9]

-- Fixed width, so that comparing members compares the order sessions became idle in.
local function next_seq()
  return string.format('%016d', redis.call('HINCRBY', k_meta, 'seq', 1))
end

-- Tokens derive from the caller's random seed: the script stays deterministic.
local function mint(seed, i)
  return string.sub(redis.sha1hex(seed .. ':' .. i), 1, 16)
end

local function total()
  return redis.call('ZCARD', k_idle) + redis.call('HLEN', k_used)
    + redis.call('HLEN', k_permits)
end

-- A session becomes idle. A name already idle keeps its member (its place in the order),
-- and only gets the new times.
local function idle_put(name, created, last_used)
  local old = redis.call('HGET', k_irec, name)
  local member
  if old then
    member = cjson.decode(old)[1]
  else
    member = next_seq() .. ':' .. name
  end
  redis.call('ZADD', k_idle, last_used, member)
  redis.call('ZADD', k_born, created, member)
  redis.call('HSET', k_irec, name, cjson.encode({member, created, last_used}))
end

-- Removes an idle session by its member; returns name, created_at, last_used.
local function idle_take(member)
  local name = string.sub(member, 18)
  local rec = cjson.decode(redis.call('HGET', k_irec, name))
  redis.call('ZREM', k_idle, member)
  redis.call('ZREM', k_born, member)
  redis.call('HDEL', k_irec, name)
  return name, rec[2], rec[3]
end

-- The seq of a new claim on name. A name already checked out (a caller's mistake: one name
-- created twice) keeps its seq, as a dict keeps the place of a replaced key.
local function use_seq(name)
  local raw = redis.call('HGET', k_used, name)
  if raw then
    return cjson.decode(raw)[1]
  end
  return next_seq()
end

local function use_put(name, seq, token, host, pid, since, created, last_used)
  redis.call('HSET', k_used, name,
    cjson.encode({seq, token, host, pid, since, created, last_used}))
  redis.call('ZADD', k_usince, since, name)
end

local function use_drop(name)
  redis.call('HDEL', k_used, name)
  redis.call('ZREM', k_usince, name)
end

-- The decoded entry of name when it is checked out under token, else nil.
local function checked_out(name, token)
  local raw = redis.call('HGET', k_used, name)
  if not raw then
    return nil
  end
  local entry = cjson.decode(raw)
  if entry[2] ~= token then
    return nil
  end
  return entry
end

local function permit_put(token, host, pid, since)
  redis.call('HSET', k_permits, token, cjson.encode({next_seq(), host, pid, since}))
  redis.call('ZADD', k_psince, since, token)
end

local function permit_drop(token)
  redis.call('ZREM', k_psince, token)
  return redis.call('HDEL', k_permits, token)
end

local function raise_high_water()
  local n = redis.call('HLEN', k_used)
  if n > tonumber(redis.call('HGET', k_meta, 'high_water') or '0') then
    redis.call('HSET', k_meta, 'high_water', n)
  end
end

-- Counts a release and pushes its number for wait_for_release, once per waiter to wake
-- (BLPOP hands each marker to one waiter). The list is trimmed, so markers nobody waits for
-- do not pile up; a waiter ignores markers not newer than the count its acquire saw (the
-- sessions they announced were taken before that acquire found the pool full).
local function released(wakes)
  local n = redis.call('HINCRBY', k_meta, 'releases', 1)
  local markers = {}
  for i = 1, math.min(wakes, SIGNAL_LENGTH) do
    markers[i] = n
  end
  redis.call('LPUSH', k_signal, unpack(markers))
  redis.call('LTRIM', k_signal, 0, SIGNAL_LENGTH - 1)
end

local function releases()
  return tonumber(redis.call('HGET', k_meta, 'releases') or '0')
end
""".replace("SIGNAL_LENGTH", str(_SIGNAL_LENGTH))

_ACQUIRE = """
local host, pid, now = ARGV[1], ARGV[2], ARGV[3]
local max_sessions = tonumber(ARGV[4])
local reclaim_before, expired_before, retire_before = ARGV[5], ARGV[6], ARGV[7]
local token = mint(ARGV[8], 0)

if redis.call('HEXISTS', k_meta, 'window_start') == 0 then
  redis.call('HSET', k_meta, 'window_start', now)
end

-- Idle sessions that expired or must retire; '(' makes the bound exclusive (<).
local doomed, seen = {}, {}
for _, range in ipairs({
  redis.call('ZRANGEBYSCORE', k_idle, '-inf', '(' .. expired_before),
  redis.call('ZRANGEBYSCORE', k_born, '-inf', '(' .. retire_before),
}) do
  for _, member in ipairs(range) do
    if not seen[member] then
      seen[member] = true
      doomed[#doomed + 1] = member
    end
  end
end
-- Reported in the order the sessions became idle (the seq prefix), numerically: string
-- comparison in Lua follows the server's locale.
table.sort(doomed, function(a, b)
  return tonumber(string.sub(a, 1, 16)) < tonumber(string.sub(b, 1, 16))
end)
local dropped = {}
for _, member in ipairs(doomed) do
  local name, created, last_used = idle_take(member)
  dropped[#dropped + 1] = name
  dropped[#dropped + 1] = created
  dropped[#dropped + 1] = last_used
end

-- Permits of creators that died.
for _, stale in ipairs(redis.call('ZRANGEBYSCORE', k_psince, '-inf', '(' .. reclaim_before)) do
  permit_drop(stale)
end

local status, name, created, last_used = 0, '', '', ''
local top = redis.call('ZREVRANGE', k_idle, 0, 1, 'WITHSCORES')
if #top > 0 then
  -- The most recently used; among equal last_used, the one that became idle first (the
  -- smallest member of that score). Equal doubles print the same, so comparing the score
  -- strings is exact.
  local member = top[1]
  if #top == 4 and top[2] == top[4] then
    member = redis.call('ZRANGEBYSCORE', k_idle, top[2], top[2], 'LIMIT', 0, 1)[1]
  end
  name, created, last_used = idle_take(member)
  use_put(name, use_seq(name), token, host, pid, now, created, last_used)
  raise_high_water()
  status = 1
elseif total() < max_sessions then
  permit_put(token, host, pid, now)
  status = 2
else
  -- The claim with the oldest since (then the smallest name), when older than
  -- reclaim_before: equal scores are ordered by member in a ZSET.
  local stale = redis.call('ZRANGEBYSCORE', k_usince, '-inf', '(' .. reclaim_before,
    'LIMIT', 0, 1)
  if #stale > 0 then
    name = stale[1]
    local entry = cjson.decode(redis.call('HGET', k_used, name))
    created, last_used = entry[6], entry[7]
    use_drop(name)
    use_put(name, use_seq(name), token, host, pid, now, created, last_used)
    raise_high_water()
    status = 3
  end
end
if status == 0 then
  token = ''
end
return {releases(), status, name, created, last_used, token, dropped}
"""

_CREATED = """
local token, name, created, last_used, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local raw = redis.call('HGET', k_permits, token)
if not raw then
  return 0
end
local permit = cjson.decode(raw)
permit_drop(token)
if ARGV[6] == '1' then
  -- Checked out under the permit's token, to the permit's holder.
  use_put(name, use_seq(name), token, permit[2], permit[3], now, created, last_used)
  raise_high_water()
else
  idle_put(name, created, last_used)
  released(1)
end
return 1
"""

_CREATE_FAILED = """
-- The place the permit held is free again: a waiter may now create.
if permit_drop(ARGV[1]) == 1 then
  released(1)
end
return 0
"""

_RESERVE = """
local host, pid, now, seed = ARGV[1], ARGV[2], ARGV[3], ARGV[6]
local count = math.min(tonumber(ARGV[4]), tonumber(ARGV[5])) - total()
local tokens = {}
for i = 1, count do
  local token = mint(seed, i)
  permit_put(token, host, pid, now)
  tokens[i] = token
end
return tokens
"""

_RELEASE = """
local name, token, now = ARGV[1], ARGV[2], ARGV[3]
local entry = checked_out(name, token)
if not entry then
  return 0
end
use_drop(name)
idle_put(name, entry[6], now)
released(1)
return 1
"""

_KEEP_ALIVE = """
local name, token, now = ARGV[1], ARGV[2], ARGV[3]
local e = checked_out(name, token)
if not e then
  return 0
end
-- Same seq: the claim keeps its place, as it does in MemoryStore.
use_put(name, e[1], e[2], e[3], e[4], now, e[6], e[7])
return 1
"""

_DISCARD = """
if not checked_out(ARGV[1], ARGV[2]) then
  return 0
end
use_drop(ARGV[1])
-- The session's place is free again: a waiter may now create one.
released(1)
return 1
"""

_TAKE_IDLE = """
local limit = math.min(tonumber(ARGV[1]), total() - tonumber(ARGV[2]))
local now, last_used_before, created_before = ARGV[3], ARGV[4], ARGV[5]
local with_holder, host, pid, seed = ARGV[6] == '1', ARGV[7], ARGV[8], ARGV[9]
local taken = {}
if limit <= 0 then
  return taken
end
-- Least recently used first (equal times: the order they became idle). Without the
-- created_at filter, the first `limit` candidates are the answer.
local window = {}
if created_before == '' then
  window = {'LIMIT', 0, limit}
end
local candidates
if last_used_before ~= '' then
  candidates = redis.call('ZRANGEBYSCORE', k_idle, '-inf', '(' .. last_used_before,
    unpack(window))
elseif created_before == '' then
  candidates = redis.call('ZRANGE', k_idle, 0, limit - 1)
else
  candidates = redis.call('ZRANGE', k_idle, 0, -1)
end
local created_limit = created_before ~= '' and tonumber(created_before)
local n = 0
for _, member in ipairs(candidates) do
  if n >= limit then
    break
  end
  if not created_limit or tonumber(redis.call('ZSCORE', k_born, member)) < created_limit then
    local name, created, last_used = idle_take(member)
    n = n + 1
    local token = ''
    if with_holder then
      token = mint(seed, n)
      use_put(name, use_seq(name), token, host, pid, now, created, last_used)
    end
    taken[#taken + 1] = name
    taken[#taken + 1] = created
    taken[#taken + 1] = last_used
    taken[#taken + 1] = token
  end
end
return taken
"""

_ROLL_WINDOW = """
local now, length = ARGV[1], ARGV[2]
local start = redis.call('HGET', k_meta, 'window_start')
local in_use = redis.call('HLEN', k_used)
if not start then
  redis.call('HSET', k_meta, 'window_start', now, 'high_water', in_use)
  return false
end
-- Same double arithmetic as Python's `now - window_start < length`.
if tonumber(now) - tonumber(start) < tonumber(length) then
  return false
end
local high_water = tonumber(redis.call('HGET', k_meta, 'high_water') or '0')
redis.call('HSET', k_meta, 'window_start', now, 'high_water', in_use)
return high_water
"""

_CLAIMS = """
return {redis.call('HGETALL', k_used), redis.call('HGETALL', k_permits)}
"""

_RECLAIM = """
local wanted = {}
for i = 1, #ARGV do
  wanted[ARGV[i]] = true
end
local back = {}
local used = redis.call('HGETALL', k_used)
for i = 1, #used, 2 do
  local entry = cjson.decode(used[i + 1])
  if wanted[entry[2]] then
    back[#back + 1] = {used[i], entry}
  end
end
-- Back to idle in the order they were checked out (HGETALL has no order).
table.sort(back, function(a, b)
  return tonumber(a[2][1]) < tonumber(b[2][1])
end)
for _, item in ipairs(back) do
  use_drop(item[1])
  idle_put(item[1], item[2][6], item[2][7])
end
local found = #back
for token in pairs(wanted) do
  found = found + permit_drop(token)
end
if found > 0 then
  -- Each claim taken back is an idle session or a free place: wake as many waiters.
  released(found)
end
return found
"""

_CLEAR = """
local idle = redis.call('HVALS', k_irec)
local used = redis.call('HGETALL', k_used)
redis.call('DEL', unpack(KEYS))
return {idle, used}
"""

_STATS = """
return {
  redis.call('ZCARD', k_idle),
  redis.call('HLEN', k_used),
  redis.call('HLEN', k_permits),
  tonumber(redis.call('HGET', k_meta, 'high_water') or '0'),
  redis.call('HGET', k_meta, 'window_start'),
}
"""


class _Script:
    """A script with the prelude, and its SHA1 for EVALSHA."""

    def __init__(self, name: str, body: str) -> None:
        self.name = name
        self.source = _PRELUDE + body
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()


_SCRIPTS = {
    name: _Script(name, body)
    for name, body in [
        ("acquire", _ACQUIRE),
        ("created", _CREATED),
        ("create_failed", _CREATE_FAILED),
        ("reserve", _RESERVE),
        ("release", _RELEASE),
        ("keep_alive", _KEEP_ALIVE),
        ("discard", _DISCARD),
        ("take_idle", _TAKE_IDLE),
        ("roll_window", _ROLL_WINDOW),
        ("claims", _CLAIMS),
        ("reclaim", _RECLAIM),
        ("clear", _CLEAR),
        ("stats", _STATS),
    ]
}


def _time(value: float) -> str:
    """A time as the script gets it: the shortest string that parses back to the double."""
    return repr(float(value))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _records(flat: Sequence[Any]) -> tuple[SessionRecord, ...]:
    """Records from a flat ``[name, created_at, last_used, ...]`` reply."""
    return tuple(
        SessionRecord(_text(flat[i]), float(flat[i + 1]), float(flat[i + 2]))
        for i in range(0, len(flat), 3)
    )


class RedisStore:
    """Keeps pool state in a Redis server (see the module's documentation for the layout).

    ``url_or_client`` is a ``redis://``, ``rediss://`` or ``unix://`` URL, for which the store
    builds (and closes) its own client with ``socket_timeout``, or a ``redis.Redis`` client,
    used as given. Every step is one round trip, counted in ``round_trips``.

    Safe to share between threads. A forked child may keep using the store: redis-py's
    connection pool notices the new pid and opens the child's own connections, leaving the
    parent's sockets alone.
    """

    def __init__(
        self,
        url_or_client: str | redis.Redis,
        *,
        prefix: str = "spanpool",
        socket_timeout: float = 5.0,
    ) -> None:
        self._client: Any
        if isinstance(url_or_client, str):
            # No retries: a resent script whose first reply was lost would run twice.
            self._client = redis.Redis.from_url(
                url_or_client,
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_timeout,
                retry=None,
            )
            self._owned = True
        else:
            self._client = url_or_client
            self._owned = False
        self._prefix = prefix
        self._keys: dict[str, list[str]] = {}
        self._counter_lock = threading.Lock()
        self._round_trips = 0
        self._closed = False
        kwargs: dict[str, Any] = getattr(
            getattr(self._client, "connection_pool", None), "connection_kwargs", {}
        )
        self._address = _address(kwargs)
        timeout = kwargs.get("socket_timeout")
        # A blocking pop must answer within the socket timeout: wait in slices of half of it.
        self._block_slice = math.inf if timeout is None else max(_MIN_BLOCK, timeout / 2)

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
        script = _SCRIPTS[name]
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

    def acquire(
        self,
        key: str,
        *,
        holder: Holder,
        now: float,
        max_sessions: int,
        reclaim_before: float,
        expired_before: float,
        retire_before: float,
    ) -> Acquired:
        reply = self._run(
            "acquire",
            key,
            holder.host,
            holder.pid,
            _time(now),
            max_sessions,
            _time(reclaim_before),
            _time(expired_before),
            _time(retire_before),
            secrets.token_hex(16),
        )
        releases, status, name, created, last_used, token, dropped = reply
        records = _records(dropped)
        if status == 0:
            return Acquired(dropped=records, releases=int(releases))
        record = None
        if status != 2:
            record = SessionRecord(_text(name), float(created), float(last_used))
        return Acquired(record, _text(token), records, status == 3, int(releases))

    def created(
        self, key: str, token: str, record: SessionRecord, *, now: float, check_out: bool
    ) -> bool:
        return bool(
            self._run(
                "created",
                key,
                token,
                record.name,
                _time(record.created_at),
                _time(record.last_used),
                _time(now),
                "1" if check_out else "0",
            )
        )

    def create_failed(self, key: str, token: str) -> None:
        self._run("create_failed", key, token)

    def reserve(
        self, key: str, *, holder: Holder, now: float, target: int, max_sessions: int
    ) -> list[str]:
        reply = self._run(
            "reserve",
            key,
            holder.host,
            holder.pid,
            _time(now),
            target,
            max_sessions,
            secrets.token_hex(16),
        )
        return [_text(token) for token in reply]

    def release(self, key: str, name: str, token: str, *, now: float) -> bool:
        return bool(self._run("release", key, name, token, _time(now)))

    def keep_alive(self, key: str, name: str, token: str, *, now: float) -> bool:
        return bool(self._run("keep_alive", key, name, token, _time(now)))

    def discard(self, key: str, name: str, token: str) -> bool:
        return bool(self._run("discard", key, name, token))

    def take_idle(
        self,
        key: str,
        *,
        limit: int,
        keep: int,
        now: float,
        last_used_before: float | None = None,
        created_before: float | None = None,
        holder: Holder | None = None,
    ) -> list[tuple[SessionRecord, str | None]]:
        reply = self._run(
            "take_idle",
            key,
            limit,
            keep,
            _time(now),
            "" if last_used_before is None else _time(last_used_before),
            "" if created_before is None else _time(created_before),
            "0" if holder is None else "1",
            "" if holder is None else holder.host,
            0 if holder is None else holder.pid,
            secrets.token_hex(16),
        )
        taken: list[tuple[SessionRecord, str | None]] = []
        for i in range(0, len(reply), 4):
            record = SessionRecord(_text(reply[i]), float(reply[i + 1]), float(reply[i + 2]))
            token = _text(reply[i + 3])
            taken.append((record, token or None))
        return taken

    def roll_window(self, key: str, *, now: float, length: float) -> int | None:
        reply = self._run("roll_window", key, _time(now), _time(length))
        return None if reply is None else int(reply)

    def claims(self, key: str) -> list[Claim]:
        used, permits = self._run("claims", key)
        # (seq, claim): sorted by seq, claims come in the order they were made.
        found: list[tuple[str, Claim]] = []
        for i in range(0, len(used), 2):
            seq, token, host, pid, since = json.loads(used[i + 1])[:5]
            found.append((seq, Claim(token, Holder(host, int(pid)), float(since), _text(used[i]))))
        found.sort()
        made: list[tuple[str, Claim]] = []
        for i in range(0, len(permits), 2):
            seq, host, pid, since = json.loads(permits[i + 1])
            made.append((seq, Claim(_text(permits[i]), Holder(host, int(pid)), float(since))))
        made.sort()
        return [claim for _, claim in found + made]

    def reclaim(self, key: str, tokens: list[str], *, now: float) -> int:
        if not tokens:
            self._check_open()
            return 0
        return int(self._run("reclaim", key, *tokens))

    def clear(self, key: str) -> list[SessionRecord]:
        idle, used = self._run("clear", key)
        records: list[tuple[str, SessionRecord]] = []
        for raw in idle:
            member, created, last_used = json.loads(raw)
            records.append((member, SessionRecord(member[17:], float(created), float(last_used))))
        in_use: list[tuple[str, SessionRecord]] = []
        for i in range(0, len(used), 2):
            seq, _, _, _, _, created, last_used = json.loads(used[i + 1])
            in_use.append((seq, SessionRecord(_text(used[i]), float(created), float(last_used))))
        # Sorted by seq: sessions come in the order they became idle, or were checked out.
        records.sort(key=lambda item: item[0])
        in_use.sort(key=lambda item: item[0])
        return [record for _, record in records] + [record for _, record in in_use]

    def stats(self, key: str) -> StoreStats:
        idle, in_use, creating, high_water, window_start = self._run("stats", key)
        return StoreStats(
            idle=int(idle),
            in_use=int(in_use),
            creating=int(creating),
            high_water=int(high_water),
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

    def close(self) -> None:
        """Closes the client when the store made it; a client passed in stays open."""
        self._closed = True
        if self._owned:
            self._client.close()

    def __repr__(self) -> str:
        return f"<RedisStore {self._address} prefix={self._prefix!r}>"


def _address(kwargs: dict[str, Any]) -> str:
    """The server of a connection pool's settings, without credentials."""
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    if "host" in kwargs:
        return f"{kwargs['host']}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
    return "an unknown address"
