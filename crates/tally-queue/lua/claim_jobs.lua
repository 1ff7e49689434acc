-- claim_jobs.lua: claims up to N ready jobs in strict priority order, each
-- with a lease and a fresh fencing token, counting the attempt. It first
-- acknowledges the jobs the worker finished since its last call (exactly as
-- complete_jobs.lua), so a busy worker needs one script call per batch.
--
-- KEYS[1] ready:high  list
-- KEYS[2] ready:normal
-- KEYS[3] ready:low
-- KEYS[4] jobs        hash  id -> envelope
-- KEYS[5] state       hash  id -> per-job state
-- KEYS[6] leases      zset  id by lease expiry ms
-- KEYS[7] token       string, the last fencing token handed out
-- KEYS[8] dedup       hash  dedup key -> id
-- KEYS[9] wake        list  wake markers
-- KEYS[10] stats      hash  counters
-- KEYS[11] claim record  string, this worker's last claim (ids and tokens)
-- KEYS[12] control     hash  the queue's controls: paused ('1' while paused),
--                      limit (most jobs in flight across every worker)
-- ARGV[1] 'n:<request id>' for a new claim, 'r:<request id>' for a retry of
--         a claim whose reply was lost (anything else: no record kept). A
--         retry whose request id matches the record gets the recorded jobs
--         again (those the recorded tokens still hold) instead of new ones,
--         so a lost reply costs its jobs nothing.
-- ARGV[2] lease ms
-- ARGV[3] max jobs to claim (may be 0: acknowledge only)
-- ARGV[4] how many of them the worker starts at once (it has free slots for
--         them); the others are claimed ahead and marked held, so that a
--         worker lost while it only held them costs them no crash
-- ARGV[5..] two per finished job to acknowledge first: id, token
-- Returns: { ack statuses (1 completed, 0 stale token, 2 already finished;
--          one per finished job), throttled (1 when the queue is paused or at
--          its limit while ready jobs may be left, else 0) }, then, when
--          jobs were claimed, the first token T and three per claimed job:
--          id, envelope (nil when missing), and 0 for a job's first claim
--          (attempt 1, no crashes or errors, token T + its position in the
--          reply, 1 for the first job) or { attempt, crashes, errors, token }.
--          Fewer jobs than asked means the ready
--          lists are empty; the wake list is then cleared in the same atomic
--          step, so a marker seen later always means new work.

local now, now_us = redis_time()
local max = tonumber(ARGV[3])
local start_now = tonumber(ARGV[4])
local acks = complete_batch(KEYS[4], KEYS[5], KEYS[6], KEYS[10], 5)

-- Appends one claimed job to the reply (three values, see the header):
-- `meta` is 0 for a first claim, else { attempt, crashes, errors, token }.
local function emit(out, id, env, meta)
  local n = #out
  out[n + 1] = id
  out[n + 2] = env
  out[n + 3] = meta
end
local mode, request = string.match(ARGV[1], '^([nr]):(.+)$')
local lease_ms = tonumber(ARGV[2])

if mode == 'r' then
  local rec = redis.call('GET', KEYS[11])
  if rec and string.sub(rec, 1, #request + 1) == request .. ':' then
    -- The same claim again: its jobs, as the script recorded them.
    local first_token, packed = string.match(string.sub(rec, #request + 2), '^(%d+):(.*)$')
    local recorded = cmsgpack.unpack(packed)
    local out = { acks, 0, tonumber(first_token) }
    local expiry = tostring(now + lease_ms)
    for i, id in ipairs(recorded) do
      local tok = int(tonumber(first_token) + i)
      local s = redis.call('HGET', KEYS[5], id)
      if holds_token(s, tok) then
        local st = parse_state(s)
        redis.call('ZADD', KEYS[6], 'XX', expiry, id)
        emit(out, id, redis.call('HGET', KEYS[4], id), { st.attempts, st.crashes, st.errors, st.token })
      end
    end
    return out
  end
end
if max == 0 then
  return { acks, 0 }
end
-- The queue's controls (`tally queue pause|limit`). A paused queue hands
-- out nothing; a limit caps the jobs in flight across every worker: the
-- leases, jobs claimed ahead included, and leases of a lost worker until
-- the reaper takes them back, so the cap is never exceeded.
local paused, limit = unpack(redis.call('HMGET', KEYS[12], 'paused', 'limit'))
if paused == '1' then
  return { acks, 1 }
end
local throttled = 0
if limit then
  local room = tonumber(limit) - redis.call('ZCARD', KEYS[6])
  if room < max then
    throttled = 1
    if room <= 0 then
      return { acks, 1 }
    end
    max = room
    if start_now > room then
      start_now = room
    end
  end
end
local ids = {}
local prios = {}
local letters = { 'h', 'n', 'l' }
for k = 1, 3 do
  local want = max - #ids
  if want <= 0 then
    break
  end
  local got = redis.call('LPOP', KEYS[k], want)
  if got then
    for _, id in ipairs(got) do
      ids[#ids + 1] = id
      prios[#ids] = letters[k]
    end
  end
end
if #ids < max then
  -- The ready lists are empty: not throttled, just idle.
  throttled = 0
  redis.call('DEL', KEYS[9])
end
if #ids == 0 then
  return { acks, 0 }
end

local envs = call_unpacked('HMGET', KEYS[4], ids)
local states = call_unpacked('HMGET', KEYS[5], ids)
-- Fencing tokens grow and never repeat, even after a Redis crash that lost
-- its last writes (AOF everysec loses up to a second): the next token is
-- never below Redis's clock in µs, and that clock moved on during the
-- restart, so a token handed out in the lost second is never handed out
-- again (unless claims ran more than a million tokens a second ahead of the
-- clock, or Redis's clock went back across the restart).
local first = math.max(tonumber(redis.call('GET', KEYS[7]) or '0'), now_us)
redis.call('SET', KEYS[7], int(first + #ids))
local expiry = tostring(now + tonumber(ARGV[2]))
local new_states = {}
local leases = {}
local out = { acks, throttled, first }
local HELD = { h = 'H', n = 'N', l = 'L' }
for i, id in ipairs(ids) do
  local token = first + i
  if not states[i] then
    -- A fresh job (the common case): its first claim, written directly.
    local prio = prios[i]
    if i > start_now then
      prio = HELD[prio]
    end
    new_states[#new_states + 1] = id
    new_states[#new_states + 1] = int(token) .. ':1:0:0:' .. prio
    leases[#leases + 1] = expiry
    leases[#leases + 1] = id
    emit(out, id, envs[i], 0)
  else
    local st = parse_state(states[i]) or { token = 0, attempts = 0, crashes = 0, errors = 0 }
    st.prio = prios[i]
    if st.dedup then
      -- The job starts now: later requests must create a new job.
      if redis.call('HGET', KEYS[8], st.dedup) == id then
        redis.call('HDEL', KEYS[8], st.dedup)
      end
      st.dedup = nil
    end
    st.attempts = st.attempts + 1
    st.token = token
    st.held = i > start_now
    new_states[#new_states + 1] = id
    new_states[#new_states + 1] = format_state(st)
    leases[#leases + 1] = expiry
    leases[#leases + 1] = id
    emit(out, id, envs[i], { st.attempts, st.crashes, st.errors, st.token })
  end
end
keep_hashtable(KEYS[5])
call_unpacked('HSET', KEYS[5], new_states)
call_unpacked('ZADD', KEYS[6], leases)
if mode then
  -- The claim's ids, and the first token (the others follow in order).
  redis.call('SET', KEYS[11], request .. ':' .. int(first) .. ':' .. cmsgpack.pack(ids), 'PX', lease_ms)
end
return out
