-- purge_dead.lua: deletes dead jobs for good.
--
-- KEYS[1] dead            zset  id by death ms
-- KEYS[2] dead:envelopes  hash
-- KEYS[3] dead:info       hash
-- ARGV[1] 'ids' (then ARGV[2..] are job ids), 'older' (then ARGV[2] is an
--         age in ms: jobs that died longer ago than that by Redis's clock
--         go, at most 5000 a call) or 'all'
-- Returns: the number of dead jobs deleted

local ids
if ARGV[1] == 'all' then
  local n = redis.call('ZCARD', KEYS[1])
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  return n
elseif ARGV[1] == 'older' then
  local cutoff = redis_now() - tonumber(ARGV[2])
  ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. cutoff, 'LIMIT', 0, 5000)
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
call_unpacked('ZREM', KEYS[1], ids)
call_unpacked('HDEL', KEYS[2], ids)
call_unpacked('HDEL', KEYS[3], ids)
return #ids
