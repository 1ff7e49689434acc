-- 0003_outbox_and_repair: transactional enqueue, and the work list the
-- repairing safety net reads.
--
-- job_outbox: a producer that must not lose a job writes its envelope here,
-- in the same transaction as the data the job depends on (tally's `match
-- finish` does; the web app can too, see docs/PROTOCOL.md, "Outbox"). The
-- relay in the workers moves the rows to Redis in id order under the job id
-- `outbox-<id>` and deletes them. A relay that dies between its push and its
-- delete leaves the row behind; the next relay's push of the same id is
-- absorbed while that job is live (enqueue is idempotent per id), and the
-- worker that runs an `outbox-<id>` job deletes the row itself before it
-- acknowledges the job, so once the job is over there is no row left to
-- push again.
--
-- match_pipeline_pending: the matches whose result (or postponement, or
-- cancellation) has not yet reached the users' totals. Triggers add a match
-- whenever it enters a final status, its score changes, or a prediction that
-- still needs scoring or voiding is added to a match already final, whoever
-- writes (tally, the web app, an operator with psql). calculate_points
-- removes the match in the same transaction that writes the totals. So a row
-- that stays here long after it was marked is a job that got lost (a
-- producer that died before enqueueing, Redis that lost its last writes, a
-- flushed Redis): the cron call's repair reads the oldest ones and enqueues
-- what is missing.

CREATE TABLE job_outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The job envelope (docs/PROTOCOL.md, "Envelope") without its id: the
    -- relay sets `id` to `outbox-<id>` and fills `createdAtMs` from
    -- created_at when absent. The check refuses, in the producer's own
    -- transaction, what could never be relayed.
    envelope    jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Set by a relay that cannot enqueue the envelope (it does not decode,
    -- it is too large): the row stays for an operator and is skipped.
    rejected_at timestamptz,
    rejection   text,
    -- IS TRUE: a missing field makes the expression NULL, which a plain
    -- CHECK would let through.
    CONSTRAINT job_outbox_envelope_shape CHECK ((
        jsonb_typeof(envelope) = 'object'
        AND envelope -> 'v' = '1'::jsonb
        AND jsonb_typeof(envelope -> 'kind') = 'string'
        AND jsonb_typeof(envelope -> 'queue') = 'string'
        AND envelope ? 'payload'
        AND jsonb_typeof(envelope -> 'policy') = 'object') IS TRUE),
    CONSTRAINT job_outbox_rejection_explained CHECK ((rejected_at IS NULL) = (rejection IS NULL))
);

-- Wakes the relays when a transaction that wrote outbox rows commits
-- (notifications are delivered at commit, never for a rolled-back one).
CREATE FUNCTION job_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('job_outbox', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER job_outbox_notify
    AFTER INSERT ON job_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION job_outbox_notify();

-- Every change of a marker takes a new generation, so a calculation that
-- read an older marker never removes a newer one.
CREATE SEQUENCE match_pipeline_generation;

CREATE TABLE match_pipeline_pending (
    match_id   bigint PRIMARY KEY REFERENCES matches (id) ON DELETE CASCADE,
    -- When the match last got work: a change that needs the pipeline, or a
    -- repair that enqueued its jobs (which moves it to the back of the line).
    marked_at  timestamptz NOT NULL DEFAULT now(),
    generation bigint NOT NULL DEFAULT nextval('match_pipeline_generation')
);

-- The repair reads the oldest markers first.
CREATE INDEX match_pipeline_pending_marked_idx ON match_pipeline_pending (marked_at, match_id);

CREATE FUNCTION mark_pipeline_inserted_matches() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO match_pipeline_pending AS p (match_id)
    SELECT id FROM new_rows
    WHERE status IN ('finished', 'postponed', 'cancelled')
    ORDER BY id
    ON CONFLICT (match_id) DO UPDATE
    SET marked_at = now(), generation = nextval('match_pipeline_generation');
    RETURN NULL;
END
$$;

CREATE FUNCTION mark_pipeline_updated_matches() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO match_pipeline_pending AS p (match_id)
    SELECT n.id
    FROM new_rows AS n
    JOIN old_rows AS o ON o.id = n.id
    WHERE n.status IN ('finished', 'postponed', 'cancelled')
      AND (n.status, n.home_score, n.away_score) IS DISTINCT FROM (o.status, o.home_score, o.away_score)
    ORDER BY n.id
    ON CONFLICT (match_id) DO UPDATE
    SET marked_at = now(), generation = nextval('match_pipeline_generation');
    -- Back to scheduled or live (a postponed match rescheduled): voided
    -- predictions are pending again and count nowhere either way, so
    -- nothing is owed to the totals.
    DELETE FROM match_pipeline_pending AS p
    USING new_rows AS n
    WHERE p.match_id = n.id AND n.status IN ('scheduled', 'live');
    RETURN NULL;
END
$$;

-- A prediction added to a match that is already final (which the web app
-- should not allow, but an import or an operator might do) needs scoring
-- or voiding, and its points reaching the totals.
CREATE FUNCTION mark_pipeline_inserted_predictions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO match_pipeline_pending AS p (match_id)
    SELECT DISTINCT n.match_id
    FROM new_rows AS n
    JOIN matches AS m ON m.id = n.match_id
    WHERE (m.status = 'finished' AND n.points IS NULL)
       OR (m.status IN ('postponed', 'cancelled') AND NOT n.voided)
    ORDER BY n.match_id
    ON CONFLICT (match_id) DO UPDATE
    SET marked_at = now(), generation = nextval('match_pipeline_generation');
    RETURN NULL;
END
$$;

CREATE TRIGGER matches_pipeline_insert
    AFTER INSERT ON matches REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION mark_pipeline_inserted_matches();

CREATE TRIGGER matches_pipeline_update
    AFTER UPDATE ON matches REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION mark_pipeline_updated_matches();

CREATE TRIGGER predictions_pipeline_insert
    AFTER INSERT ON predictions REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION mark_pipeline_inserted_predictions();

-- Databases migrated with results already in them: mark the final matches
-- whose predictions still wait for scoring or voiding. (Whether the totals
-- of earlier, fully scored matches are right cannot be told from the rows;
-- `Store::rebuild_totals` recomputes them all.)
INSERT INTO match_pipeline_pending (match_id)
SELECT m.id
FROM matches AS m
WHERE (m.status = 'finished'
       AND EXISTS (SELECT 1 FROM predictions AS q WHERE q.match_id = m.id AND q.points IS NULL))
   OR (m.status IN ('postponed', 'cancelled')
       AND EXISTS (SELECT 1 FROM predictions AS q WHERE q.match_id = m.id AND NOT q.voided))
ORDER BY m.id;
