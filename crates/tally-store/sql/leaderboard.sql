-- leaderboard: one page of a board in display order.
--
-- $1 board id (0 overall, else competition id), $2 limit, $3 offset.
--
-- A deep page does not walk every entry above it: leaderboard_ranks says
-- where each points value starts (rank = 1 + users with more points, kept
-- in the same transaction as the entries), so the page starts at the points
-- value holding position $3 + 1 and skips only the entries of that value
-- before it. The skipped rows are read from the index alone (board, points,
-- user); the users and the other columns are joined for the page's rows
-- only. Same rows, same order as `ORDER BY points DESC, user_id OFFSET $3`.
WITH start AS (
    SELECT r.points, r.rank
    FROM leaderboard_ranks AS r
    WHERE r.board_id = $1::bigint
      AND r.users > 0
      AND r.rank <= $3::bigint + 1
    ORDER BY r.points
    LIMIT 1
), page AS (
    SELECT e.board_id, e.user_id, e.points
    FROM leaderboard_entries AS e
    WHERE e.board_id = $1::bigint
      AND e.points <= COALESCE((SELECT points FROM start), 2147483647)
    ORDER BY e.points DESC, e.user_id
    LIMIT $2::bigint
    OFFSET $3::bigint - COALESCE((SELECT rank - 1 FROM start), 0)
)
SELECT e.user_id,
       u.username,
       e.points::bigint,
       e.exact_scores::bigint,
       e.correct_outcomes::bigint,
       e.predictions_scored::bigint,
       r.rank::bigint
FROM page
JOIN leaderboard_entries AS e ON e.board_id = page.board_id AND e.user_id = page.user_id
JOIN leaderboard_ranks AS r ON r.board_id = e.board_id AND r.points = e.points
JOIN users AS u ON u.id = e.user_id
ORDER BY page.points DESC, page.user_id;
