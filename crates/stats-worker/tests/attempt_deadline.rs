//! `CalculatePoints` and `RefreshViews` attempts end by their deadline.
//!
//! Another connection holds what each job must lock (a user's row for
//! points, the leaderboard refresh's advisory lock for a refresh). The
//! handler must come back by itself, before its deadline, with a retryable
//! error, and leave no statement waiting on the server.

use std::time::{Duration, Instant};

use tally_jobs::{CalculatePoints, Job, JobPolicy, Priority, RefreshScope, RefreshViews};
use tally_queue::{JobContext, JobError, Producer, QueueClient, QueueConfig};
use tally_store::Store;
use tally_testkit::TestDatabase;
use tally_worker::WorkerDeps;

const TIMEOUT: Duration = Duration::from_millis(1_500);

// The cancellation token is tokio-util's, which this crate does not depend on.
#[allow(clippy::default_trait_access)]
fn context(kind: &str) -> JobContext {
    JobContext {
        id: "attempt-deadline".into(),
        kind: kind.into(),
        queue: stats_worker::QUEUE.into(),
        attempt: 1,
        token: 1,
        crashes: 0,
        errors: 0,
        policy: JobPolicy {
            timeout_ms: TIMEOUT.as_millis() as u64,
            ..JobPolicy::DEFAULT
        },
        trace: None,
        created_at_ms: 0,
        cancel: Default::default(),
        deadline: Instant::now() + TIMEOUT,
    }
}

/// A migrated database with one scored match predicted by one user;
/// returns (database, deps, match id, user id).
async fn scored_match() -> (TestDatabase, WorkerDeps, i64, i64) {
    let db = tally_testkit::database_from_template("stats_worker_migrated", |url| async move {
        tally_store::migrate_url(&url).await?;
        Ok(())
    })
    .await;
    let client = db.client().await;
    let row = client
        .query_one(
            "WITH c AS (INSERT INTO competitions (name) VALUES ('League') RETURNING id),
                  h AS (INSERT INTO teams (name) VALUES ('Home') RETURNING id),
                  a AS (INSERT INTO teams (name) VALUES ('Away') RETURNING id),
                  u AS (INSERT INTO users (username) VALUES ('alice') RETURNING id),
                  m AS (INSERT INTO matches (competition_id, home_team_id, away_team_id, kickoff_at)
                        SELECT c.id, h.id, a.id, now() FROM c, h, a RETURNING id),
                  p AS (INSERT INTO predictions (user_id, match_id, home_score, away_score)
                        SELECT u.id, m.id, 1, 0 FROM u, m RETURNING match_id, user_id)
             SELECT match_id, user_id FROM p",
            &[],
        )
        .await
        .expect("world");
    let (match_id, user_id): (i64, i64) = (row.get(0), row.get(1));
    let redis = tally_testkit::redis().await;
    let queue = QueueClient::new(&redis.url, QueueConfig::with_prefix(&redis.namespace)).expect("queue client");
    let deps = WorkerDeps {
        store: Store::connect(&db.url, 1).await.expect("store"),
        producer: Producer::new(queue),
    };
    deps.store.record_result(match_id, 1, 0).await.expect("result");
    deps.store.score_match(match_id).await.expect("scored");
    (db, deps, match_id, user_id)
}

/// Waits up to 2 s for no statement to be active in the database (a moment
/// is allowed for the aborted transaction's ROLLBACK); panics otherwise.
async fn nothing_left_running(db: &TestDatabase) {
    let observer = db.client().await;
    let until = Instant::now() + Duration::from_secs(2);
    loop {
        let running: Vec<String> = observer
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
            return;
        }
        assert!(Instant::now() < until, "still running after the attempt: {running:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_points_attempt_blocked_on_a_user_lock_ends_by_its_deadline() {
    let (db, deps, match_id, user_id) = scored_match().await;
    let holder = db.client().await;
    holder
        .batch_execute(&format!("BEGIN; SELECT 1 FROM users WHERE id = {user_id} FOR UPDATE"))
        .await
        .expect("user locked");

    let job = CalculatePoints {
        match_id,
        priority: Priority::Normal,
    };
    let ctx = context(CalculatePoints::KIND);
    let result = tokio::time::timeout(TIMEOUT, stats_worker::calculate_points(&deps, &job, &ctx))
        .await
        .expect("the attempt ends by itself before its deadline");
    assert!(matches!(result, Err(JobError::Retry(_))), "retried later: {result:?}");
    nothing_left_running(&db).await;
    holder.batch_execute("ROLLBACK").await.expect("released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_attempt_blocked_on_the_refresh_lock_ends_by_its_deadline() {
    let (db, deps, _, _) = scored_match().await;
    let holder = db.client().await;
    // The leaderboard refresh's advisory lock (tally-store's locks module:
    // class "taly", key 2), as a refresh that hangs would hold it.
    holder
        .batch_execute("BEGIN; SELECT pg_advisory_xact_lock(1952541817, 2)")
        .await
        .expect("refresh lock held");

    let job = RefreshViews {
        scope: RefreshScope::All,
    };
    let ctx = context(RefreshViews::KIND);
    let result = tokio::time::timeout(TIMEOUT, stats_worker::refresh_views(&deps, &job, &ctx))
        .await
        .expect("the attempt ends by itself before its deadline");
    assert!(matches!(result, Err(JobError::Retry(_))), "retried later: {result:?}");
    nothing_left_running(&db).await;
    holder.batch_execute("ROLLBACK").await.expect("released");
}
