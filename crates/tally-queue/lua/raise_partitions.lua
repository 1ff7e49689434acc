-- raise_partitions.lua: raises a queue's partition count, never lowers it.
--
-- KEYS[1] control (partition 0)  hash  field `partitions`: the count
-- ARGV[1] the count wanted (1 to ARGV[2], checked by the caller)
-- ARGV[2] the most partitions a queue may have (MAX_PARTITIONS)
-- Returns: { the count before, the count now in force }. The count before
--   is -1 when the field held something that is not a count (1 to ARGV[2]):
--   that is overwritten, since no tally client routes by it.
--
-- One script, so two callers raising at once cannot lower each other's
-- count: the highest wins.

local wanted = tonumber(ARGV[1])
local raw = redis.call('HGET', KEYS[1], 'partitions')
local before = 1
if raw then
  before = tonumber(raw)
  if before == nil or before < 1 or before > tonumber(ARGV[2]) or before % 1 ~= 0 then
    before = -1
  end
end
if wanted > before then
  redis.call('HSET', KEYS[1], 'partitions', wanted)
  return { before, wanted }
end
return { before, before }
