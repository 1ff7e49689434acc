-- refresh_leaderboard_apply: publish the current totals of claimed pairs.
--
-- $1 board ids, $2 user ids (parallel arrays of the claimed pairs).
-- Returns one row: upserted, removed (entries), boards (bigint[] whose
-- points histogram changed and need re-ranking).
--
-- Runs after the claim, so its snapshot includes every calculate_points
-- whose work-list rows the claim consumed (and maybe newer ones: publishing
-- newer committed totals early is harmless, their own row republishes them).
WITH claimed AS (
    SELECT c.board_id, c.user_id
    FROM unnest($1::bigint[], $2::bigint[]) AS c (board_id, user_id)
),
change AS (
    SELECT c.board_id,
           c.user_id,
           e.points AS old_points,
           t.points AS new_points,
           t.exact_scores,
           t.correct_outcomes,
           t.predictions_scored,
           coalesce(t.predictions_scored, 0) > 0 AS listed
    FROM claimed AS c
    LEFT JOIN leaderboard_entries AS e ON e.board_id = c.board_id AND e.user_id = c.user_id
    LEFT JOIN user_totals AS t ON t.board_id = c.board_id AND t.user_id = c.user_id
),
-- Plain UPDATE / INSERT rather than INSERT .. ON CONFLICT (cheaper per
-- row): refreshes are serialised, so nobody inserts these keys meanwhile.
updated AS (
    UPDATE leaderboard_entries AS e
    SET points = c.new_points,
        exact_scores = c.exact_scores,
        correct_outcomes = c.correct_outcomes,
        predictions_scored = c.predictions_scored
    FROM change AS c
    WHERE c.listed
      AND c.old_points IS NOT NULL
      AND e.board_id = c.board_id
      AND e.user_id = c.user_id
      AND (e.points, e.exact_scores, e.correct_outcomes, e.predictions_scored)
          IS DISTINCT FROM (c.new_points, c.exact_scores, c.correct_outcomes, c.predictions_scored)
    RETURNING 1
),
inserted AS (
    INSERT INTO leaderboard_entries
        (board_id, user_id, points, exact_scores, correct_outcomes, predictions_scored)
    SELECT board_id, user_id, new_points, exact_scores, correct_outcomes, predictions_scored
    FROM change
    WHERE listed AND old_points IS NULL
    RETURNING 1
),
removed AS (
    DELETE FROM leaderboard_entries AS e
    USING change AS c
    WHERE NOT c.listed
      AND c.old_points IS NOT NULL
      AND e.board_id = c.board_id
      AND e.user_id = c.user_id
    RETURNING 1
),
delta AS (
    SELECT board_id, points, sum(diff)::integer AS diff
    FROM (
        SELECT board_id, old_points AS points, -1 AS diff FROM change WHERE old_points IS NOT NULL
        UNION ALL
        SELECT board_id, new_points, 1 FROM change WHERE listed
    ) AS moves
    GROUP BY board_id, points
    HAVING sum(diff) <> 0
),
-- Existing histogram rows move by their delta; new points values are
-- inserted. Not INSERT .. ON CONFLICT: its CHECK (users >= 0) would be
-- evaluated on the proposed (negative delta) row before the conflict is seen.
-- Refreshes are serialised, so nobody else inserts these keys meanwhile.
moved AS (
    UPDATE leaderboard_ranks AS r
    SET users = r.users + d.diff
    FROM delta AS d
    WHERE r.board_id = d.board_id AND r.points = d.points
    RETURNING r.board_id
),
added AS (
    INSERT INTO leaderboard_ranks (board_id, points, users)
    SELECT d.board_id, d.points, d.diff
    FROM delta AS d
    WHERE NOT EXISTS (
        SELECT 1 FROM leaderboard_ranks AS r
        WHERE r.board_id = d.board_id AND r.points = d.points)
    ORDER BY d.board_id, d.points
    RETURNING board_id
),
counted AS (
    SELECT board_id FROM moved
    UNION
    SELECT board_id FROM added
)
SELECT (SELECT count(*) FROM updated) + (SELECT count(*) FROM inserted) AS upserted,
       (SELECT count(*) FROM removed) AS removed,
       coalesce((SELECT array_agg(DISTINCT board_id) FROM counted), '{}'::bigint[]) AS boards;
