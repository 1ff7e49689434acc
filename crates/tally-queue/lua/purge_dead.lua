-- purge_dead.lua: deletes dead jobs for good.
--
-- KEYS[1] dead            zset  id by death ms
-- KEYS[2] dead:envelopes  hash
-- KEYS[3] dead:info       hash
-- ARGV[1] 'ids' (then ARGV[2..] are job ids), 'before' (then ARGV[2] is a
--         death time in ms: jobs that died before it go) or 'all'
-- Returns: the number of dead jobs deleted

local ids
if ARGV[1] == 'all' then
  local n = redis.call('ZCARD', KEYS[1])
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  return n
elseif ARGV[1] == 'before' then
  ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2], 'LIMIT', 0, 5000)
else
  ids = {}
  for i = 2, #ARGV do
    if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
      ids[#ids + 1] = ARGV[i]
    end
  end
end
if #ids == 0 then
  return 0
end
redis.call('ZREM', KEYS[1], unpack(ids))
redis.call('HDEL', KEYS[2], unpack(ids))
redis.call('HDEL', KEYS[3], unpack(ids))
return #ids
