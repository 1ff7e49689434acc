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
-- KEYS[7] token       string, the fencing token counter (INCRBY)
-- KEYS[8] dedup       hash  dedup key -> id
-- KEYS[9] wake        list  wake markers
-- KEYS[10] stats      hash  counters
-- ARGV[1] unused (was the caller's clock; leases run on Redis's clock)
-- ARGV[2] lease ms
-- ARGV[3] max jobs to claim (may be 0: acknowledge only)
-- ARGV[4] how many of them the worker starts at once (it has free slots for
--         them); the others are claimed ahead and marked held, so that a
--         worker lost while it only held them costs them no crash
-- ARGV[5..] two per finished job to acknowledge first: id, token
-- Returns: { ack statuses (1 completed, 0 stale token, one per finished job) }
--          followed by six per claimed job: id, envelope (nil when missing),
--          attempt, crashes, errors, token. Fewer jobs than asked means the ready
--          lists are empty; the wake list is then cleared in the same atomic
--          step, so a marker seen later always means new work.

local now = redis_now()
local max = tonumber(ARGV[3])
local start_now = tonumber(ARGV[4])
local acks = complete_batch(KEYS[4], KEYS[5], KEYS[6], KEYS[10], 5)
if max == 0 then
  return { acks }
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
  redis.call('DEL', KEYS[9])
end
if #ids == 0 then
  return { acks }
end

local envs = call_unpacked('HMGET', KEYS[4], ids)
local states = call_unpacked('HMGET', KEYS[5], ids)
local last = redis.call('INCRBY', KEYS[7], #ids)
local first = last - #ids
local expiry = tostring(now + tonumber(ARGV[2]))
local new_states = {}
local leases = {}
local out = { acks }
for i, id in ipairs(ids) do
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
  st.token = first + i
  st.held = i > start_now
  new_states[#new_states + 1] = id
  new_states[#new_states + 1] = format_state(st)
  leases[#leases + 1] = expiry
  leases[#leases + 1] = id
  out[#out + 1] = id
  out[#out + 1] = envs[i]
  out[#out + 1] = st.attempts
  out[#out + 1] = st.crashes
  out[#out + 1] = st.errors
  out[#out + 1] = st.token
end
call_unpacked('HSET', KEYS[5], new_states)
call_unpacked('ZADD', KEYS[6], leases)
return out
