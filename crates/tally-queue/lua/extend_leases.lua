-- extend_leases.lua: the heartbeat. Pushes the lease expiry of running jobs
-- forward, a batch per call, only for the current claim's token.
--
-- KEYS[1] state   hash  id -> per-job state
-- KEYS[2] leases  zset  id by lease expiry
-- ARGV[1] lease ms (the new expiry is Redis's now + lease)
-- ARGV[2..] two per job: id, token
-- Returns: one integer per job: 1 extended, 0 rejected (the worker lost the
--          job: it was recovered by the reaper, or finished elsewhere)

local expiry = redis_now() + tonumber(ARGV[1])
local ids = {}
for i = 2, #ARGV, 2 do
  ids[#ids + 1] = ARGV[i]
end
local states = call_unpacked('HMGET', KEYS[1], ids)
local leases = {}
local out = {}
for k, id in ipairs(ids) do
  local st = parse_state(states[k])
  if st and st.token ~= 0 and st.token == tonumber(ARGV[2 * k + 1]) then
    leases[#leases + 1] = expiry
    leases[#leases + 1] = id
    out[k] = 1
  else
    out[k] = 0
  end
end
if #leases > 0 then
  call_unpacked('ZADD', KEYS[2], leases, 'XX')
end
return out
