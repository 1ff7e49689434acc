-- complete_jobs.lua: acknowledges finished jobs, a batch per call. A job whose
-- token is not the current claim's (stale worker, job since recovered) is
-- left alone. Nothing per job remains afterwards; only a counter grows.
-- (Workers usually send their acknowledgements with the next claim instead,
-- see claim_jobs.lua; this script is for when there is nothing to claim.)
--
-- KEYS[1] jobs    hash  id -> envelope
-- KEYS[2] state   hash  id -> per-job state
-- KEYS[3] leases  zset  id by lease expiry
-- KEYS[4] stats   hash  counters
-- ARGV    two per job: id, token
-- Returns: one integer per job, in order: 1 completed, 0 rejected (stale
--          token), 2 already finished (see complete_batch in _shared.lua)

return complete_batch(KEYS[1], KEYS[2], KEYS[3], KEYS[4], 1)
