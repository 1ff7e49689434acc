//! What the safety net finds: matches whose result never reached the totals.
//!
//! `match_pipeline_pending` (migration 0003) lists every match that entered
//! a final status (or whose score changed, or that got a prediction after it
//! was final) and is removed by `calculate_points` in the transaction that
//! writes the totals. A marker older than a grace period is work that got
//! lost on the way; [`scan`] reads the oldest ones, at most a given number
//! per call, and says for each what is missing:
//!
//! - finished, with unscored predictions → `ScoreMatch`;
//! - postponed or cancelled, with predictions not voided → `ScoreMatch`;
//! - final with every prediction scored (or voided) → its points are not in
//!   the totals → `CalculatePoints`;
//! - back to scheduled or live → nothing is owed: the marker is stale and
//!   [`clear_stale`] removes it.
//!
//! Enqueueing the jobs is the caller's (this crate knows nothing of Redis):
//! `scoring_worker::repair`, run by the `RepairPipeline` job the cron
//! gateway enqueues. Every job involved is idempotent, so a repair of
//! work that was in fact only slow changes nothing.

use serde::Serialize;
use tokio_postgres::{Client, IsolationLevel};

use crate::error::StoreError;
use crate::model::MatchStatus;
use crate::tx::{self, Budget};

const REPAIR_SCAN_SQL: &str = include_str!("../sql/repair_scan.sql");

/// What a lost match needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Missing {
    /// Finished, predictions not scored: `ScoreMatch`.
    Scoring,
    /// Postponed or cancelled, predictions not voided: `ScoreMatch`.
    Voiding,
    /// Scored (or voided), points not in the totals: `CalculatePoints`.
    Points,
    /// Scheduled or live again: nothing; the marker goes.
    Nothing,
}

/// One match the scan found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Lost {
    /// The match.
    pub match_id: i64,
    /// Its status now.
    pub status: MatchStatus,
    /// What it needs.
    pub missing: Missing,
    /// The marker's generation (for [`clear_stale`]).
    pub generation: i64,
}

/// One scan: the matches found, and how many more are due.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Scan {
    /// The oldest due markers, at most the limit asked for.
    pub lost: Vec<Lost>,
    /// Due markers beyond the limit, left for the next scan.
    pub remaining: i64,
}

/// Reads the oldest markers older than `grace_secs`, at most `limit`.
pub async fn scan(client: &mut Client, grace_secs: f64, limit: i64, budget: Budget) -> Result<Scan, StoreError> {
    if !grace_secs.is_finite() || grace_secs < 0.0 {
        return Err(StoreError::Config(format!(
            "repair grace must be a number of seconds >= 0, not {grace_secs}"
        )));
    }
    // REPEATABLE READ, read only: the rows and the count come from one snapshot.
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    tx::bound(&tx, budget).await?;
    let rows = tx.query(REPAIR_SCAN_SQL, &[&grace_secs, &limit.max(0)]).await?;
    let due: i64 = tx
        .query_one(
            "SELECT count(*) FROM match_pipeline_pending
             WHERE marked_at <= now() - make_interval(secs => $1::double precision)",
            &[&grace_secs],
        )
        .await?
        .get(0);
    tx.commit().await?;
    let mut lost = Vec::with_capacity(rows.len());
    for row in &rows {
        let status: MatchStatus = row.get::<_, String>(2).parse()?;
        let waiting: bool = row.get(3);
        let missing = match status {
            MatchStatus::Finished if waiting => Missing::Scoring,
            MatchStatus::Postponed | MatchStatus::Cancelled if waiting => Missing::Voiding,
            MatchStatus::Finished | MatchStatus::Postponed | MatchStatus::Cancelled => Missing::Points,
            MatchStatus::Scheduled | MatchStatus::Live => Missing::Nothing,
        };
        lost.push(Lost {
            match_id: row.get(0),
            status,
            missing,
            generation: row.get(1),
        });
    }
    Ok(Scan {
        remaining: (due - lost.len() as i64).max(0),
        lost,
    })
}

/// Moves the markers of matches a repair just enqueued work for to the back
/// of the line (`marked_at = now()`): they are not repaired again before
/// another grace period, and a match whose jobs keep failing never holds a
/// place in every batch, ahead of the ones behind it. A marker renewed since
/// the scan (another generation) is left as it is. `repaired` holds
/// (match id, generation read) pairs; returns the markers moved.
pub async fn touch(client: &mut Client, repaired: &[(i64, i64)], budget: Budget) -> Result<u64, StoreError> {
    let (matches, generations): (Vec<i64>, Vec<i64>) = repaired.iter().copied().unzip();
    let tx = tx::begin(client, IsolationLevel::ReadCommitted, budget).await?;
    let moved = tx
        .execute(
            "UPDATE match_pipeline_pending AS p
             SET marked_at = now()
             FROM unnest($1::bigint[], $2::bigint[]) AS r (match_id, generation)
             WHERE p.match_id = r.match_id AND p.generation = r.generation",
            &[&matches, &generations],
        )
        .await?;
    tx.commit().await?;
    Ok(moved)
}

/// Removes a marker that is owed nothing (its match is scheduled or live
/// again), unless it was renewed since the scan read `generation`. Returns
/// whether it was removed.
pub async fn clear_stale(
    client: &mut Client,
    match_id: i64,
    generation: i64,
    budget: Budget,
) -> Result<bool, StoreError> {
    let tx = tx::begin(client, IsolationLevel::ReadCommitted, budget).await?;
    let deleted = tx
        .execute(
            "DELETE FROM match_pipeline_pending AS p
             USING matches AS m
             WHERE p.match_id = $1 AND p.generation = $2
               AND m.id = p.match_id AND m.status IN ('scheduled', 'live')",
            &[&match_id, &generation],
        )
        .await?;
    tx.commit().await?;
    Ok(deleted > 0)
}
