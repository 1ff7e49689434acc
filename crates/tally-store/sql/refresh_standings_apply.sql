-- refresh_standings_apply: recompute the league tables of some competitions.
--
-- $1 competition ids (claimed from standings_dirty). Returns one row:
-- upserted, removed. A competition's teams are those of its fixtures, so a
-- table lists every team from the first fixture on, with zeros until played.
-- Order: points, goal difference, goals scored, then team name (and id, so
-- two teams never share a position even with equal names).
WITH fixtures AS (
    SELECT competition_id, home_team_id, away_team_id, status, home_score, away_score
    FROM matches
    WHERE competition_id = ANY($1::bigint[])
),
entrants AS (
    SELECT competition_id, home_team_id AS team_id FROM fixtures
    UNION
    SELECT competition_id, away_team_id FROM fixtures
),
results AS (
    SELECT competition_id, home_team_id AS team_id, home_score AS gf, away_score AS ga
    FROM fixtures WHERE status = 'finished'
    UNION ALL
    SELECT competition_id, away_team_id, away_score, home_score
    FROM fixtures WHERE status = 'finished'
),
totals AS (
    SELECT en.competition_id,
           en.team_id,
           count(r.gf)::integer AS played,
           (count(*) FILTER (WHERE r.gf > r.ga))::integer AS won,
           (count(*) FILTER (WHERE r.gf = r.ga))::integer AS drawn,
           (count(*) FILTER (WHERE r.gf < r.ga))::integer AS lost,
           coalesce(sum(r.gf), 0)::integer AS goals_for,
           coalesce(sum(r.ga), 0)::integer AS goals_against
    FROM entrants AS en
    LEFT JOIN results AS r ON r.competition_id = en.competition_id AND r.team_id = en.team_id
    GROUP BY en.competition_id, en.team_id
),
ranked AS (
    SELECT t.*,
           3 * t.won + t.drawn AS points,
           row_number() OVER (
               PARTITION BY t.competition_id
               ORDER BY 3 * t.won + t.drawn DESC,
                        t.goals_for - t.goals_against DESC,
                        t.goals_for DESC,
                        tm.name,
                        tm.id)::integer AS position
    FROM totals AS t
    JOIN teams AS tm ON tm.id = t.team_id
),
removed AS (
    DELETE FROM standings AS s
    WHERE s.competition_id = ANY($1::bigint[])
      AND NOT EXISTS (
          SELECT 1 FROM ranked AS r
          WHERE r.competition_id = s.competition_id AND r.team_id = s.team_id)
    RETURNING 1
),
upserted AS (
    INSERT INTO standings AS s
        (competition_id, team_id, position, played, won, drawn, lost, goals_for, goals_against, points)
    SELECT competition_id, team_id, position, played, won, drawn, lost, goals_for, goals_against, points
    FROM ranked
    ORDER BY competition_id, team_id
    ON CONFLICT (competition_id, team_id) DO UPDATE
    SET position = excluded.position,
        played = excluded.played,
        won = excluded.won,
        drawn = excluded.drawn,
        lost = excluded.lost,
        goals_for = excluded.goals_for,
        goals_against = excluded.goals_against,
        points = excluded.points
    WHERE (s.position, s.played, s.won, s.drawn, s.lost, s.goals_for, s.goals_against, s.points)
          IS DISTINCT FROM (excluded.position, excluded.played, excluded.won, excluded.drawn,
                            excluded.lost, excluded.goals_for, excluded.goals_against, excluded.points)
    RETURNING 1
)
SELECT (SELECT count(*) FROM upserted) AS upserted,
       (SELECT count(*) FROM removed) AS removed;
