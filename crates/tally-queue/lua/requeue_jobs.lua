-- requeue_jobs.lua: graceful shutdown. Puts claimed jobs that did not finish
-- (or never started) back at the HEAD of their ready list, giving back the
-- attempt, so a drain costs a job nothing.
--
-- KEYS[1] state        hash  id -> per-job state
-- KEYS[2] leases       zset  id by lease expiry
-- KEYS[3] ready:high   list
-- KEYS[4] ready:normal
-- KEYS[5] ready:low
-- KEYS[6] wake         list
-- ARGV[1] wake marker cap
-- ARGV[2..] two per job: id, token
-- Returns: one integer per job: 1 requeued, 0 rejected (stale token)

local ready_keys = { h = KEYS[3], n = KEYS[4], l = KEYS[5] }
local out = {}
local moved = 0
for k = 2, #ARGV, 2 do
  local id = ARGV[k]
  local st = parse_state(redis.call('HGET', KEYS[1], id))
  if st and st.token ~= 0 and st.token == tonumber(ARGV[k + 1]) then
    st.token = 0
    st.held = false
    if st.attempts > 0 then
      st.attempts = st.attempts - 1
    end
    redis.call('HSET', KEYS[1], id, format_state(st))
    redis.call('ZREM', KEYS[2], id)
    redis.call('LPUSH', ready_keys[st.prio] or KEYS[4], id)
    moved = moved + 1
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
push_wake(KEYS[6], moved, tonumber(ARGV[1]))
return out
