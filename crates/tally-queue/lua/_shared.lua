-- _shared.lua: helpers prepended (by src/scripts.rs) to the scripts that need
-- them, so the per-job state format and the dead-set rules live in one place.
-- Not a script of its own: it defines local functions only.
--
-- Per-job state (hash `state`, field = job id), one string per job:
--   "<token>:<attempts>:<crashes>:<errors>:<prio>[<held losses>][:<dedup key>]"
--   token     fencing token of the current claim, 0 while not claimed
--   attempts  claims that counted (a graceful requeue gives one back)
--   crashes   leases that expired while the job was running (worker lost)
--   errors    handler failures (error, panic, timeout)
--   prio      h | n | l, the ready list the job returns to; upper case (H,
--             N, L) while the job is claimed ahead of a free slot ("held"):
--             a worker holds it in its buffer and has not started it
--   held losses  leases that expired while the job was held (digits, absent
--             when 0): the worker died, but not while running this job
--   dedup key present only while the job waits with a dedup key

-- Redis's own clock, in ms since the epoch. Every lease, due time and
-- dead-set age is judged by this one clock, never by a caller's, so hosts
-- whose clocks disagree cannot expire each other's leases. (Scripts are
-- replicated by their effects since Redis 5, so TIME is allowed before
-- writes.)
-- Returns ms, and µs for the fencing token floor (see claim_jobs.lua); µs
-- since the epoch stay below 2^53, exact in Lua's doubles, until 2255.
local function redis_time()
  local t = redis.call('TIME')
  local s, us = tonumber(t[1]), tonumber(t[2])
  return s * 1000 + math.floor(us / 1000), s * 1000000 + us
end

-- Redis's clock in ms.
local function redis_now()
  return (redis_time())
end

-- A whole number as decimal digits (tostring would write 1.8e+15).
local function int(n)
  return string.format('%.0f', n)
end

-- A time the caller computed on its own clock (`at`, with `caller_now` read
-- on the same clock) moved to Redis's clock: the caller's skew cancels out.
local function to_redis_clock(at, caller_now, now)
  return now + (at - caller_now)
end

-- Lua's unpack() fails beyond about 8000 values (LUAI_MAXCSTACK), and a
-- script that fails half way keeps what it already did (Redis has no
-- rollback). Every command whose arguments come from a caller-sized list
-- goes through `call_unpacked`, which sends them in slices; array replies
-- (HMGET) are joined in order. Slices are even, so pairs stay together.
local UNPACK_MAX = 4000
local function call_unpacked(cmd, key, list, opt)
  local n = #list
  if n <= UNPACK_MAX then
    if opt then
      return redis.call(cmd, key, opt, unpack(list))
    end
    return redis.call(cmd, key, unpack(list))
  end
  local joined = nil
  for lo = 1, n, UNPACK_MAX do
    local hi = math.min(lo + UNPACK_MAX - 1, n)
    local r
    if opt then
      r = redis.call(cmd, key, opt, unpack(list, lo, hi))
    else
      r = redis.call(cmd, key, unpack(list, lo, hi))
    end
    if type(r) == 'table' then
      joined = joined or {}
      for i = 1, #r do
        joined[#joined + 1] = r[i]
      end
    else
      joined = (joined or 0) + r
    end
  end
  return joined
end

-- The state hash holds one field that is not a job: its value is longer
-- than Redis's `hash-max-listpack-value` (64 bytes by default), so the hash
-- is kept in hashtable encoding from its first claim on, and never emptied
-- (so never deleted and created again as a listpack). A listpack answers
-- HMGET by scanning, and the state hash of a busy queue holds about as many
-- entries (up to a few hundred) as the 128 below which Redis keeps one:
-- claims and acknowledgements then cost up to 40% more Redis CPU. The field
-- name starts with a NUL byte, which no job id starts with.
local ENCODING_FIELD = '\0encoding'
local ENCODING_NOTE = 'kept by tally so that this hash stays in hashtable encoding (docs/PROTOCOL.md, Per-job state)'
local function keep_hashtable(state_key)
  redis.call('HSETNX', state_key, ENCODING_FIELD, ENCODING_NOTE)
end

local LOWER = { H = 'h', N = 'n', L = 'l', h = 'h', n = 'n', l = 'l' }
local UPPER = { h = 'H', n = 'N', l = 'L' }

local function parse_state(s)
  if not s then
    return nil
  end
  local t, a, c, e, p, hl, rest = string.match(s, '^(%d+):(%d+):(%d+):(%d+):(%a)(%d*)(.*)$')
  if not t then
    return nil
  end
  local d = nil
  if rest ~= '' then
    d = string.sub(rest, 2)
  end
  return {
    token = tonumber(t),
    attempts = tonumber(a),
    crashes = tonumber(c),
    errors = tonumber(e),
    prio = LOWER[p] or 'n',
    held = UPPER[p] == nil and LOWER[p] ~= nil,
    held_losses = tonumber(hl) or 0,
    dedup = d,
  }
end

-- Small counts as strings without a number-to-string conversion (which
-- costs a printf in Lua 5.1): attempts, crashes and errors are nearly
-- always below 10.
local DIGITS = { '0', '1', '2', '3', '4', '5', '6', '7', '8', '9' }
local function num(n)
  return DIGITS[n + 1] or tostring(n)
end

local function format_state(st)
  local s = int(st.token) .. ':' .. num(st.attempts) .. ':' .. num(st.crashes) .. ':' .. num(st.errors) .. ':'
  if st.held then
    s = s .. UPPER[st.prio]
  else
    s = s .. st.prio
  end
  if st.held_losses and st.held_losses > 0 then
    s = s .. num(st.held_losses)
  end
  if st.dedup then
    s = s .. ':' .. st.dedup
  end
  return s
end

-- Priority letter, max attempts and kind of an envelope, for the rare paths
-- that need them (jobs scheduled by a producer that wrote no state; expired
-- leases). Defaults: normal, 3, ''.
local PRIO_LETTER = { high = 'h', normal = 'n', low = 'l' }
local function envelope_info(env)
  if not env then
    return 'n', 3, ''
  end
  local ok, decoded = pcall(cjson.decode, env)
  if not ok or type(decoded) ~= 'table' then
    return 'n', 3, ''
  end
  local kind = type(decoded.kind) == 'string' and decoded.kind or ''
  if type(decoded.policy) ~= 'table' then
    return 'n', 3, kind
  end
  local prio = PRIO_LETTER[decoded.policy.priority] or 'n'
  local max = tonumber(decoded.policy.maxAttempts) or 3
  return prio, max, kind
end

-- Pushes up to `count` wake markers (capped at `cap` in the list), so that
-- idle workers blocked in BLPOP on the wake list return at once.
local function push_wake(wake_key, count, cap)
  if count <= 0 then
    return
  end
  if count > cap then
    count = cap
  end
  local markers = {}
  for i = 1, count do
    markers[i] = '1'
  end
  local len = redis.call('RPUSH', wake_key, unpack(markers))
  if len > cap then
    redis.call('LTRIM', wake_key, -cap, -1)
  end
end

-- Whether state string `s` holds token `tok` (the decimal string the worker
-- sent): a prefix comparison, no parsing, since this runs for every job.
local function holds_token(s, tok)
  return s and tok ~= '0' and string.find(s, tok, 1, true) == 1 and string.byte(s, #tok + 1) == 58
end

-- Acknowledges finished jobs: ARGV[first], ARGV[first+1], ... are pairs of
-- id and token. A job whose token is not the current claim's is left alone.
-- Returns one integer per pair: 1 completed, 0 rejected (stale token: another
-- claim holds the job), 2 already finished (no state left).
local function complete_batch(jobs_key, state_key, leases_key, stats_key, first)
  local ids = {}
  for i = first, #ARGV, 2 do
    ids[#ids + 1] = ARGV[i]
  end
  if #ids == 0 then
    return {}
  end
  local states = call_unpacked('HMGET', state_key, ids)
  local done = {}
  local out = {}
  for k, id in ipairs(ids) do
    if holds_token(states[k], ARGV[first + 2 * k - 1]) then
      done[#done + 1] = id
      out[k] = 1
    elseif states[k] then
      out[k] = 0
    else
      -- No state: the job is finished (by an earlier try of this very
      -- acknowledgement whose reply was lost, or after a recovery, by
      -- another claim).
      out[k] = 2
    end
  end
  if #done > 0 then
    call_unpacked('ZREM', leases_key, done)
    call_unpacked('HDEL', jobs_key, done)
    call_unpacked('HDEL', state_key, done)
    redis.call('HINCRBY', stats_key, 'completed', #done)
  end
  return out
end

-- Moves one job to the dead set with a reason, then enforces the caps.
-- dk = { dead = zset, envs = hash, info = hash }
local function bury(dk, jobs_key, state_key, id, st, reason, now)
  local env = redis.call('HGET', jobs_key, id)
  if env then
    redis.call('HSET', dk.envs, id, env)
  end
  local info = cjson.encode({
    id = id,
    error = reason,
    attempts = st.attempts,
    crashes = st.crashes,
    errors = st.errors,
    diedAtMs = now,
  })
  redis.call('HSET', dk.info, id, info)
  redis.call('ZADD', dk.dead, now, id)
  redis.call('HDEL', jobs_key, id)
  redis.call('HDEL', state_key, id)
end

local function drop_dead(dk, ids)
  if #ids == 0 then
    return
  end
  call_unpacked('ZREM', dk.dead, ids)
  call_unpacked('HDEL', dk.envs, ids)
  call_unpacked('HDEL', dk.info, ids)
end

-- Caps the dead set by age and by count (oldest first).
local function trim_dead(dk, now, max_count, max_age_ms)
  local old = redis.call('ZRANGEBYSCORE', dk.dead, '-inf', '(' .. (now - max_age_ms), 'LIMIT', 0, 1000)
  drop_dead(dk, old)
  local excess = redis.call('ZCARD', dk.dead) - max_count
  if excess > 0 then
    if excess > 1000 then
      excess = 1000
    end
    drop_dead(dk, redis.call('ZRANGE', dk.dead, 0, excess - 1))
  end
end
