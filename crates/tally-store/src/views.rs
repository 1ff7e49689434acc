//! Published leaderboards and league tables: refresh and reads.
//!
//! A refresh publishes what changed since the last one, nothing more:
//!
//! 1. claim the work lists: delete the `leaderboard_changes` rows this
//!    statement sees (rows of a `calculate_points` not yet committed are
//!    invisible, and stay for the refresh that job enqueues after
//!    committing), and the `standings_dirty` markers with `FOR UPDATE SKIP
//!    LOCKED` (a marker is row-locked by an uncommitted result write, which
//!    also enqueues its own follow-up); a refresh never waits on either;
//! 2. in a later statement, hence a newer snapshot, copy the committed totals
//!    of the claimed pairs into `leaderboard_entries` and move their counts
//!    in the `leaderboard_ranks` histogram;
//! 3. recompute ranks of the touched boards from the histogram (tens of rows);
//! 4. recompute the league tables of the claimed competitions (a few hundred
//!    matches each).
//!
//! Its cost follows the size of the change (about 2 × the users who
//! predicted the matches since the last refresh), never the 1M predictions.
//! Readers run one statement on ordinary tables: they see the last committed
//! refresh, never wait on one (row locks only; no ACCESS EXCLUSIVE lock as
//! `REFRESH MATERIALIZED VIEW` takes) and never see uncommitted points
//! (only committed totals are copied, by a transaction that commits
//! entries and ranks together). Refreshes of the same kind are serialised by a
//! transaction-level advisory lock, because step 2 read-modify-writes the
//! histogram; they are short, so the queue's deduplication keeps them rare
//! and the wait small.

use tokio_postgres::{GenericClient, IsolationLevel, Row, Transaction};

use crate::error::StoreError;
use crate::locks;
use crate::model::{LeaderboardRow, RefreshOutcome, Scope, StandingRow};
use crate::tx::{self, Budget};

const REFRESH_LEADERBOARD_APPLY_SQL: &str = include_str!("../sql/refresh_leaderboard_apply.sql");
const REFRESH_LEADERBOARD_RANKS_SQL: &str = include_str!("../sql/refresh_leaderboard_ranks.sql");
const REFRESH_STANDINGS_APPLY_SQL: &str = include_str!("../sql/refresh_standings_apply.sql");
/// One page of a board (`$1` board, `$2` limit, `$3` offset).
pub(crate) const LEADERBOARD_SQL: &str = include_str!("../sql/leaderboard.sql");
/// One league table (`$1` competition).
pub(crate) const STANDINGS_SQL: &str = include_str!("../sql/standings.sql");

/// The board id of the overall leaderboard; any other board id is a
/// competition id.
pub const OVERALL_BOARD: i64 = 0;

/// Refreshes the published views inside a transaction the caller owns and
/// commits. [`refresh_views`] is the usual entry point; this one exists so a
/// caller (or a test) can hold a refresh open and watch readers carry on.
///
/// The transaction must be READ COMMITTED (start it with [`tx::begin`]):
/// the refresh takes an advisory lock and then relies on its later
/// statements seeing what the previous refresh committed, which only a
/// per-statement snapshot gives.
pub async fn refresh_views_in(tx: &Transaction<'_>, scope: Scope) -> Result<RefreshOutcome, StoreError> {
    let mut outcome = RefreshOutcome::default();
    tx.batch_execute(crate::CACHED_WORKING_SET).await?;
    if scope.includes_leaderboard() {
        refresh_leaderboard(tx, &mut outcome).await?;
    }
    if scope.includes_standings() {
        refresh_standings(tx, &mut outcome).await?;
    }
    Ok(outcome)
}

/// Refreshes the published leaderboards and/or standings and commits
/// (the `RefreshViews` job). `budget` bounds the transaction (see
/// [`crate::tx`]).
pub async fn refresh_views(
    client: &mut tokio_postgres::Client,
    scope: Scope,
    budget: Budget,
) -> Result<RefreshOutcome, StoreError> {
    // READ COMMITTED, and nothing else: refreshes serialise on an advisory
    // lock, then claim and apply in later statements. Each statement's new
    // snapshot sees the previous refresh's committed entries and histogram
    // (a REPEATABLE READ snapshot, taken before the lock wait, would not:
    // the histogram would be moved twice and entries inserted twice) and the
    // totals committed by calculate_points before the claim.
    let tx = tx::begin(client, IsolationLevel::ReadCommitted, budget).await?;
    let outcome = refresh_views_in(&tx, scope).await?;
    tx.commit().await?;
    Ok(outcome)
}

async fn refresh_leaderboard(tx: &Transaction<'_>, outcome: &mut RefreshOutcome) -> Result<(), StoreError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&locks::CLASS, &locks::REFRESH_LEADERBOARD],
    )
    .await?;
    let claimed = tx
        .query_one(
            "WITH claimed AS (
                 DELETE FROM leaderboard_changes RETURNING board_ids, user_ids
             ),
             pairs AS (
                 SELECT DISTINCT p.board_id, p.user_id
                 FROM claimed, unnest(claimed.board_ids, claimed.user_ids) AS p (board_id, user_id)
             )
             SELECT coalesce(array_agg(board_id ORDER BY board_id, user_id), '{}'),
                    coalesce(array_agg(user_id ORDER BY board_id, user_id), '{}')
             FROM pairs",
            &[],
        )
        .await?;
    let boards: Vec<i64> = claimed.get(0);
    let users: Vec<i64> = claimed.get(1);
    outcome.leaderboard_claimed = boards.len() as i64;
    if boards.is_empty() {
        return Ok(());
    }
    let applied = tx.query_one(REFRESH_LEADERBOARD_APPLY_SQL, &[&boards, &users]).await?;
    outcome.leaderboard_upserted = applied.get(0);
    outcome.leaderboard_removed = applied.get(1);
    let mut touched: Vec<i64> = applied.get(2);
    touched.sort_unstable();
    if !touched.is_empty() {
        tx.execute(
            "DELETE FROM leaderboard_ranks WHERE board_id = ANY($1) AND users = 0",
            &[&touched],
        )
        .await?;
        tx.execute(REFRESH_LEADERBOARD_RANKS_SQL, &[&touched]).await?;
    }
    outcome.boards_reranked = touched;
    Ok(())
}

async fn refresh_standings(tx: &Transaction<'_>, outcome: &mut RefreshOutcome) -> Result<(), StoreError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&locks::CLASS, &locks::REFRESH_STANDINGS],
    )
    .await?;
    let claimed = tx
        .query_one(
            "WITH claimed AS (
                 DELETE FROM standings_dirty AS d
                 USING (SELECT competition_id FROM standings_dirty
                        ORDER BY competition_id
                        FOR UPDATE SKIP LOCKED) AS c
                 WHERE d.competition_id = c.competition_id
                 RETURNING d.competition_id
             )
             SELECT coalesce(array_agg(competition_id ORDER BY competition_id), '{}')
             FROM claimed",
            &[],
        )
        .await?;
    let competitions: Vec<i64> = claimed.get(0);
    if !competitions.is_empty() {
        tx.query_one(REFRESH_STANDINGS_APPLY_SQL, &[&competitions]).await?;
    }
    outcome.standings_refreshed = competitions;
    Ok(())
}

/// The board id for a competition filter, refusing ids that cannot exist.
pub(crate) fn board_for(competition: Option<i64>) -> Result<i64, StoreError> {
    match competition {
        None => Ok(OVERALL_BOARD),
        Some(id) if id > 0 => Ok(id),
        Some(competition_id) => Err(StoreError::CompetitionNotFound { competition_id }),
    }
}

pub(crate) fn leaderboard_row(row: &Row) -> LeaderboardRow {
    LeaderboardRow {
        user_id: row.get(0),
        username: row.get(1),
        points: row.get(2),
        exact_scores: row.get(3),
        correct_outcomes: row.get(4),
        predictions_scored: row.get(5),
        rank: row.get(6),
    }
}

pub(crate) fn standing_row(row: &Row) -> StandingRow {
    StandingRow {
        position: row.get(0),
        team_id: row.get(1),
        team: row.get(2),
        played: row.get(3),
        won: row.get(4),
        drawn: row.get(5),
        lost: row.get(6),
        goals_for: row.get(7),
        goals_against: row.get(8),
        goal_difference: row.get(9),
        points: row.get(10),
    }
}

/// Fails with [`StoreError::CompetitionNotFound`] unless the competition
/// exists. Readers call it only when a page comes back empty, so the common
/// read stays one statement.
pub(crate) async fn ensure_competition<C: GenericClient>(client: &C, competition_id: i64) -> Result<(), StoreError> {
    let found = client
        .query_opt("SELECT 1 FROM competitions WHERE id = $1", &[&competition_id])
        .await?;
    match found {
        Some(_) => Ok(()),
        None => Err(StoreError::CompetitionNotFound { competition_id }),
    }
}

/// One page of a leaderboard: overall (`None`) or one competition's, best
/// first (points, then user id among equals), `top` rows after skipping
/// `offset`. Users appear once they have a scored prediction on the board.
pub async fn leaderboard<C: GenericClient>(
    client: &C,
    competition: Option<i64>,
    top: i64,
    offset: i64,
) -> Result<Vec<LeaderboardRow>, StoreError> {
    let board = board_for(competition)?;
    let rows = client
        .query(LEADERBOARD_SQL, &[&board, &top.max(0), &offset.max(0)])
        .await?;
    if rows.is_empty()
        && let Some(id) = competition
    {
        ensure_competition(client, id).await?;
    }
    Ok(rows.iter().map(leaderboard_row).collect())
}

/// The published league table of a competition, first place first.
pub async fn standings<C: GenericClient>(client: &C, competition_id: i64) -> Result<Vec<StandingRow>, StoreError> {
    let rows = client.query(STANDINGS_SQL, &[&competition_id]).await?;
    if rows.is_empty() {
        ensure_competition(client, competition_id).await?;
    }
    Ok(rows.iter().map(standing_row).collect())
}
