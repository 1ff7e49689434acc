-- fail_job.lua: records a failed attempt (handler error, panic, timeout or
-- bad input): schedules the retry at the due time the caller computed from
-- the job's backoff, or moves the job to the dead set with the reason.
--
-- KEYS[1] jobs            hash  id -> envelope
-- KEYS[2] state           hash  id -> per-job state
-- KEYS[3] leases          zset  id by lease expiry
-- KEYS[4] scheduled       zset  id by due ms
-- KEYS[5] dead            zset  id by death ms
-- KEYS[6] dead:envelopes  hash  id -> envelope
-- KEYS[7] dead:info       hash  id -> JSON {id, error, attempts, crashes, errors, diedAtMs}
-- KEYS[8] stats           hash  counters
-- ARGV[1] id
-- ARGV[2] token
-- ARGV[3] now ms on the caller's clock
-- ARGV[4] due ms of the retry on the caller's clock (moved to Redis's clock
--         by its distance from ARGV[3]), or -1 to move the job to the dead set
-- ARGV[5] error text
-- ARGV[6] channel to PUBLISH an earlier due time on
-- ARGV[7] dead set cap: count
-- ARGV[8] dead set cap: age ms
-- Returns: 1 retry scheduled, 2 dead, 0 rejected (stale token)

local id = ARGV[1]
local now = redis_now()
local due = tonumber(ARGV[4])
if due >= 0 then
  due = math.max(now, to_redis_clock(due, tonumber(ARGV[3]), now))
end
local st = parse_state(redis.call('HGET', KEYS[2], id))
if not st or st.token == 0 or st.token ~= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZREM', KEYS[3], id)
st.errors = st.errors + 1
st.token = 0
redis.call('HINCRBY', KEYS[8], 'failed', 1)
if due >= 0 then
  redis.call('HSET', KEYS[2], id, format_state(st))
  local first = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
  redis.call('ZADD', KEYS[4], due, id)
  if first[2] == nil or due < tonumber(first[2]) then
    redis.call('PUBLISH', ARGV[6], due)
  end
  redis.call('HINCRBY', KEYS[8], 'retried', 1)
  return 1
end
local dk = { dead = KEYS[5], envs = KEYS[6], info = KEYS[7] }
bury(dk, KEYS[1], KEYS[2], id, st, ARGV[5], now)
redis.call('HINCRBY', KEYS[8], 'dead', 1)
trim_dead(dk, now, tonumber(ARGV[7]), tonumber(ARGV[8]))
return 2
