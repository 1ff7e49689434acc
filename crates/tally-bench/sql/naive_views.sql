-- naive_views: the baseline the benchmark measures tally's refresh against.
--
-- The textbook design: leaderboards and league tables as materialized views
-- aggregating all predictions and matches, refreshed with REFRESH
-- MATERIALIZED VIEW. Created WITH NO DATA; only the benchmark populates
-- them. Not part of the migrations: nothing in production reads them.
CREATE MATERIALIZED VIEW IF NOT EXISTS naive_leaderboard AS
WITH per_board AS (
    SELECT coalesce(m.competition_id, 0) AS board_id,
           p.user_id,
           coalesce(sum(p.points), 0)::integer AS points,
           (count(*) FILTER (WHERE p.exact))::integer AS exact_scores,
           (count(*) FILTER (WHERE p.correct_outcome))::integer AS correct_outcomes,
           count(p.points)::integer AS predictions_scored
    FROM predictions AS p
    JOIN matches AS m ON m.id = p.match_id
    GROUP BY GROUPING SETS ((m.competition_id, p.user_id), (p.user_id))
)
SELECT board_id,
       user_id,
       points,
       exact_scores,
       correct_outcomes,
       predictions_scored,
       rank() OVER (PARTITION BY board_id ORDER BY points DESC)::integer AS rank
FROM per_board
WHERE predictions_scored > 0
WITH NO DATA;

CREATE INDEX IF NOT EXISTS naive_leaderboard_order_idx
    ON naive_leaderboard (board_id, points DESC, user_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS naive_standings AS
WITH results AS (
    SELECT competition_id, home_team_id AS team_id, home_score AS gf, away_score AS ga
    FROM matches WHERE status = 'finished'
    UNION ALL
    SELECT competition_id, away_team_id, away_score, home_score
    FROM matches WHERE status = 'finished'
),
totals AS (
    SELECT competition_id,
           team_id,
           count(*)::integer AS played,
           (count(*) FILTER (WHERE gf > ga))::integer AS won,
           (count(*) FILTER (WHERE gf = ga))::integer AS drawn,
           (count(*) FILTER (WHERE gf < ga))::integer AS lost,
           sum(gf)::integer AS goals_for,
           sum(ga)::integer AS goals_against
    FROM results
    GROUP BY competition_id, team_id
)
SELECT t.*,
       3 * t.won + t.drawn AS points,
       row_number() OVER (
           PARTITION BY t.competition_id
           ORDER BY 3 * t.won + t.drawn DESC, t.goals_for - t.goals_against DESC, t.goals_for DESC, tm.name
       )::integer AS position
FROM totals AS t
JOIN teams AS tm ON tm.id = t.team_id
WITH NO DATA;

CREATE INDEX IF NOT EXISTS naive_standings_order_idx ON naive_standings (competition_id, position);
