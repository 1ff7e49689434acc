-- _shared.lua: helpers prepended (by src/scripts.rs) to the scripts that need
-- them, so the per-job state format and the dead-set rules live in one place.
-- Not a script of its own: it defines local functions only.
--
-- Per-job state (hash `state`, field = job id), one string per job:
--   "<token>:<attempts>:<crashes>:<errors>:<prio>[:<dedup key>]"
--   token     fencing token of the current claim, 0 while not claimed
--   attempts  claims that counted (a graceful requeue gives one back)
--   crashes   leases that expired (worker lost)
--   errors    handler failures (error, panic, timeout)
--   prio      h | n | l, the ready list the job returns to
--   dedup key present only while the job waits with a dedup key

local function parse_state(s)
  if not s then
    return nil
  end
  local t, a, c, e, p, rest = string.match(s, '^(%d+):(%d+):(%d+):(%d+):(%a)(.*)$')
  if not t then
    return nil
  end
  local d = nil
  if rest ~= '' then
    d = string.sub(rest, 2)
  end
  return { token = tonumber(t), attempts = tonumber(a), crashes = tonumber(c), errors = tonumber(e), prio = p, dedup = d }
end

-- Small counts as strings without a number-to-string conversion (which
-- costs a printf in Lua 5.1): attempts, crashes and errors are nearly
-- always below 10.
local DIGITS = { '0', '1', '2', '3', '4', '5', '6', '7', '8', '9' }
local function num(n)
  return DIGITS[n + 1] or tostring(n)
end

local function format_state(st)
  local s = tostring(st.token) .. ':' .. num(st.attempts) .. ':' .. num(st.crashes) .. ':' .. num(st.errors) .. ':' .. st.prio
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
-- Returns one integer per pair: 1 completed, 0 rejected (stale token).
local function complete_batch(jobs_key, state_key, leases_key, stats_key, first)
  local ids = {}
  for i = first, #ARGV, 2 do
    ids[#ids + 1] = ARGV[i]
  end
  if #ids == 0 then
    return {}
  end
  local states = redis.call('HMGET', state_key, unpack(ids))
  local done = {}
  local out = {}
  for k, id in ipairs(ids) do
    if holds_token(states[k], ARGV[first + 2 * k - 1]) then
      done[#done + 1] = id
      out[k] = 1
    else
      out[k] = 0
    end
  end
  if #done > 0 then
    redis.call('ZREM', leases_key, unpack(done))
    redis.call('HDEL', jobs_key, unpack(done))
    redis.call('HDEL', state_key, unpack(done))
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
  redis.call('ZREM', dk.dead, unpack(ids))
  redis.call('HDEL', dk.envs, unpack(ids))
  redis.call('HDEL', dk.info, unpack(ids))
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
