//! A `ScoreMatch` attempt's database work ends by the attempt's deadline.
//!
//! The match row is locked by another connection (a stuck writer). The
//! handler must come back by itself, before its deadline, with a retryable
//! error, and leave no statement waiting on the server, instead of waiting
//! on the lock until the engine drops it.

use std::time::{Duration, Instant};

use tally_jobs::{Job, JobPolicy, ScoreMatch};
use tally_queue::{JobContext, JobError, Producer, QueueClient, QueueConfig};
use tally_store::Store;
use tally_worker::WorkerDeps;

// The cancellation token is tokio-util's, which this crate does not depend on.
#[allow(clippy::default_trait_access)]
fn context(timeout: Duration) -> JobContext {
    JobContext {
        id: "attempt-deadline".into(),
        kind: ScoreMatch::KIND.into(),
        queue: scoring_worker::QUEUE.into(),
        attempt: 1,
        token: 1,
        crashes: 0,
        errors: 0,
        policy: JobPolicy {
            timeout_ms: timeout.as_millis() as u64,
            ..JobPolicy::DEFAULT
        },
        trace: None,
        created_at_ms: 0,
        cancel: Default::default(),
        deadline: Instant::now() + timeout,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_score_match_attempt_blocked_on_a_lock_ends_by_its_deadline() {
    let db = tally_testkit::database_from_template("scoring_worker_migrated", |url| async move {
        tally_store::migrate_url(&url).await?;
        Ok(())
    })
    .await;
    let redis = tally_testkit::redis().await;
    let client = db.client().await;
    let match_id: i64 = client
        .query_one(
            "WITH c AS (INSERT INTO competitions (name) VALUES ('League') RETURNING id),
                  h AS (INSERT INTO teams (name) VALUES ('Home') RETURNING id),
                  a AS (INSERT INTO teams (name) VALUES ('Away') RETURNING id)
             INSERT INTO matches (competition_id, home_team_id, away_team_id, kickoff_at,
                                  status, home_score, away_score, finished_at)
             SELECT c.id, h.id, a.id, now(), 'finished', 1, 0, now() FROM c, h, a
             RETURNING id",
            &[],
        )
        .await
        .expect("finished match")
        .get(0);
    let holder = db.client().await;
    holder
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM matches WHERE id = {match_id} FOR UPDATE"
        ))
        .await
        .expect("row locked");

    let queue = QueueClient::new(&redis.url, QueueConfig::with_prefix(&redis.namespace)).expect("queue client");
    let deps = WorkerDeps {
        store: Store::connect(&db.url, 1).await.expect("store"),
        producer: Producer::new(queue),
    };
    let timeout = Duration::from_millis(1_500);
    let ctx = context(timeout);
    let job = ScoreMatch { match_id };
    let result = tokio::time::timeout(timeout, scoring_worker::score_match(&deps, &job, &ctx))
        .await
        .expect("the attempt ends by itself before its deadline");
    assert!(matches!(result, Err(JobError::Retry(_))), "retried later: {result:?}");

    // Nothing of the attempt keeps running (a moment is allowed for the
    // aborted transaction's ROLLBACK, sent as the attempt returned).
    let until = Instant::now() + Duration::from_secs(2);
    loop {
        let running: Vec<String> = client
            .query(
                "SELECT query FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'active'",
                &[],
            )
            .await
            .expect("pg_stat_activity")
            .iter()
            .map(|r| r.get(0))
            .collect();
        if running.is_empty() {
            break;
        }
        assert!(Instant::now() < until, "still running after the attempt: {running:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    holder.batch_execute("ROLLBACK").await.expect("released");
}
