-- refresh_leaderboard_ranks: recompute the rank of each points value.
--
-- $1 board ids to re-rank. Returns the number of rank rows changed.
-- rank = 1 + number of users on the board with more points, so ties share a
-- rank and the next rank skips (1, 2, 2, 4). Touches tens of rows per board.
UPDATE leaderboard_ranks AS r
SET rank = ranked.rank
FROM (
    SELECT board_id,
           points,
           (1 + coalesce(sum(users) OVER (
               PARTITION BY board_id ORDER BY points DESC
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0))::integer AS rank
    FROM leaderboard_ranks
    WHERE board_id = ANY($1::bigint[])
) AS ranked
WHERE r.board_id = ranked.board_id
  AND r.points = ranked.points
  AND r.rank <> ranked.rank;
