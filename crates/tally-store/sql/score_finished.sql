-- score_finished: score every prediction of one finished match.
--
-- $1 match id, $2 home score, $3 away score, $4 points for an exact score,
-- $5 points for a correct outcome. Returns the number of rows changed.
--
-- Only rows whose scoring differs are written, so a second run (or a
-- concurrent one, which re-checks each row after waiting for its lock)
-- changes nothing and leaves scored_at as it was.
WITH verdict AS (
    SELECT q.user_id,
           flags.exact,
           flags.same_outcome AND NOT flags.exact AS correct_outcome,
           CASE WHEN flags.exact THEN $4::integer
                WHEN flags.same_outcome THEN $5::integer
                ELSE 0 END AS points
    FROM predictions AS q
    CROSS JOIN LATERAL (
        SELECT q.home_score = $2::integer AND q.away_score = $3::integer AS exact,
               sign(q.home_score - q.away_score) = sign($2::integer - $3::integer) AS same_outcome
    ) AS flags
    WHERE q.match_id = $1
)
UPDATE predictions AS p
SET points = v.points,
    exact = v.exact,
    correct_outcome = v.correct_outcome,
    voided = false,
    scored_at = now()
FROM verdict AS v
WHERE p.match_id = $1
  AND p.user_id = v.user_id
  AND (p.points, p.exact, p.correct_outcome, p.voided)
      IS DISTINCT FROM (v.points, v.exact, v.correct_outcome, false);
