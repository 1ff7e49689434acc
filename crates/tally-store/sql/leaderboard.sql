-- leaderboard: one page of a board in display order.
--
-- $1 board id (0 overall, else competition id), $2 limit, $3 offset.
-- Walks leaderboard_entries_order_idx; the rank is one primary-key lookup.
SELECT e.user_id,
       u.username,
       e.points::bigint,
       e.exact_scores::bigint,
       e.correct_outcomes::bigint,
       e.predictions_scored::bigint,
       r.rank::bigint
FROM leaderboard_entries AS e
JOIN leaderboard_ranks AS r ON r.board_id = e.board_id AND r.points = e.points
JOIN users AS u ON u.id = e.user_id
WHERE e.board_id = $1
ORDER BY e.points DESC, e.user_id
LIMIT $2 OFFSET $3;
