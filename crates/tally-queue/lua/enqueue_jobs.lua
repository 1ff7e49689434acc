-- enqueue_jobs.lua: adds one or more jobs to a queue, now or at a due time,
-- coalescing a job into a waiting one with the same dedup key.
--
-- KEYS[1] jobs        hash  id -> envelope JSON
-- KEYS[2] state       hash  id -> per-job state (see _shared.lua)
-- KEYS[3] scheduled   zset  id by due ms (delayed jobs and retries)
-- KEYS[4] dedup       hash  dedup key -> id of the waiting job
-- KEYS[5] stats       hash  counters
-- KEYS[6] wake        list  wake markers for idle workers
-- KEYS[7] ready:high  list  ids
-- KEYS[8] ready:normal
-- KEYS[9] ready:low
-- ARGV[1] now, ms since the epoch, on the caller's clock: due times are
--         moved to Redis's clock by their distance from it (a delay runs on
--         Redis's clock whatever the caller's skew)
-- ARGV[2] channel to PUBLISH a due time on when it is earlier than any scheduled
-- ARGV[3] wake marker cap
-- ARGV[4..] five per job: id, envelope, prio (h|n|l), due ms (<= now: ready now),
--           dedup key ('' for none)
-- Returns: two per job, in order: the id the job lives under (the waiting
--          job's id when coalesced), and 1 if coalesced else 0.
--
-- Idempotent per id: a job whose id is already live (waiting, scheduled or
-- running) is not added again and is reported as coalesced into itself, so a
-- producer may resend a batch after a lost reply. A dedup entry whose job is
-- gone (it dangles) is replaced, never followed.

local caller_now = tonumber(ARGV[1])
local now = redis_now()
local cap = tonumber(ARGV[3])
local out = {}
local envs = {}
local states = {}
local ready = { h = {}, n = {}, l = {} }
local ready_keys = { h = KEYS[7], n = KEYS[8], l = KEYS[9] }
local sched = {}
local earliest = nil
local added = 0
local ready_count = 0
-- Ids added by this call (their envelopes are written at the end).
local live = {}
local function is_live(id)
  return live[id] or redis.call('HEXISTS', KEYS[1], id) == 1
end

local i = 4
while i <= #ARGV do
  local id, env, prio, due, dkey = ARGV[i], ARGV[i + 1], ARGV[i + 2], to_redis_clock(tonumber(ARGV[i + 3]), caller_now, now), ARGV[i + 4]
  i = i + 5
  local existing = false
  if dkey ~= '' then
    existing = redis.call('HGET', KEYS[4], dkey)
    if existing and not is_live(existing) then
      existing = false
    end
  end
  if not existing and is_live(id) then
    existing = id
  end
  if existing then
    out[#out + 1] = existing
    out[#out + 1] = 1
  else
    if ready[prio] == nil then
      prio = 'n'
    end
    if dkey ~= '' then
      redis.call('HSET', KEYS[4], dkey, id)
    end
    live[id] = true
    envs[#envs + 1] = id
    envs[#envs + 1] = env
    local record = nil
    if due > now then
      sched[#sched + 1] = due
      sched[#sched + 1] = id
      if earliest == nil or due < earliest then
        earliest = due
      end
      -- The promoter needs the priority without decoding the envelope.
      record = '0:0:0:0:' .. prio
    else
      local list = ready[prio]
      list[#list + 1] = id
      ready_count = ready_count + 1
      if dkey ~= '' then
        record = '0:0:0:0:' .. prio
      end
    end
    if dkey ~= '' then
      -- Remembered so that the claim can clear the dedup entry.
      record = record .. ':' .. dkey
    end
    if record then
      states[#states + 1] = id
      states[#states + 1] = record
    end
    added = added + 1
    out[#out + 1] = id
    out[#out + 1] = 0
  end
end

if #envs > 0 then
  call_unpacked('HSET', KEYS[1], envs)
end
if #states > 0 then
  call_unpacked('HSET', KEYS[2], states)
end
if #sched > 0 then
  local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  call_unpacked('ZADD', KEYS[3], sched)
  if first[2] == nil or earliest < tonumber(first[2]) then
    -- Promoters sleep until the earliest due time they know of: tell them.
    redis.call('PUBLISH', ARGV[2], earliest)
  end
end
for _, p in ipairs({ 'h', 'n', 'l' }) do
  if #ready[p] > 0 then
    call_unpacked('RPUSH', ready_keys[p], ready[p])
  end
end
push_wake(KEYS[6], ready_count, cap)
if added > 0 then
  redis.call('HINCRBY', KEYS[5], 'enqueued', added)
end
return out
