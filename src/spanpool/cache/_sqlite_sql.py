"""The SQL of ``SQLiteStore``'s steps, each statement headed by what it reads and returns.

Parameters are named: ``:key`` (the pool's key), ``:now``, ``:token``, ``:host``, ``:pid``,
``:name``, and for ``acquire`` the bounds of ``Checkout`` (``:expired``, ``:retire``,
``:reclaim``). The texts are constants, so that sqlite3's statement cache prepares each once
per connection. Tables and columns: see ``_sqlite_file.py``.

A session's ``seq`` orders sessions by the step that made them idle or checked out (ties in
times are broken as ``MemoryStore`` breaks them): each such step gives it the pool's next
``seq`` (``NEXT_SEQ``) and moves the pool's counter on.
"""

from __future__ import annotations

NEXT_SEQ = "(SELECT seq + 1 FROM pools WHERE key = :key)"
IN_USE = "(SELECT count(*) FROM sessions WHERE key = :key AND token IS NOT NULL)"
IDLE = "(SELECT count(*) FROM sessions WHERE key = :key AND token IS NULL)"
TOTAL = (
    "(SELECT count(*) FROM sessions WHERE key = :key)"
    " + (SELECT count(*) FROM permits WHERE key = :key)"
)
DOOMED = "key = :key AND token IS NULL AND (last_used < :expired OR created_at < :retire)"
EPOCH_OK = (
    "EXISTS (SELECT 1 FROM epochs WHERE key = :key AND (lease IS NULL OR :now < lease_until))"
)

# -- acquire, the common road: an idle session, in two statements --------------------------------

# Checks out the most recently used idle session that has neither expired nor must retire
# (ties: the one idle longest by seq), when the pool has its epoch, no reconciliation lease
# that expired, and a row in pools. Returns name, created_at, last_used; no row: take the
# whole road (ACQUIRE_* below).
CHECK_OUT_IDLE = f"""UPDATE sessions
SET token = :token, host = :host, pid = :pid, since = :now, seq = {NEXT_SEQ}
WHERE key = :key AND name = (
    SELECT name FROM sessions
    WHERE key = :key AND token IS NULL AND last_used >= :expired AND created_at >= :retire
    ORDER BY last_used DESC, seq LIMIT 1
) AND {EPOCH_OK} AND EXISTS (SELECT 1 FROM pools WHERE key = :key)
RETURNING name, created_at, last_used"""

# After CHECK_OUT_IDLE: moves seq on, starts the window when there is none, raises the
# high-water mark. Returns releases, wants, then what the rest of the step needs: the idle
# sessions and the total (sessions and permits) before dropping anything, the idle sessions
# to drop (expired or to retire), whether permits are stale (their creators died), and
# whether a reconciliation lease is held.
CHECKED_OUT = f"""UPDATE pools
SET seq = seq + 1, window_start = coalesce(window_start, :now),
    high_water = max(high_water, {IN_USE})
WHERE key = :key
RETURNING releases, wants, {IDLE}, {TOTAL},
    (SELECT count(*) FROM sessions WHERE {DOOMED}),
    EXISTS (SELECT 1 FROM permits WHERE key = :key AND since < :reclaim),
    (SELECT lease IS NOT NULL FROM epochs WHERE key = :key)"""

# Drops the idle sessions that expired or must retire. Returns seq, name, created_at,
# last_used of each (to be sorted by seq: the order they became idle in).
DROP_DOOMED = f"DELETE FROM sessions WHERE {DOOMED} RETURNING seq, name, created_at, last_used"

# Drops the permits of creators that died (older than :reclaim). Its row count: how many.
DROP_STALE_PERMITS = "DELETE FROM permits WHERE key = :key AND since < :reclaim"

# -- acquire, the whole road: no idle session to hand out, or the pool's state is in doubt --------

# The pool's epoch, lease and its end; no row: the state was lost.
EPOCH = "SELECT epoch, lease, lease_until FROM epochs WHERE key = :key"
# The release counter, for a step that changes nothing.
RELEASES = "SELECT coalesce((SELECT releases FROM pools WHERE key = :key), 0)"
# When the pool has its epoch and no reconciliation lease that expired: makes the pool's row
# (its window starts now) when there is none, or moves seq on and starts the window when there
# is none. Returns releases, wants, whether a reconciliation lease is held, the idle sessions
# and the total before dropping anything, the idle sessions to drop (expired or to retire),
# and whether permits are stale; no row: the state was lost (change nothing, reconcile).
ACQUIRE_BEGIN = f"""INSERT INTO pools (key, window_start, seq) SELECT :key, :now, 1 WHERE {EPOCH_OK}
ON CONFLICT (key) DO UPDATE SET seq = seq + 1, window_start = coalesce(window_start, :now)
RETURNING releases, wants, (SELECT lease IS NOT NULL FROM epochs WHERE key = :key),
    {IDLE}, {TOTAL}, (SELECT count(*) FROM sessions WHERE {DOOMED}),
    EXISTS (SELECT 1 FROM permits WHERE key = :key AND since < :reclaim)"""
# The most recently used idle session (ties: idle longest). Returns name, created_at, last_used.
MOST_RECENT_IDLE = """SELECT name, created_at, last_used FROM sessions
WHERE key = :key AND token IS NULL ORDER BY last_used DESC, seq LIMIT 1"""
# The claim with the oldest since, older than :reclaim (ties: the smallest name).
OLDEST_CLAIM = """SELECT name, created_at, last_used FROM sessions
WHERE key = :key AND token IS NOT NULL AND since < :reclaim ORDER BY since, name LIMIT 1"""
# Checks :name out under :token at :now with the pool's current seq (ACQUIRE_BEGIN moved it).
CHECK_OUT = """UPDATE sessions
SET token = :token, host = :host, pid = :pid, since = :now,
    seq = (SELECT seq FROM pools WHERE key = :key)
WHERE key = :key AND name = :name"""
# After a checkout on the whole road: raises the high-water mark. Returns the idle sessions
# and the total.
RAISE_HIGH_WATER = f"""UPDATE pools SET high_water = max(high_water, {IN_USE}) WHERE key = :key
RETURNING {IDLE}, {TOTAL}"""
# The total of sessions and permits.
COUNT_TOTAL = f"SELECT {TOTAL}"
INSERT_PERMIT = (
    "INSERT INTO permits (key, token, host, pid, since) VALUES (:key, :token, :host, :pid, :now)"
)
# The pool is full: one more want. Returns the want count.
WANT = "UPDATE pools SET wants = wants + 1 WHERE key = :key RETURNING wants"

# -- release, keep_alive, discard, created, create_failed ----------------------------------------

# Makes :name idle at :now when checked out under :token. Its row count: 1 when it was.
RELEASE = f"""UPDATE sessions
SET token = NULL, host = NULL, pid = NULL, since = NULL, last_used = :now, seq = {NEXT_SEQ}
WHERE key = :key AND name = :name AND token = :token"""
# After a session became idle: moves seq on and wakes the waiters.
RELEASED = "UPDATE pools SET seq = seq + 1, releases = releases + 1 WHERE key = :key"
# A place under max_sessions was freed: wakes the waiters.
WAKE = "UPDATE pools SET releases = releases + 1 WHERE key = :key"
# One statement, so one transaction of its own. Its row count: 1 when :name is checked out
# under :token.
KEEP_ALIVE = "UPDATE sessions SET since = :now WHERE key = :key AND name = :name AND token = :token"
DISCARD = "DELETE FROM sessions WHERE key = :key AND name = :name AND token = :token"
# Gives the permit :token back. Returns its holder's host and pid; no row: unknown permit.
TAKE_PERMIT = "DELETE FROM permits WHERE key = :key AND token = :token RETURNING host, pid"
# Records a session (checked out when :token is not NULL) with the pool's next seq.
INSERT_SESSION = f"""INSERT OR REPLACE INTO sessions
(key, name, created_at, last_used, seq, token, host, pid, since)
VALUES (:key, :name, :created_at, :last_used, {NEXT_SEQ}, :token, :host, :pid, :since)"""
# After INSERT_SESSION of a checked-out session: moves seq on, raises the high-water mark.
RECORDED_IN_USE = (
    f"UPDATE pools SET seq = seq + 1, high_water = max(high_water, {IN_USE}) WHERE key = :key"
)

# -- reconciliation --------------------------------------------------------------------------------

NEW_EPOCH = """INSERT INTO epochs (key, epoch, lease, lease_until)
VALUES (:key, :epoch, :lease, :until)"""
SET_LEASE = "UPDATE epochs SET lease = :lease, lease_until = :until WHERE key = :key"
END_LEASE = "UPDATE epochs SET lease = NULL, lease_until = NULL WHERE key = :key"
ENSURE_POOL = "INSERT OR IGNORE INTO pools (key) VALUES (:key)"
# The claim on :name: token, host, pid (all NULL when idle); no row: unknown.
CLAIM_OF = "SELECT token, host, pid FROM sessions WHERE key = :key AND name = :name"
# Makes :name idle as last used at :last_used, with the pool's next seq.
ADOPT_IDLE = f"""UPDATE sessions
SET token = NULL, host = NULL, pid = NULL, since = NULL, last_used = :last_used, seq = {NEXT_SEQ}
WHERE key = :key AND name = :name"""
MOVE_SEQ = "UPDATE pools SET seq = seq + 1 WHERE key = :key"

# -- reserve, take_idle, roll_window, reclaim, clear ----------------------------------------------

# Whether permits may be granted (an epoch, no reconciliation lease), and the total; no row:
# no epoch.
RESERVE_ROOM = f"SELECT lease IS NULL, {TOTAL} FROM epochs WHERE key = :key"
# The start of take_idle's query; the filters, ORDER BY and LIMIT follow.
IDLE_LEAST_RECENT = """SELECT name, created_at, last_used FROM sessions
WHERE key = :key AND token IS NULL"""
DELETE_SESSION = "DELETE FROM sessions WHERE key = :key AND name = :name"
# Moves seq on by :count. Returns the new seq: the last of the :count taken.
MOVE_SEQ_BY = "UPDATE pools SET seq = seq + :count WHERE key = :key RETURNING seq"
CHECK_OUT_AT = """UPDATE sessions SET token = :token, host = :host, pid = :pid, since = :now,
seq = :seq WHERE key = :key AND name = :name"""
MAKE_IDLE_AT = """UPDATE sessions SET token = NULL, host = NULL, pid = NULL, since = NULL,
seq = :seq WHERE key = :key AND name = :name"""
# The window's start and high-water mark; no row or a NULL start: no window yet.
WINDOW = "SELECT window_start, high_water FROM pools WHERE key = :key"
# Starts a window at :now whose high-water mark is the number checked out now.
NEW_WINDOW = f"""INSERT INTO pools (key, window_start, high_water) VALUES (:key, :now, {IN_USE})
ON CONFLICT (key) DO UPDATE SET window_start = :now, high_water = {IN_USE}"""
# Every claim: checked-out sessions in the order they were checked out, then permits in the
# order they were granted. Returns token, host, pid, since, name (NULL for a permit).
CLAIMS = """SELECT token, host, pid, since, name FROM (
    SELECT 0 AS part, seq AS ord, token, host, pid, since, name FROM sessions
    WHERE key = :key AND token IS NOT NULL
    UNION ALL
    SELECT 1, id, token, host, pid, since, NULL FROM permits WHERE key = :key
) ORDER BY part, ord"""
# Every session, idle ones first, each part in seq order.
EVERY_SESSION = """SELECT name, created_at, last_used FROM sessions WHERE key = :key
ORDER BY token IS NOT NULL, seq"""
FORGET_POOL = tuple(
    f"DELETE FROM {table} WHERE key = :key" for table in ("sessions", "permits", "pools", "epochs")
)

# -- reads without a write transaction ------------------------------------------------------------

STATS = f"""SELECT {IDLE}, {IN_USE}, (SELECT count(*) FROM permits WHERE key = :key),
    (SELECT high_water FROM pools WHERE key = :key),
    (SELECT window_start FROM pools WHERE key = :key)"""
RELEASE_COUNT = "SELECT releases FROM pools WHERE key = :key"
WANT_COUNT = "SELECT wants FROM pools WHERE key = :key"
