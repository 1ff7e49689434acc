-- standings: the published league table of one competition, top first.
--
-- $1 competition id.
SELECT s.position::bigint,
       s.team_id,
       t.name,
       s.played::bigint,
       s.won::bigint,
       s.drawn::bigint,
       s.lost::bigint,
       s.goals_for::bigint,
       s.goals_against::bigint,
       (s.goals_for - s.goals_against)::bigint,
       s.points::bigint
FROM standings AS s
JOIN teams AS t ON t.id = s.team_id
WHERE s.competition_id = $1
ORDER BY s.position;
