-- calculate_points: recompute the totals of every user who predicted one match.
--
-- $1 the ids of the users who predicted the match, $2 its competition id.
-- Returns one row: changed (total rows that changed).
--
-- A full recompute of the affected users (not "add this match's points"), so
-- running it twice, late or out of order gives the same rows. The caller has
-- already locked the affected users' rows in id order, so concurrent runs for
-- other matches of the same users queue instead of overwriting each other
-- with totals computed from an older snapshot.
WITH per_competition AS (
    SELECT p.user_id,
           m.competition_id,
           coalesce(sum(p.points), 0)::integer AS points,
           (count(*) FILTER (WHERE p.exact))::integer AS exact_scores,
           (count(*) FILTER (WHERE p.correct_outcome))::integer AS correct_outcomes,
           count(p.points)::integer AS predictions_scored
    FROM unnest($1::bigint[]) AS a (user_id)
    JOIN predictions AS p ON p.user_id = a.user_id
    JOIN matches AS m ON m.id = p.match_id
    GROUP BY p.user_id, m.competition_id
),
fresh AS (
    SELECT $2::bigint AS board_id, user_id, points, exact_scores, correct_outcomes, predictions_scored
    FROM per_competition
    WHERE competition_id = $2
    UNION ALL
    SELECT 0::bigint, user_id, sum(points)::integer, sum(exact_scores)::integer,
           sum(correct_outcomes)::integer, sum(predictions_scored)::integer
    FROM per_competition
    GROUP BY user_id
),
-- Plain UPDATE and INSERT rather than INSERT .. ON CONFLICT (cheaper per
-- row): nobody else can insert these keys meanwhile, every writer of
-- user_totals holds the users' locks.
updated AS (
    UPDATE user_totals AS t
    SET points = f.points,
        exact_scores = f.exact_scores,
        correct_outcomes = f.correct_outcomes,
        predictions_scored = f.predictions_scored,
        updated_at = now()
    FROM fresh AS f
    WHERE t.board_id = f.board_id
      AND t.user_id = f.user_id
      AND (t.points, t.exact_scores, t.correct_outcomes, t.predictions_scored)
          IS DISTINCT FROM (f.points, f.exact_scores, f.correct_outcomes, f.predictions_scored)
    RETURNING t.board_id, t.user_id
),
inserted AS (
    INSERT INTO user_totals (board_id, user_id, points, exact_scores, correct_outcomes, predictions_scored)
    SELECT f.board_id, f.user_id, f.points, f.exact_scores, f.correct_outcomes, f.predictions_scored
    FROM fresh AS f
    WHERE NOT EXISTS (
        SELECT 1 FROM user_totals AS t
        WHERE t.board_id = f.board_id AND t.user_id = f.user_id)
    RETURNING board_id, user_id
),
changed AS (
    SELECT board_id, user_id FROM updated
    UNION ALL
    SELECT board_id, user_id FROM inserted
),
-- One work-list row for the whole match (none when nothing changed).
logged AS (
    INSERT INTO leaderboard_changes (board_ids, user_ids)
    SELECT array_agg(board_id), array_agg(user_id)
    FROM changed
    HAVING count(*) > 0
    RETURNING cardinality(board_ids) AS pairs
)
SELECT coalesce((SELECT pairs FROM logged), 0)::bigint AS changed;
