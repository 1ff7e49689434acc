-- 0002_leaderboards_and_standings: incremental totals and the published
-- leaderboards and league tables.
--
-- Data flows in three committed steps, each idempotent:
--
--   predictions.points --calculate_points--> user_totals (+ leaderboard_changes)
--   user_totals       --refresh_views-----> leaderboard_entries + leaderboard_ranks
--   matches           --refresh_views-----> standings            (standings_dirty, by trigger)
--
-- A board is one leaderboard: board_id 0 is the overall board, any other value
-- is a competition id. leaderboard_changes and standings_dirty are durable
-- work lists: whatever changed since the last refresh is listed there, so a
-- refresh costs the size of the change, not the size of the data, and a crash
-- between "points committed" and "refresh ran" loses nothing (the next
-- refresh picks it up).
--
-- Readers only read leaderboard_entries, leaderboard_ranks and standings.
-- These are ordinary tables written by short transactions under row locks,
-- so readers see the last committed refresh (MVCC) and never wait for one.

-- Per user and board totals, kept current by calculate_points.
CREATE TABLE user_totals (
    board_id           bigint NOT NULL CHECK (board_id >= 0),
    user_id            bigint NOT NULL REFERENCES users (id),
    points             integer NOT NULL CHECK (points >= 0),
    exact_scores       integer NOT NULL CHECK (exact_scores >= 0),
    correct_outcomes   integer NOT NULL CHECK (correct_outcomes >= 0),
    predictions_scored integer NOT NULL CHECK (predictions_scored >= 0),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (board_id, user_id)
) WITH (fillfactor = 85);
-- Free space on each page lets updates stay on the page (HOT: no index
-- write), since no indexed column ever changes here.

-- The (board, user) pairs whose totals changed, one row per committed
-- points calculation (two parallel arrays): one insert per match instead of
-- one per user, and insert-only, so a refresh simply consumes the rows its
-- snapshot sees. A row still uncommitted is invisible to it and stays for
-- the next refresh, which that calculation enqueues after committing.
CREATE TABLE leaderboard_changes (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    board_ids  bigint[] NOT NULL,
    user_ids   bigint[] NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT leaderboard_changes_parallel CHECK (cardinality(board_ids) = cardinality(user_ids))
);

-- The published leaderboards: one row per user with at least one scored
-- prediction on the board. Derived from user_totals (which carries the
-- foreign key), so no foreign key here: it would only slow the refresh.
CREATE TABLE leaderboard_entries (
    board_id           bigint NOT NULL,
    user_id            bigint NOT NULL,
    points             integer NOT NULL,
    exact_scores       integer NOT NULL,
    correct_outcomes   integer NOT NULL,
    predictions_scored integer NOT NULL,
    PRIMARY KEY (board_id, user_id)
) WITH (fillfactor = 85);
-- (Room for HOT updates when only the counters change: a wrong prediction
-- adds to predictions_scored but not to the indexed points.)

-- Reading a page of a board walks this index in display order.
CREATE INDEX leaderboard_entries_order_idx ON leaderboard_entries (board_id, points DESC, user_id);

-- Every refresh moves the entries of the users who scored, which are
-- exactly the ones at the top of the boards that readers page through: vacuum
-- after about 2% of dead rows (a handful of matches) instead of 20%, so the
-- head of the order index stays free of dead entries.
ALTER TABLE leaderboard_entries SET (autovacuum_vacuum_scale_factor = 0.02);
ALTER TABLE user_totals SET (autovacuum_vacuum_scale_factor = 0.02);

-- How many users of a board have each points value, and the rank that value
-- gives (1 + users with more points: ties share a rank, 1, 2, 2, 4). A board
-- has as many rows as distinct points values (tens to hundreds), so ranks are
-- recomputed in microseconds while a user's rank is one index lookup.
CREATE TABLE leaderboard_ranks (
    board_id bigint NOT NULL,
    points   integer NOT NULL,
    users    integer NOT NULL CHECK (users >= 0),
    rank     integer NOT NULL DEFAULT 0,
    PRIMARY KEY (board_id, points)
);

-- Competitions whose matches changed since the last standings refresh.
CREATE TABLE standings_dirty (
    competition_id bigint PRIMARY KEY,
    marked_at      timestamptz NOT NULL DEFAULT now()
);

-- The published league tables.
CREATE TABLE standings (
    competition_id bigint NOT NULL REFERENCES competitions (id),
    team_id        bigint NOT NULL REFERENCES teams (id),
    position       integer NOT NULL,
    played         integer NOT NULL,
    won            integer NOT NULL,
    drawn          integer NOT NULL,
    lost           integer NOT NULL,
    goals_for      integer NOT NULL,
    goals_against  integer NOT NULL,
    points         integer NOT NULL,
    PRIMARY KEY (competition_id, team_id)
);

CREATE INDEX standings_order_idx ON standings (competition_id, position);

-- Any write to matches marks its competition's table dirty, whoever writes
-- (tally, a migration, an operator with psql). DO UPDATE rather than DO
-- NOTHING: it row-locks the marker until the match write commits, so a
-- refresh can never consume the marker while it still reads the old match.
CREATE FUNCTION mark_standings_dirty_new() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO standings_dirty AS d (competition_id)
    SELECT DISTINCT competition_id FROM new_rows ORDER BY competition_id
    ON CONFLICT (competition_id) DO UPDATE SET marked_at = now();
    RETURN NULL;
END
$$;

CREATE FUNCTION mark_standings_dirty_old() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO standings_dirty AS d (competition_id)
    SELECT DISTINCT competition_id FROM old_rows ORDER BY competition_id
    ON CONFLICT (competition_id) DO UPDATE SET marked_at = now();
    RETURN NULL;
END
$$;

CREATE TRIGGER matches_standings_dirty_insert
    AFTER INSERT ON matches REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION mark_standings_dirty_new();

CREATE TRIGGER matches_standings_dirty_update_new
    AFTER UPDATE ON matches REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION mark_standings_dirty_new();

-- A match moved to another competition dirties the old one too.
CREATE TRIGGER matches_standings_dirty_update_old
    AFTER UPDATE ON matches REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION mark_standings_dirty_old();

CREATE TRIGGER matches_standings_dirty_delete
    AFTER DELETE ON matches REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION mark_standings_dirty_old();

-- Readable relations with ranks, for people with psql and for reporting.
CREATE VIEW leaderboard AS
SELECT e.board_id,
       NULLIF(e.board_id, 0) AS competition_id,
       e.user_id,
       u.username,
       e.points,
       e.exact_scores,
       e.correct_outcomes,
       e.predictions_scored,
       r.rank
FROM leaderboard_entries AS e
JOIN leaderboard_ranks AS r ON r.board_id = e.board_id AND r.points = e.points
JOIN users AS u ON u.id = e.user_id;

CREATE VIEW league_table AS
SELECT s.competition_id,
       s.position,
       s.team_id,
       t.name AS team,
       s.played,
       s.won,
       s.drawn,
       s.lost,
       s.goals_for,
       s.goals_against,
       s.goals_for - s.goals_against AS goal_difference,
       s.points
FROM standings AS s
JOIN teams AS t ON t.id = s.team_id;
