-- The steps of spanpool's RedisStore: each one script, run whole by EVALSHA (one round trip,
-- atomic on the server), touching only the keys of one pool.
--
-- The text before the first script is the prelude, put in front of every script: the pool's
-- keys and the helpers the scripts share. A line "--- <name>" starts the script of the step
-- <name>; its header says what it reads (KEYS, ARGV), what it does and what it returns.
--
-- KEYS, the same for every script: the keys of one pool, all with the hash tag {<key>}.
--   KEYS[1] idle          ZSET  "<seq>:<name>" scored by last_used
--   KEYS[2] idle:born     ZSET  the same members, scored by created_at
--   KEYS[3] idle:rec      HASH  name -> JSON [member, created_at, last_used]
--   KEYS[4] used          HASH  name -> JSON [seq, token, host, pid, since, created_at, last_used]
--   KEYS[5] used:since    ZSET  name scored by since
--   KEYS[6] permits       HASH  token -> JSON [seq, host, pid, since]
--   KEYS[7] permits:since ZSET  token scored by since
--   KEYS[8] meta          HASH  window_start, high_water, releases, seq, wants, epoch, and
--                               lease and lease_until while a reconciliation is under way
--   KEYS[9] signal        LIST  release markers for wait_for_release (BLPOP)
--   KEYS[10] wants        STREAM the want count, one entry "<count>-1" (the last one), which
--                               processes keeping leased sessions read with a blocking XREAD
--
-- Times come as repr(float) strings and are kept as those strings, so they come back exactly;
-- they are compared as doubles. Tokens derive from a random seed the caller passes in, so the
-- scripts stay deterministic. Replies that carry more than one value are flat lists of
-- name/value pairs ({'outcome', 'idle', 'name', ...}), read by name on the Python side.

local k_idle, k_born, k_irec = KEYS[1], KEYS[2], KEYS[3]
local k_used, k_usince = KEYS[4], KEYS[5]
local k_permits, k_psince = KEYS[6], KEYS[7]
local k_meta, k_signal, k_wants = KEYS[8], KEYS[9], KEYS[10]
local SIGNAL_LENGTH = 16 -- release markers kept in the signal list

-- Fixed width, so that comparing members compares the order sessions became idle in.
local function next_seq()
  return string.format('%016d', redis.call('HINCRBY', k_meta, 'seq', 1))
end

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

-- An acquire found the pool full: counts a want and appends the count to the wants stream,
-- waking every process that waits for it (wait_for_want). A stream whose last entry is not
-- older (the count started over while the stream stayed) is started over too.
local function wanted()
  local n = redis.call('HINCRBY', k_meta, 'wants', 1)
  local added = redis.pcall('XADD', k_wants, 'MAXLEN', '1', n .. '-1', 'wants', n)
  if type(added) == 'table' and added.err then
    redis.call('DEL', k_wants)
    redis.call('XADD', k_wants, 'MAXLEN', '1', n .. '-1', 'wants', n)
  end
end

-- The pool's epoch (false when the state was lost, or never made) and reconciliation lease
-- (false when none is under way) with its end.
local function epoch_state()
  return unpack(redis.call('HMGET', k_meta, 'epoch', 'lease', 'lease_until'))
end

-- Appends name, created_at, last_used to a flat list of records.
local function add_record(list, name, created, last_used)
  list[#list + 1] = name
  list[#list + 1] = created
  list[#list + 1] = last_used
end

--- acquire
-- ARGV: host, pid, now, max_sessions, reclaim_before, expired_before, retire_before, seed.
-- Starts the window when there is none; drops idle sessions that expired or must retire, and
-- permits older than reclaim_before (their creators died); then hands out, in this order of
-- preference: the most recently used idle session, a creation permit when the pool is below
-- max_sessions, or the claim with the oldest since when that is older than reclaim_before.
-- Returns {'outcome', o, 'releases', n, 'name', ..., 'created', ..., 'last_used', ...,
-- 'token', ..., 'dropped', {name, created, last_used, ...}, 'spare', n, 'wants', n} where spare
-- counts the idle sessions and free places left after this step, wants is the want count, and
-- o is
--   'idle'      an idle session, now checked out under token;
--   'permit'    a creation permit, token (name, created, last_used are '');
--   'reclaimed' a session taken from a holder that stopped keeping it alive;
--   'full'      nothing (token is ''): wait for a release (releases is the count to wait past);
--               the want count goes up (and onto the wants stream), so that processes keeping
--               sessions give them back.
--   'reset'     nothing, and nothing changed: the pool has no epoch (its state was lost) or the
--               lease of a reconciliation expired; the caller reconciles.
-- While a reconciliation is under way no permit is granted.

local host, pid, now = ARGV[1], ARGV[2], ARGV[3]
local max_sessions = tonumber(ARGV[4])
local reclaim_before, expired_before, retire_before = ARGV[5], ARGV[6], ARGV[7]
local token = mint(ARGV[8], 0)

local epoch, lease, lease_until = epoch_state()
if not epoch or (lease and tonumber(now) >= tonumber(lease_until)) then
  return {'outcome', 'reset', 'releases', releases(), 'name', '', 'created', '',
    'last_used', '', 'token', '', 'dropped', {}, 'spare', 0, 'wants', -1}
end

local function start_window()
  if redis.call('HEXISTS', k_meta, 'window_start') == 0 then
    redis.call('HSET', k_meta, 'window_start', now)
  end
end

-- Idle sessions that expired or must retire ('(' makes a bound exclusive), in the order they
-- became idle: their seq prefix, compared as numbers (string order follows the locale).
local function drop_doomed()
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
  table.sort(doomed, function(a, b)
    return tonumber(string.sub(a, 1, 16)) < tonumber(string.sub(b, 1, 16))
  end)
  local dropped = {}
  for _, member in ipairs(doomed) do
    add_record(dropped, idle_take(member))
  end
  return dropped
end

local function drop_stale_permits()
  for _, stale in ipairs(redis.call('ZRANGEBYSCORE', k_psince, '-inf', '(' .. reclaim_before)) do
    permit_drop(stale)
  end
end

-- The most recently used idle session; among equal last_used, the one that became idle first
-- (the smallest member of that score: equal doubles print the same, so comparing the score
-- strings is exact). Returns its member, or nil.
local function most_recent_idle()
  local top = redis.call('ZREVRANGE', k_idle, 0, 1, 'WITHSCORES')
  if #top == 0 then
    return nil
  end
  if #top == 4 and top[2] == top[4] then
    return redis.call('ZRANGEBYSCORE', k_idle, top[2], top[2], 'LIMIT', 0, 1)[1]
  end
  return top[1]
end

-- The claim with the oldest since (then the smallest name: equal scores are ordered by
-- member), when older than reclaim_before; taken from its holder. Returns its record, or nil.
local function reclaim_oldest()
  local stale = redis.call('ZRANGEBYSCORE', k_usince, '-inf', '(' .. reclaim_before,
    'LIMIT', 0, 1)
  if #stale == 0 then
    return nil
  end
  local name = stale[1]
  local entry = cjson.decode(redis.call('HGET', k_used, name))
  use_drop(name)
  return name, entry[6], entry[7]
end

start_window()
local dropped = drop_doomed()
drop_stale_permits()

local outcome, name, created, last_used = 'full', '', '', ''
local member = most_recent_idle()
if member then
  outcome = 'idle'
  name, created, last_used = idle_take(member)
elseif not lease and total() < max_sessions then
  outcome = 'permit'
  permit_put(token, host, pid, now)
else
  name, created, last_used = reclaim_oldest()
  if name then
    outcome = 'reclaimed'
  else
    name, created, last_used = '', '', ''
  end
end
if outcome == 'idle' or outcome == 'reclaimed' then
  use_put(name, use_seq(name), token, host, pid, now, created, last_used)
  raise_high_water()
elseif outcome == 'full' then
  token = ''
  wanted()
end
-- No free place counts while a reconciliation is under way: none can be granted.
local free = 0
if not lease then
  free = math.max(0, max_sessions - total())
end
local spare = redis.call('ZCARD', k_idle) + free
return {'outcome', outcome, 'releases', releases(), 'name', name, 'created', created,
  'last_used', last_used, 'token', token, 'dropped', dropped, 'spare', spare,
  'wants', tonumber(redis.call('HGET', k_meta, 'wants') or '0')}

--- created
-- ARGV: token, name, created_at, last_used, now, check_out ('1' or '0').
-- Turns the permit token into the session name: checked out to the permit's holder under the
-- same token when check_out, else idle (waking a waiter).
-- Returns 'recorded', or 'unknown_permit' (nothing changed: the caller deletes the session).

local token, name, created, last_used, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local raw = redis.call('HGET', k_permits, token)
if not raw then
  return 'unknown_permit'
end
local permit = cjson.decode(raw)
permit_drop(token)
if ARGV[6] == '1' then
  use_put(name, use_seq(name), token, permit[2], permit[3], now, created, last_used)
  raise_high_water()
else
  idle_put(name, created, last_used)
  released(1)
end
return 'recorded'

--- create_failed
-- ARGV: token.
-- Gives back the permit token; its place is free again, so a waiter is woken.
-- Returns 'dropped', or 'unknown_permit'.

if permit_drop(ARGV[1]) == 1 then
  released(1)
  return 'dropped'
end
return 'unknown_permit'

--- reserve
-- ARGV: host, pid, now, target, max_sessions, seed.
-- Grants permits until idle + checked out + permits reaches min(target, max_sessions); none
-- while the pool has no epoch or a reconciliation is under way.
-- Returns the list of their tokens (empty when already there).

local host, pid, now, seed = ARGV[1], ARGV[2], ARGV[3], ARGV[6]
local epoch, lease = epoch_state()
if not epoch or lease then
  return {}
end
local count = math.min(tonumber(ARGV[4]), tonumber(ARGV[5])) - total()
local tokens = {}
for i = 1, count do
  local token = mint(seed, i)
  permit_put(token, host, pid, now)
  tokens[i] = token
end
return tokens

--- start_reconcile
-- ARGV: now, lease_seconds, force ('1' or '0'), seed.
-- Grants a reconciliation lease until now + lease_seconds when the pool has no epoch (a new
-- epoch is written), when the current lease expired, or, with force, when none is held.
-- Returns {'outcome', 'granted', 'lease', token}, or {'outcome', 'busy'} (another process
-- holds a lease) or {'outcome', 'not_needed'}.

local now, lease_seconds, force, seed = ARGV[1], ARGV[2], ARGV[3] == '1', ARGV[4]
local epoch, lease, lease_until = epoch_state()
if epoch and lease and tonumber(now) < tonumber(lease_until) then
  return {'outcome', 'busy'}
end
if epoch and not lease and not force then
  return {'outcome', 'not_needed'}
end
if not epoch then
  redis.call('HSET', k_meta, 'epoch', mint(seed, 'epoch'))
end
local token = mint(seed, 'lease')
redis.call('HSET', k_meta, 'lease', token, 'lease_until', tonumber(now) + tonumber(lease_seconds))
return {'outcome', 'granted', 'lease', token}

--- adopt
-- ARGV: lease, now, max_sessions, idle_before, seed, then name, created_at, last_used of each
-- session the server listed, in the order to keep them.
-- Under the lease only: records each unknown session while idle + checked out + permits <
-- max_sessions, idle when last used before idle_before, else checked out by nobody (host '',
-- pid 0) since its last use; a session checked out by nobody and last used before idle_before
-- becomes idle; other known sessions are left alone. Ends the lease and wakes a waiter.
-- Returns {'outcome', 'adopted', 'refused', {names without room}}, or
-- {'outcome', 'lost_lease'} (nothing changed: the lease is no longer this pool's).

local token, max_sessions, idle_before, seed = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4]),
  ARGV[5]
local epoch, lease = epoch_state()
if not epoch or lease ~= token then
  return {'outcome', 'lost_lease'}
end
local refused = {}
local count = total()
for i = 6, #ARGV, 3 do
  local name, created, last_used = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local idle = tonumber(last_used) < idle_before
  local raw = redis.call('HGET', k_used, name)
  if raw then
    local entry = cjson.decode(raw)
    if entry[3] == '' and tonumber(entry[4]) == 0 and idle then
      use_drop(name)
      idle_put(name, entry[6], last_used)
    end
  elseif redis.call('HEXISTS', k_irec, name) == 1 then
    -- Known and idle: left alone.
  elseif count >= max_sessions then
    refused[#refused + 1] = name
  else
    if idle then
      idle_put(name, created, last_used)
    else
      use_put(name, next_seq(), mint(seed, i), '', 0, last_used, created, last_used)
    end
    count = count + 1
  end
end
redis.call('HDEL', k_meta, 'lease', 'lease_until')
released(1)
return {'outcome', 'adopted', 'refused', refused}

--- release
-- ARGV: name, token, now.
-- Makes the session idle with last_used = now, and wakes a waiter.
-- Returns 'released', or 'not_held' (name is not checked out under token; nothing changed).

local name, token, now = ARGV[1], ARGV[2], ARGV[3]
local entry = checked_out(name, token)
if not entry then
  return 'not_held'
end
use_drop(name)
idle_put(name, entry[6], now)
released(1)
return 'released'

--- keep_alive
-- ARGV: name, token, now.
-- Sets the claim's since to now; the claim keeps its seq (its place), as in MemoryStore.
-- Returns 'kept', or 'not_held'.

local name, token, now = ARGV[1], ARGV[2], ARGV[3]
local e = checked_out(name, token)
if not e then
  return 'not_held'
end
use_put(name, e[1], e[2], e[3], e[4], now, e[6], e[7])
return 'kept'

--- discard
-- ARGV: name, token.
-- Forgets a checked-out session; its place is free again, so a waiter is woken.
-- Returns 'discarded', or 'not_held'.

if not checked_out(ARGV[1], ARGV[2]) then
  return 'not_held'
end
use_drop(ARGV[1])
released(1)
return 'discarded'

--- take_idle
-- ARGV: limit, keep, now, last_used_before ('' for none), created_before ('' for none),
-- with_holder ('1' or '0'), host, pid, seed.
-- Takes up to limit idle sessions, least recently used first (equal times: the order they
-- became idle), that match the filters, never leaving fewer than keep in the pool; with a
-- holder they are checked out to it, each under a new token, else removed.
-- Returns a flat list {name, created_at, last_used, token ('' without a holder), ...}.

local limit = math.min(tonumber(ARGV[1]), total() - tonumber(ARGV[2]))
local now, last_used_before, created_before = ARGV[3], ARGV[4], ARGV[5]
local with_holder, host, pid, seed = ARGV[6] == '1', ARGV[7], ARGV[8], ARGV[9]
local taken = {}
if limit <= 0 then
  return taken
end
-- Without the created_at filter, the first `limit` candidates are the answer.
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
    add_record(taken, name, created, last_used)
    taken[#taken + 1] = token
  end
end
return taken

--- roll_window
-- ARGV: now, length.
-- When the window started length or more seconds ago, starts a new one at now whose
-- high-water mark is the number checked out now (starts one when there is none).
-- Returns the old window's high-water mark, or nil (false) when the window did not roll.

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

--- claims
-- ARGV: none. Changes nothing.
-- Returns {'used', HGETALL of used, 'permits', HGETALL of permits}.

return {'used', redis.call('HGETALL', k_used), 'permits', redis.call('HGETALL', k_permits)}

--- reclaim
-- ARGV: the tokens of claims whose holders are known to be dead.
-- Their sessions become idle (last_used unchanged), in the order they were checked out; their
-- permits are dropped; a waiter is woken per claim taken back.
-- Returns how many claims were found.

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
  released(found)
end
return found

--- clear
-- ARGV: none.
-- Deletes every key of the pool.
-- Returns {'idle', the JSON records of idle sessions, 'used', HGETALL of used}.

local idle = redis.call('HVALS', k_irec)
local used = redis.call('HGETALL', k_used)
redis.call('DEL', unpack(KEYS))
return {'idle', idle, 'used', used}

--- stats
-- ARGV: none. Changes nothing.
-- Returns {'idle', n, 'in_use', n, 'creating', n, 'high_water', n, 'window_start', time or
-- nil (false)}.

return {
  'idle', redis.call('ZCARD', k_idle),
  'in_use', redis.call('HLEN', k_used),
  'creating', redis.call('HLEN', k_permits),
  'high_water', tonumber(redis.call('HGET', k_meta, 'high_water') or '0'),
  'window_start', redis.call('HGET', k_meta, 'window_start'),
}

--- multiplexed_get
-- The multiplexed session shared under the key (MultiplexedPool). Its fields live in the
-- key's meta hash (KEYS[8]): mux_name, mux_created, mux_generation, and the creation lease
-- mux_lease (token), mux_lease_host, mux_lease_pid, mux_lease_until.
-- ARGV: none. Changes nothing.
-- Returns {'name', name, 'created_at', time, 'generation', n}, or {} when none is recorded.

local rec = redis.call('HMGET', k_meta, 'mux_name', 'mux_created', 'mux_generation')
if not rec[1] then
  return {}
end
return {'name', rec[1], 'created_at', rec[2], 'generation', rec[3]}

--- multiplexed_claim
-- ARGV: holder host, holder pid, now, lease_until (now + lease), replacing ('' for none), token.
-- Grants the creation lease (token, holder, until lease_until) when no other lease is live
-- (mux_lease_until > now) and either no session is recorded or the recorded one is replacing.
-- Returns {'token', token or '', then the record's fields as multiplexed_get returns them}.

local rec = redis.call('HMGET', k_meta, 'mux_name', 'mux_created', 'mux_generation',
  'mux_lease', 'mux_lease_until')
local name, lease, lease_until = rec[1], rec[4], rec[5]
local leased = lease and tonumber(lease_until) > tonumber(ARGV[3])
local due = (not name) or (ARGV[5] ~= '' and name == ARGV[5])
local token = ''
if due and not leased then
  token = ARGV[6]
  redis.call('HSET', k_meta, 'mux_lease', token, 'mux_lease_host', ARGV[1],
    'mux_lease_pid', ARGV[2], 'mux_lease_until', ARGV[4])
end
if not name then
  return {'token', token}
end
return {'token', token, 'name', name, 'created_at', rec[2], 'generation', rec[3]}

--- multiplexed_publish
-- ARGV: token, name, created_at.
-- When token holds the lease: records the session with the next generation and ends the lease.
-- Returns {'name', name, 'created_at', time, 'generation', n}, or {} (the lease is not the
-- caller's: nothing changed).

if redis.call('HGET', k_meta, 'mux_lease') ~= ARGV[1] then
  return {}
end
local generation = tonumber(redis.call('HGET', k_meta, 'mux_generation') or '0') + 1
redis.call('HSET', k_meta, 'mux_name', ARGV[2], 'mux_created', ARGV[3],
  'mux_generation', generation)
redis.call('HDEL', k_meta, 'mux_lease', 'mux_lease_host', 'mux_lease_pid', 'mux_lease_until')
return {'name', ARGV[2], 'created_at', ARGV[3], 'generation', generation}

--- multiplexed_abandon
-- ARGV: token.
-- Ends the lease when token holds it (its creation failed). Returns 1 if it did, else 0.

if redis.call('HGET', k_meta, 'mux_lease') ~= ARGV[1] then
  return 0
end
redis.call('HDEL', k_meta, 'mux_lease', 'mux_lease_host', 'mux_lease_pid', 'mux_lease_until')
return 1
