-- promote_due.lua: moves scheduled jobs (delayed jobs, retries) whose due
-- time has come to the tail of their ready list and wakes idle workers.
-- Idempotent: every worker process runs a promoter; concurrent calls simply
-- find nothing left to move.
--
-- KEYS[1] scheduled    zset  id by due ms
-- KEYS[2] state        hash  id -> per-job state
-- KEYS[3] jobs         hash  id -> envelope
-- KEYS[4] ready:high   list
-- KEYS[5] ready:normal
-- KEYS[6] ready:low
-- KEYS[7] wake         list
-- ARGV[1] unused (was the caller's clock; due times are on Redis's clock)
-- ARGV[2] max jobs to move in this call
-- ARGV[3] wake marker cap
-- Returns: { moved count, next due ms or -1 when nothing is scheduled,
--            Redis's now ms } (the caller sleeps next due - now, measured
--            on Redis's clock, so its own clock's skew does not matter)

local now = redis_now()
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
if #ids > 0 then
  local ready = { h = {}, n = {}, l = {} }
  local ready_keys = { h = KEYS[4], n = KEYS[5], l = KEYS[6] }
  local states = call_unpacked('HMGET', KEYS[2], ids)
  for k, id in ipairs(ids) do
    local st = parse_state(states[k])
    local prio
    if st then
      prio = st.prio
    else
      -- Scheduled by a producer that wrote no state: read the envelope.
      prio = envelope_info(redis.call('HGET', KEYS[3], id))
    end
    local list = ready[prio] or ready.n
    list[#list + 1] = id
  end
  call_unpacked('ZREM', KEYS[1], ids)
  for _, p in ipairs({ 'h', 'n', 'l' }) do
    if #ready[p] > 0 then
      call_unpacked('RPUSH', ready_keys[p], ready[p])
    end
  end
  push_wake(KEYS[7], #ids, tonumber(ARGV[3]))
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local next_due = -1
if nxt[2] ~= nil then
  next_due = math.floor(tonumber(nxt[2]))
end
return { #ids, next_due, now }
