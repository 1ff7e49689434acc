-- reap_expired.lua: recovers jobs whose lease expired (their worker was
-- killed or lost Redis for longer than a lease). Each goes back to the HEAD
-- of its ready list with its crash count raised and its token voided, so the
-- lost worker can no longer finish it; a job whose crashes reach its max
-- attempts goes to the dead set instead ("worker lost N times").
--
-- A job the lost worker only held (claimed ahead, not started as far as
-- Redis knows) gets a held loss instead of a crash: it did not kill the
-- worker. A worker that starts a held job does not tell Redis (that would
-- cost a write per job), so a job that kills its worker right after leaving
-- the buffer is counted as held; it still ends dead, after
-- HELD_LOSS_FACTOR x max attempts such losses.
--
-- KEYS[1]  leases          zset  id by lease expiry
-- KEYS[2]  state           hash  id -> per-job state
-- KEYS[3]  jobs            hash  id -> envelope
-- KEYS[4]  ready:high      list
-- KEYS[5]  ready:normal
-- KEYS[6]  ready:low
-- KEYS[7]  wake            list
-- KEYS[8]  dead            zset
-- KEYS[9]  dead:envelopes  hash
-- KEYS[10] dead:info       hash
-- KEYS[11] stats           hash
-- ARGV[1] unused (was the caller's clock; leases run on Redis's clock)
-- ARGV[2] max jobs per call
-- ARGV[3] wake marker cap
-- ARGV[4] dead set cap: count
-- ARGV[5] dead set cap: age ms
-- Returns: five per expired job: id, 1 recovered or 2 dead, crashes so far,
--          kind ('' when the envelope is unreadable), attempt that was lost

local HELD_LOSS_FACTOR = 3
local now = redis_now()
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
if #ids == 0 then
  return {}
end
local ready_keys = { h = KEYS[4], n = KEYS[5], l = KEYS[6] }
local dk = { dead = KEYS[8], envs = KEYS[9], info = KEYS[10] }
local out = {}
local recovered = 0
local died = 0
call_unpacked('ZREM', KEYS[1], ids)
for _, id in ipairs(ids) do
  local st = parse_state(redis.call('HGET', KEYS[2], id))
  local env = redis.call('HGET', KEYS[3], id)
  local env_prio, max_attempts, kind = envelope_info(env)
  st = st or { token = 0, attempts = 1, crashes = 0, errors = 0, prio = env_prio }
  local reason = nil
  if st.held then
    st.held = false
    st.held_losses = st.held_losses + 1
    if st.held_losses >= HELD_LOSS_FACTOR * max_attempts then
      reason = 'worker lost ' .. st.held_losses .. ' times while holding the job (lease expired each time)'
    end
  else
    st.crashes = st.crashes + 1
    if st.crashes >= max_attempts then
      reason = 'worker lost ' .. st.crashes .. ' times (lease expired each time)'
    end
  end
  st.token = 0
  if reason then
    bury(dk, KEYS[3], KEYS[2], id, st, reason, now)
    died = died + 1
    out[#out + 1] = id
    out[#out + 1] = 2
  else
    redis.call('HSET', KEYS[2], id, format_state(st))
    redis.call('LPUSH', ready_keys[st.prio] or KEYS[5], id)
    recovered = recovered + 1
    out[#out + 1] = id
    out[#out + 1] = 1
  end
  out[#out + 1] = st.crashes
  out[#out + 1] = kind
  out[#out + 1] = st.attempts
end
push_wake(KEYS[7], recovered, tonumber(ARGV[3]))
if recovered > 0 then
  redis.call('HINCRBY', KEYS[11], 'recovered', recovered)
end
if died > 0 then
  redis.call('HINCRBY', KEYS[11], 'dead', died)
  trim_dead(dk, now, tonumber(ARGV[4]), tonumber(ARGV[5]))
end
return out
