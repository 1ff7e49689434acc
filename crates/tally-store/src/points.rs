//! Per-user totals (the `CalculatePoints` job).
//!
//! `user_totals` holds, per user, one row per competition board and one for
//! the overall board (board 0): points, exact scores, correct outcomes and
//! scored predictions. [`calculate_points`] recomputes the rows of the users
//! who predicted one match from all their predictions (a full recompute of a
//! few users, not an increment, so repeats and reorderings are harmless) and
//! lists every row that changed in `leaderboard_changes` for the next
//! refresh, in the same transaction, which also removes the match's repair
//! marker (`match_pipeline_pending`, see [`crate::repair`]).
//!
//! Concurrency: two runs for different matches of the same users would each
//! compute totals from their own snapshot, and the later writer could store
//! numbers that miss the other's match. So each run first row-locks the
//! affected users (`users` rows, `FOR NO KEY UPDATE`, which does not block
//! inserting predictions) in id order, and only then reads. Runs sharing users
//! queue one behind the other; the deterministic order rules out deadlocks.

use tokio_postgres::{Client, IsolationLevel};

use crate::error::StoreError;
use crate::model::{MatchStatus, PointsOutcome};
use crate::tx::{self, Budget};

const CALCULATE_POINTS_SQL: &str = include_str!("../sql/calculate_points.sql");
const REBUILD_TOTALS_SQL: &str = include_str!("../sql/rebuild_totals.sql");

/// Recomputes the totals of every user who predicted `match_id`.
///
/// The match must be finished with every prediction scored, or postponed /
/// cancelled with every prediction voided; otherwise
/// [`StoreError::MatchNotFinished`] (scheduled / live) or
/// [`StoreError::MatchNotScored`] (scoring has not run yet), both transient.
/// `budget` bounds the transaction (see [`crate::tx`]).
pub async fn calculate_points(client: &mut Client, match_id: i64, budget: Budget) -> Result<PointsOutcome, StoreError> {
    // READ COMMITTED, and nothing else: "lock the users, then read" works
    // only because each statement takes a new snapshot, so the totals
    // statement (after the lock statement) sees what the previous holder of
    // those locks committed. Under REPEATABLE READ the snapshot would date
    // from the first statement, before the wait: totals would miss the other
    // run's points and its freshly inserted user_totals rows, and the insert
    // would fail with a unique violation (or worse, overwrite newer totals).
    let tx = tx::begin(client, IsolationLevel::ReadCommitted, budget).await?;
    tx.batch_execute(crate::CACHED_WORKING_SET).await?;
    let row = tx
        .query_opt(
            "SELECT m.status, m.competition_id,
                    (SELECT count(*) FROM predictions AS p
                     WHERE p.match_id = m.id AND p.points IS NULL AND NOT p.voided),
                    (SELECT count(*) FROM predictions AS p
                     WHERE p.match_id = m.id AND NOT p.voided),
                    (SELECT generation FROM match_pipeline_pending AS pp WHERE pp.match_id = m.id)
             FROM matches AS m
             WHERE m.id = $1
             FOR SHARE OF m",
            &[&match_id],
        )
        .await?
        .ok_or(StoreError::MatchNotFound { match_id })?;
    let status: MatchStatus = row.get::<_, String>(0).parse()?;
    let competition_id: i64 = row.get(1);
    let unscored: i64 = row.get(2);
    let unvoided: i64 = row.get(3);
    // The repair marker as it was when the match was share-locked: any later
    // change of the match waits for this transaction, so this calculation
    // covers everything the marker stands for (a marker renewed by a late
    // prediction gets a new generation and stays).
    let marker: Option<i64> = row.get(4);
    let pending = match status {
        MatchStatus::Finished => unscored,
        MatchStatus::Postponed | MatchStatus::Cancelled => unvoided,
        MatchStatus::Scheduled | MatchStatus::Live => {
            return Err(StoreError::MatchNotFinished { match_id, status });
        }
    };
    if pending > 0 {
        return Err(StoreError::MatchNotScored { match_id, pending });
    }

    let users: Vec<i64> = tx
        .query_one(
            "SELECT coalesce(array_agg(user_id ORDER BY user_id), '{}')
             FROM predictions WHERE match_id = $1",
            &[&match_id],
        )
        .await?
        .get(0);
    // Lock first, then read: the totals below come from a snapshot taken
    // after every earlier writer of these users committed.
    tx.query_one(
        "SELECT count(*) FROM (
             SELECT id FROM users WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE
         ) AS locked",
        &[&users],
    )
    .await?;
    let changed: i64 = tx
        .query_one(CALCULATE_POINTS_SQL, &[&users, &competition_id])
        .await?
        .get(0);
    if let Some(generation) = marker {
        // The match's points are in the totals as of this commit: it is no
        // longer owed anything (see crate::repair).
        tx.execute(
            "DELETE FROM match_pipeline_pending WHERE match_id = $1 AND generation = $2",
            &[&match_id, &generation],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(PointsOutcome {
        match_id,
        competition_id,
        users: users.len() as i64,
        changed,
    })
}

/// Recomputes every user's totals from all predictions and lists the rows
/// that changed for the next refresh. For repairs and after bulk loads; on
/// consistent data it writes nothing. Returns the number of changed rows.
/// `budget` bounds the transaction (see [`crate::tx`]).
pub async fn rebuild_totals(client: &mut Client, budget: Budget) -> Result<i64, StoreError> {
    // READ COMMITTED, for the reason given in calculate_points: the rebuild
    // must read after the user locks are granted.
    let tx = tx::begin(client, IsolationLevel::ReadCommitted, budget).await?;
    // Same lock order as calculate_points (all users, by id).
    tx.query_one(
        "SELECT count(*) FROM (SELECT id FROM users ORDER BY id FOR NO KEY UPDATE) AS locked",
        &[],
    )
    .await?;
    let changed: i64 = tx.query_one(REBUILD_TOTALS_SQL, &[]).await?.get(0);
    tx.commit().await?;
    Ok(changed)
}
