-- rebuild_totals: recompute every user's totals from all predictions.
--
-- No parameters. Returns one row: changed (total rows inserted, updated or
-- removed). The repair path and the bulk path after seeding; the caller has
-- locked all users in id order first. Only changed rows are written and
-- listed in leaderboard_changes, so on consistent data it writes nothing.
-- It also removes the repair markers (match_pipeline_pending) of every final
-- match whose predictions are all scored or voided in the same snapshot the
-- totals are computed from: their points are in these totals now.
WITH per_competition AS (
    SELECT p.user_id,
           m.competition_id,
           coalesce(sum(p.points), 0)::integer AS points,
           (count(*) FILTER (WHERE p.exact))::integer AS exact_scores,
           (count(*) FILTER (WHERE p.correct_outcome))::integer AS correct_outcomes,
           count(p.points)::integer AS predictions_scored
    FROM predictions AS p
    JOIN matches AS m ON m.id = p.match_id
    GROUP BY p.user_id, m.competition_id
),
fresh AS (
    SELECT competition_id AS board_id, user_id, points, exact_scores, correct_outcomes, predictions_scored
    FROM per_competition
    UNION ALL
    SELECT 0::bigint, user_id, sum(points)::integer, sum(exact_scores)::integer,
           sum(correct_outcomes)::integer, sum(predictions_scored)::integer
    FROM per_competition
    GROUP BY user_id
),
changed AS (
    INSERT INTO user_totals AS t (board_id, user_id, points, exact_scores, correct_outcomes, predictions_scored)
    SELECT board_id, user_id, points, exact_scores, correct_outcomes, predictions_scored
    FROM fresh
    ORDER BY board_id, user_id
    ON CONFLICT (board_id, user_id) DO UPDATE
    SET points = excluded.points,
        exact_scores = excluded.exact_scores,
        correct_outcomes = excluded.correct_outcomes,
        predictions_scored = excluded.predictions_scored,
        updated_at = now()
    WHERE (t.points, t.exact_scores, t.correct_outcomes, t.predictions_scored)
          IS DISTINCT FROM (excluded.points, excluded.exact_scores, excluded.correct_outcomes, excluded.predictions_scored)
    RETURNING t.board_id, t.user_id
),
stale AS (
    DELETE FROM user_totals AS t
    WHERE NOT EXISTS (SELECT 1 FROM fresh AS f WHERE f.board_id = t.board_id AND f.user_id = t.user_id)
    RETURNING t.board_id, t.user_id
),
all_changes AS (
    SELECT board_id, user_id FROM changed
    UNION ALL
    SELECT board_id, user_id FROM stale
),
settled AS (
    DELETE FROM match_pipeline_pending AS pp
    USING (
        SELECT p.match_id, p.generation
        FROM match_pipeline_pending AS p
        JOIN matches AS m ON m.id = p.match_id
        WHERE (m.status = 'finished'
               AND NOT EXISTS (SELECT 1 FROM predictions AS q WHERE q.match_id = m.id AND q.points IS NULL))
           OR (m.status IN ('postponed', 'cancelled')
               AND NOT EXISTS (SELECT 1 FROM predictions AS q WHERE q.match_id = m.id AND NOT q.voided))
    ) AS s
    -- A marker renewed meanwhile (new generation) is for newer work: kept.
    WHERE pp.match_id = s.match_id AND pp.generation = s.generation
    RETURNING pp.match_id
),
logged AS (
    INSERT INTO leaderboard_changes (board_ids, user_ids)
    SELECT array_agg(board_id), array_agg(user_id)
    FROM all_changes
    HAVING count(*) > 0
    RETURNING cardinality(board_ids) AS pairs
)
SELECT coalesce((SELECT pairs FROM logged), 0)::bigint AS changed;
