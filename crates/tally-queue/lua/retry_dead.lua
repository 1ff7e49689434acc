-- retry_dead.lua: sends dead jobs back to the tail of their ready list with
-- fresh attempt, crash and error counts.
--
-- KEYS[1] dead            zset  id by death ms
-- KEYS[2] dead:envelopes  hash
-- KEYS[3] dead:info       hash
-- KEYS[4] jobs            hash
-- KEYS[5] state           hash
-- KEYS[6] ready:high      list
-- KEYS[7] ready:normal
-- KEYS[8] ready:low
-- KEYS[9] wake            list
-- ARGV[1] wake marker cap
-- ARGV[2] 'ids' (then ARGV[3..] are job ids) or 'oldest' (then ARGV[3] is
--         how many of the oldest dead jobs to retry, after skipping the
--         ARGV[4] oldest, which the caller could not retry before)
-- Returns: { retried count, skipped count } (skipped: not dead, or no
--          envelope to retry, e.g. an id without a stored envelope)

local ids
if ARGV[2] == 'oldest' then
  local skip = tonumber(ARGV[4] or '0')
  ids = redis.call('ZRANGE', KEYS[1], skip, skip + tonumber(ARGV[3]) - 1)
else
  ids = {}
  for i = 3, #ARGV do
    ids[#ids + 1] = ARGV[i]
  end
end
local ready_keys = { h = KEYS[6], n = KEYS[7], l = KEYS[8] }
local retried = 0
local skipped = 0
for _, id in ipairs(ids) do
  local env = redis.call('HGET', KEYS[2], id)
  if env and redis.call('ZSCORE', KEYS[1], id) then
    local prio = envelope_info(env)
    redis.call('HSET', KEYS[4], id, env)
    redis.call('HDEL', KEYS[5], id)
    redis.call('RPUSH', ready_keys[prio], id)
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
    retried = retried + 1
  else
    skipped = skipped + 1
  end
end
push_wake(KEYS[9], retried, tonumber(ARGV[1]))
return { retried, skipped }
