//! Match results and the scoring of predictions (the `ScoreMatch` job).
//!
//! Recording a result and scoring are separate steps on purpose: the result
//! is one small transaction on the match row that a person or a feed waits
//! for, scoring touches every prediction of the match and runs in a worker
//! with retries. Both are idempotent, so a repeated job changes nothing.
//!
//! Rules (per competition, default 3 / 1): the exact score earns
//! `points_exact`, otherwise the right outcome (home win, draw, away win)
//! earns `points_outcome`, otherwise 0. A postponed or cancelled match voids
//! its predictions: `points` stays NULL with `voided = true`, and a voided
//! prediction counts nowhere (not in points, not in predictions scored). If a
//! postponed match is rescheduled its predictions become pending again.

use serde::Serialize;
use tokio_postgres::{Client, IsolationLevel, Transaction};

use crate::error::StoreError;
use crate::model::{MatchStatus, RecordOutcome, ScoreOutcome};
use crate::outbox;
use crate::tx::{self, Budget};

/// Highest number of goals accepted for one side, in results and predictions.
pub const MAX_SCORE: i32 = 99;

const SCORE_FINISHED_SQL: &str = include_str!("../sql/score_finished.sql");

/// Points awarded by one competition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScoringRules {
    /// For the exact score.
    pub points_exact: i32,
    /// For the right outcome with a wrong score.
    pub points_outcome: i32,
}

impl Default for ScoringRules {
    fn default() -> Self {
        Self {
            points_exact: 3,
            points_outcome: 1,
        }
    }
}

/// How one prediction fared against a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Points earned.
    pub points: i32,
    /// The exact score was predicted.
    pub exact: bool,
    /// The outcome, but not the score, was predicted.
    pub correct_outcome: bool,
}

/// Scores one prediction in memory. The database does the same in SQL
/// (`sql/score_finished.sql`); the seed generator uses this one to load
/// already-played matches without a second pass over the rows.
pub fn verdict(predicted: (i32, i32), result: (i32, i32), rules: ScoringRules) -> Verdict {
    let exact = predicted == result;
    let same_outcome = (predicted.0 - predicted.1).signum() == (result.0 - result.1).signum();
    let points = if exact {
        rules.points_exact
    } else if same_outcome {
        rules.points_outcome
    } else {
        0
    };
    Verdict {
        points,
        exact,
        correct_outcome: same_outcome && !exact,
    }
}

fn validate_score(home: i32, away: i32) -> Result<(), StoreError> {
    if (0..=MAX_SCORE).contains(&home) && (0..=MAX_SCORE).contains(&away) {
        Ok(())
    } else {
        Err(StoreError::InvalidScore { home, away })
    }
}

/// Marks a match finished with its final score, in one transaction.
///
/// Recording the same score again is a successful no-op (`changed: false`);
/// a different score for a finished match is [`StoreError::ResultConflict`]
/// (results are final here; a correction would be its own, audited,
/// operation). Scheduled, live and postponed matches can finish; a cancelled
/// one cannot ([`StoreError::InvalidTransition`]). `budget` bounds the
/// transaction (see [`crate::tx`]).
pub async fn record_result(
    client: &mut Client,
    match_id: i64,
    home: i32,
    away: i32,
    budget: Budget,
) -> Result<RecordOutcome, StoreError> {
    record_result_with_job(client, match_id, home, away, None, budget).await
}

/// [`record_result`], and, in the same transaction, the job envelope `job`
/// into the outbox (see [`crate::outbox`]): the result and its job commit
/// together or not at all. The job is written on a repeat of the same
/// result too (the caller asked for the work again); on an error, nothing
/// is. The outcome's `job_row` is the outbox row.
pub async fn record_result_with_job(
    client: &mut Client,
    match_id: i64,
    home: i32,
    away: i32,
    job: Option<&serde_json::Value>,
    budget: Budget,
) -> Result<RecordOutcome, StoreError> {
    validate_score(home, away)?;
    // READ COMMITTED: the decision is made on the row as locked by FOR
    // UPDATE, which at this level is the latest committed version (a
    // concurrent writer is waited for, then re-read). Under REPEATABLE READ
    // or SERIALIZABLE the same race fails with a serialization error instead.
    let tx = tx::begin(client, IsolationLevel::ReadCommitted, budget).await?;
    let row = tx
        .query_opt(
            "SELECT status, home_score, away_score, competition_id
             FROM matches WHERE id = $1 FOR UPDATE",
            &[&match_id],
        )
        .await?
        .ok_or(StoreError::MatchNotFound { match_id })?;
    let status: MatchStatus = row.get::<_, String>(0).parse()?;
    let competition_id: i64 = row.get(3);
    match status {
        MatchStatus::Finished => {
            let recorded_home: i32 = row.get(1);
            let recorded_away: i32 = row.get(2);
            if (recorded_home, recorded_away) == (home, away) {
                let job_row = write_job(&tx, job).await?;
                tx.commit().await?;
                return Ok(RecordOutcome {
                    match_id,
                    competition_id,
                    changed: false,
                    job_row,
                });
            }
            return Err(StoreError::ResultConflict {
                match_id,
                recorded_home,
                recorded_away,
                home,
                away,
            });
        }
        MatchStatus::Cancelled => {
            return Err(StoreError::InvalidTransition {
                match_id,
                from: status,
                to: MatchStatus::Finished,
            });
        }
        MatchStatus::Scheduled | MatchStatus::Live | MatchStatus::Postponed => {}
    }
    tx.execute(
        "UPDATE matches
         SET status = 'finished', home_score = $2, away_score = $3, finished_at = now()
         WHERE id = $1",
        &[&match_id, &home, &away],
    )
    .await?;
    let job_row = write_job(&tx, job).await?;
    tx.commit().await?;
    Ok(RecordOutcome {
        match_id,
        competition_id,
        changed: true,
        job_row,
    })
}

/// Writes `job` (if any) into the outbox inside `tx`.
async fn write_job(tx: &Transaction<'_>, job: Option<&serde_json::Value>) -> Result<Option<i64>, StoreError> {
    match job {
        Some(envelope) => Ok(Some(outbox::enqueue_in(tx, envelope).await?)),
        None => Ok(None),
    }
}

/// Whether a match may move from one status to another through
/// [`set_match_status`]. Finishing goes through [`record_result`]; finished
/// and cancelled are final.
pub fn transition_allowed(from: MatchStatus, to: MatchStatus) -> bool {
    use MatchStatus::{Cancelled, Finished, Live, Postponed, Scheduled};
    match (from, to) {
        (_, Finished) | (Finished | Cancelled, _) => from == to,
        (Scheduled | Live | Postponed, Scheduled | Live | Postponed | Cancelled) => true,
    }
}

/// Changes a match's status (kick-off, postponement, cancellation,
/// rescheduling). Setting the current status again is a no-op
/// (`changed: false`). Leaving `postponed` for `scheduled` or `live` makes the
/// voided predictions pending again, in the same transaction. Entering
/// `postponed` or `cancelled` does not void anything by itself: enqueue
/// `ScoreMatch`, whose [`score_match`] voids and lets points follow.
/// `budget` bounds the transaction (see [`crate::tx`]).
pub async fn set_match_status(
    client: &mut Client,
    match_id: i64,
    to: MatchStatus,
    budget: Budget,
) -> Result<RecordOutcome, StoreError> {
    set_match_status_with_job(client, match_id, to, None, budget).await
}

/// [`set_match_status`], and, in the same transaction, the job envelope
/// `job` into the outbox (as [`record_result_with_job`] does).
pub async fn set_match_status_with_job(
    client: &mut Client,
    match_id: i64,
    to: MatchStatus,
    job: Option<&serde_json::Value>,
    budget: Budget,
) -> Result<RecordOutcome, StoreError> {
    // READ COMMITTED, as in record_result: the transition is checked against
    // the row as locked by FOR UPDATE, the latest committed version.
    let tx = tx::begin(client, IsolationLevel::ReadCommitted, budget).await?;
    let row = tx
        .query_opt(
            "SELECT status, competition_id FROM matches WHERE id = $1 FOR UPDATE",
            &[&match_id],
        )
        .await?
        .ok_or(StoreError::MatchNotFound { match_id })?;
    let from: MatchStatus = row.get::<_, String>(0).parse()?;
    let competition_id: i64 = row.get(1);
    if !transition_allowed(from, to) {
        return Err(StoreError::InvalidTransition { match_id, from, to });
    }
    if from == to {
        let job_row = write_job(&tx, job).await?;
        tx.commit().await?;
        return Ok(RecordOutcome {
            match_id,
            competition_id,
            changed: false,
            job_row,
        });
    }
    tx.execute(
        "UPDATE matches SET status = $2 WHERE id = $1",
        &[&match_id, &to.as_str()],
    )
    .await?;
    if !to.voids_predictions() {
        tx.execute(
            "UPDATE predictions SET voided = false, scored_at = NULL
             WHERE match_id = $1 AND voided",
            &[&match_id],
        )
        .await?;
    }
    let job_row = write_job(&tx, job).await?;
    tx.commit().await?;
    Ok(RecordOutcome {
        match_id,
        competition_id,
        changed: true,
        job_row,
    })
}

/// Scores (or voids) every prediction of a match; the `ScoreMatch` job.
///
/// Finished: each prediction gets its points and flags under the
/// competition's rules. Postponed or cancelled: each prediction is voided.
/// Scheduled or live: [`StoreError::MatchNotFinished`] (transient: retry
/// later). Idempotent: only rows whose scoring differs are written, so a
/// repeat, or two runs at once, leave identical rows. The match row is
/// share-locked meanwhile, so its result cannot change under the scoring.
/// `budget` bounds the transaction (see [`crate::tx`]).
pub async fn score_match(client: &mut Client, match_id: i64, budget: Budget) -> Result<ScoreOutcome, StoreError> {
    // READ COMMITTED: two runs at once are harmless only because the UPDATE
    // re-checks each row after waiting for a concurrent run's row lock and
    // skips it when already scored; at this level PostgreSQL re-evaluates
    // the row's latest version, where REPEATABLE READ would abort the second
    // run with a serialization failure. The final counts must also see the
    // other run's committed rows.
    let tx = tx::begin(client, IsolationLevel::ReadCommitted, budget).await?;
    let row = tx
        .query_opt(
            "SELECT m.status, m.home_score, m.away_score, m.competition_id,
                    c.points_exact, c.points_outcome
             FROM matches AS m
             JOIN competitions AS c ON c.id = m.competition_id
             WHERE m.id = $1
             FOR SHARE OF m",
            &[&match_id],
        )
        .await?
        .ok_or(StoreError::MatchNotFound { match_id })?;
    let status: MatchStatus = row.get::<_, String>(0).parse()?;
    let competition_id: i64 = row.get(3);
    let changed = match status {
        MatchStatus::Finished => {
            let home: i32 = row.get(1);
            let away: i32 = row.get(2);
            let points_exact: i32 = row.get(4);
            let points_outcome: i32 = row.get(5);
            tx.execute(
                SCORE_FINISHED_SQL,
                &[&match_id, &home, &away, &points_exact, &points_outcome],
            )
            .await?
        }
        MatchStatus::Postponed | MatchStatus::Cancelled => {
            tx.execute(
                "UPDATE predictions
                 SET points = NULL, exact = false, correct_outcome = false,
                     voided = true, scored_at = now()
                 WHERE match_id = $1 AND (NOT voided OR points IS NOT NULL)",
                &[&match_id],
            )
            .await?
        }
        MatchStatus::Scheduled | MatchStatus::Live => {
            return Err(StoreError::MatchNotFinished { match_id, status });
        }
    };
    let counts = tx
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE exact),
                    count(*) FILTER (WHERE correct_outcome), count(*) FILTER (WHERE voided)
             FROM predictions WHERE match_id = $1",
            &[&match_id],
        )
        .await?;
    tx.commit().await?;
    Ok(ScoreOutcome {
        match_id,
        competition_id,
        status,
        predictions: counts.get(0),
        changed: changed as i64,
        exact: counts.get(1),
        correct_outcome: counts.get(2),
        voided: counts.get(3),
    })
}
