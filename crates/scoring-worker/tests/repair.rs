//! The repairing safety net (`scoring_worker::repair`), called directly
//! against a real PostgreSQL and Redis: what it finds, what it enqueues
//! (bounded, oldest first, never the same job twice), what it reports; and
//! the `RepairPipeline` handler: a repair that finds no database fails
//! retryably, one with bounds out of range gives up.

use std::time::{Duration, Instant};

use scoring_worker::repair::{RepairReport, repair};
use tally_jobs::{CalculatePoints, Job as _, JobPolicy, RepairPipeline, ScoreMatch};
use tally_queue::{JobContext, JobError, Producer, QueueAdmin, QueueClient, QueueConfig};
use tally_store::Store;
use tally_store::seed::SeedOptions;
use tally_worker::WorkerDeps;

async fn seeded() -> (tally_testkit::TestDatabase, Store, Vec<i64>) {
    let db = tally_testkit::database_from_template("scoring_worker_migrated", |url| async move {
        tally_store::migrate_url(&url).await?;
        Ok(())
    })
    .await;
    let store = Store::connect(&db.url, 2).await.expect("store");
    let summary = store
        .seed(
            &SeedOptions {
                users: 30,
                predictions: 400,
                competitions: 1,
                teams_per_competition: 6,
                played_fraction: 0.4,
                seed: 11,
            },
            &|_| {},
        )
        .await
        .expect("seeded");
    (db, store, summary.open_match_ids)
}

fn queue(redis: &tally_testkit::TestRedis) -> (Producer, QueueAdmin) {
    let client = QueueClient::new(&redis.url, QueueConfig::with_prefix(&redis.namespace)).expect("client");
    (Producer::new(client.clone()), QueueAdmin::new(client))
}

/// No grace period: every marker is due (the tests only run a repair once
/// the work they started is lost).
fn now(batch: u32) -> RepairPipeline {
    RepairPipeline { grace_secs: 0, batch }
}

#[tokio::test]
async fn a_repair_enqueues_what_was_lost_oldest_first_once_and_reports_it() {
    let (db, store, open) = seeded().await;
    let redis = tally_testkit::redis().await;
    let (producer, admin) = queue(&redis);
    let conn = db.client().await;

    // A result written straight into the database, no job; a match scored
    // whose CalculatePoints was lost; a match cancelled whose ScoreMatch
    // (which voids) was lost. Marked in that order.
    conn.execute(
        "UPDATE matches SET status = 'finished', home_score = 2, away_score = 1 WHERE id = $1",
        &[&open[0]],
    )
    .await
    .expect("psql-style result");
    store.record_result(open[1], 0, 0).await.expect("result");
    store.score_match(open[1]).await.expect("scored");
    store.cancel_match(open[2]).await.expect("cancelled");

    // Within the grace period it is work in flight, not lost: left alone.
    let young = repair(
        &store,
        &producer,
        &RepairPipeline {
            grace_secs: 3_600,
            batch: 10,
        },
    )
    .await
    .expect("repair");
    assert_eq!(young, RepairReport::default(), "nothing is due yet");
    assert_eq!(
        admin.stats(ScoreMatch::QUEUE).await.expect("stats").counters.enqueued,
        0
    );

    let first = repair(&store, &producer, &now(2)).await.expect("repair");
    assert_eq!(
        (first.unscored, first.points_missing, first.unvoided),
        (1, 1, 0),
        "batch of 2, oldest first: {first:?}"
    );
    assert_eq!(
        (first.enqueued, first.already_queued, first.remaining),
        (2, 0, 1),
        "{first:?}"
    );
    let scoring = admin.stats(ScoreMatch::QUEUE).await.expect("stats");
    assert_eq!(scoring.ready, 1, "ScoreMatch for the result written directly");
    assert!(admin.stats(CalculatePoints::QUEUE).await.expect("stats").ready >= 1);

    // No worker ran: the next run reaches the cancelled match, and finds
    // the first repair of the others still waiting, so adds nothing twice.
    let second = repair(&store, &producer, &now(2)).await.expect("repair");
    assert_eq!(second.unvoided, 1, "{second:?}");
    assert_eq!(
        (second.enqueued, second.already_queued, second.remaining),
        (1, 1, 1),
        "{second:?}"
    );
    let scoring = admin.stats(ScoreMatch::QUEUE).await.expect("stats");
    assert_eq!(scoring.ready, 2, "one ScoreMatch per lost match, never two");
    assert_eq!(scoring.counters.enqueued, 2);

    // Once the work is done, the next run finds nothing.
    for m in [open[0], open[2]] {
        store.score_match(m).await.expect("scored");
    }
    for m in [open[0], open[1], open[2]] {
        store.calculate_points(m).await.expect("points");
    }
    let third = repair(&store, &producer, &now(2)).await.expect("repair");
    assert_eq!(third, RepairReport::default());
    assert_eq!(
        admin.stats(ScoreMatch::QUEUE).await.expect("stats").counters.enqueued,
        2,
        "nothing more enqueued"
    );
}

#[tokio::test]
async fn a_larger_backlog_is_worked_off_oldest_first_within_the_batch() {
    let (db, store, open) = seeded().await;
    let redis = tally_testkit::redis().await;
    let (producer, admin) = queue(&redis);
    let conn = db.client().await;
    // Five results written straight into the database, marked hours ago,
    // the last one longest ago.
    let lost = &open[..5];
    for (age, &m) in lost.iter().enumerate() {
        conn.execute(
            "UPDATE matches SET status = 'finished', home_score = 1, away_score = 1 WHERE id = $1",
            &[&m],
        )
        .await
        .expect("psql-style result");
        conn.execute(
            "UPDATE match_pipeline_pending SET marked_at = now() - make_interval(hours => 2, mins => $2)
             WHERE match_id = $1",
            &[&m, &(age as i32)],
        )
        .await
        .expect("marked long ago");
    }
    let hour = RepairPipeline {
        grace_secs: 3_600,
        batch: 2,
    };
    let touched = async || -> Vec<i64> {
        conn.query(
            "SELECT match_id FROM match_pipeline_pending WHERE marked_at > now() - interval '1 hour' ORDER BY match_id",
            &[],
        )
        .await
        .expect("markers")
        .iter()
        .map(|r| r.get(0))
        .collect()
    };

    let first = repair(&store, &producer, &hour).await.expect("repair");
    assert_eq!(
        (first.unscored, first.enqueued, first.remaining),
        (2, 2, 3),
        "{first:?}"
    );
    let mut oldest = vec![lost[3], lost[4]];
    oldest.sort_unstable();
    assert_eq!(
        touched().await,
        oldest,
        "the two oldest first, then to the back of the line"
    );

    // A repaired match is not repaired again before another grace period:
    // the next runs reach the ones behind it.
    let second = repair(&store, &producer, &hour).await.expect("repair");
    assert_eq!((second.unscored, second.remaining), (2, 1), "{second:?}");
    let third = repair(&store, &producer, &hour).await.expect("repair");
    assert_eq!((third.unscored, third.remaining), (1, 0), "{third:?}");
    assert_eq!(touched().await.len(), 5);
    let fourth = repair(&store, &producer, &hour).await.expect("repair");
    assert_eq!(fourth, RepairReport::default(), "every lost match repaired once");
    let scoring = admin.stats(ScoreMatch::QUEUE).await.expect("stats");
    assert_eq!(
        (scoring.ready, scoring.counters.enqueued),
        (5, 5),
        "each lost match once: {scoring:?}"
    );
}

// The cancellation token is tokio-util's, which this crate does not depend on.
#[allow(clippy::default_trait_access)]
fn context(timeout: Duration) -> JobContext {
    JobContext {
        id: "repair".into(),
        kind: RepairPipeline::KIND.into(),
        queue: scoring_worker::QUEUE.into(),
        attempt: 1,
        token: 1,
        crashes: 0,
        errors: 0,
        policy: JobPolicy {
            timeout_ms: timeout.as_millis() as u64,
            ..RepairPipeline::POLICY
        },
        trace: None,
        created_at_ms: 0,
        cancel: Default::default(),
        deadline: Instant::now() + timeout,
    }
}

#[tokio::test]
async fn without_its_database_a_repair_fails_retryably_after_waiting_for_it() {
    let redis = tally_testkit::redis().await;
    let (producer, admin) = queue(&redis);
    // Nothing listens on port 1.
    let deps = WorkerDeps {
        store: Store::connect_lazy("postgres://tally@127.0.0.1:1/tally?connect_timeout=1", 1).expect("store"),
        producer,
    };
    let timeout = Duration::from_secs(2);
    let started = Instant::now();
    let result = scoring_worker::repair_pipeline(&deps, &now(10), &context(timeout)).await;
    assert!(matches!(result, Err(JobError::Retry(_))), "retried later: {result:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "the attempt waited for the database first: {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < timeout,
        "and ended by itself: {:?}",
        started.elapsed()
    );
    assert_eq!(
        admin.stats(ScoreMatch::QUEUE).await.expect("stats").counters.enqueued,
        0
    );
}

#[tokio::test]
async fn a_repair_with_bounds_out_of_range_gives_up() {
    let redis = tally_testkit::redis().await;
    let (producer, _) = queue(&redis);
    let deps = WorkerDeps {
        store: Store::connect_lazy("postgres://tally@127.0.0.1:1/tally", 1).expect("store"),
        producer,
    };
    for job in [
        now(0),
        now(RepairPipeline::MAX_BATCH + 1),
        RepairPipeline {
            grace_secs: RepairPipeline::MAX_GRACE_SECS + 1,
            batch: 1,
        },
    ] {
        let result = scoring_worker::repair_pipeline(&deps, &job, &context(Duration::from_secs(2))).await;
        assert!(matches!(result, Err(JobError::GiveUp(_))), "{job:?}: {result:?}");
    }
}
