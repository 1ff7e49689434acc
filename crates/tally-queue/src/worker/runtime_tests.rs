//! The claim script's crash accounting, driven directly (no worker loop), so
//! each round decides exactly which jobs were started and which only held.

use std::sync::Arc;
use std::time::Duration;

use super::Shared;
use crate::scheduler::reap_expired;
use crate::worker::calls::{claim_call, report_acks};
use crate::worker::runtime::Finished;
use crate::{NoEvents, Producer, QueueAdmin, QueueClient, QueueConfig};

const QUEUE: &str = "held";

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Job(u64);

impl tally_jobs::Job for Job {
    const KIND: &'static str = "job";
    const QUEUE: &'static str = QUEUE;

    fn payload_schema() -> serde_json::Value {
        serde_json::json!({})
    }

    fn example() -> Self {
        Self(1)
    }
}

async fn setup() -> (tally_testkit::TestRedis, Arc<Shared>) {
    let redis = tally_testkit::redis().await;
    let config = QueueConfig {
        lease: Duration::from_millis(100),
        ..QueueConfig::with_prefix(&redis.namespace)
    };
    let client = QueueClient::connect(&redis.url, config).await.expect("connect");
    let shared = Arc::new(Shared {
        keys: client.keys(QUEUE),
        client,
        queue: QUEUE.to_owned(),
        events: Arc::new(NoEvents),
        counters: super::Counters::default(),
        worker_id: "test".to_owned(),
        slots: Arc::default(),
    });
    (redis, shared)
}

/// Claims every ready job (`start_now` of them started at once), lets the
/// leases lapse as if the worker had died, and reaps them.
async fn lose(shared: &Shared, count: usize, start_now: usize) -> Vec<(String, u32)> {
    let reply = claim_call(shared, count, start_now, &[], None).await.expect("claim");
    assert_eq!(reply.jobs.len(), count, "every job claimed");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let reaped = reap_expired(&shared.client, &shared.keys).await.expect("reap");
    assert_eq!(reaped.len(), count);
    reply.jobs.into_iter().map(|j| (j.id, j.crashes)).collect()
}

#[tokio::test]
async fn jobs_only_held_by_lost_workers_are_not_charged_crashes() {
    let (_redis, shared) = setup().await;
    Producer::new(shared.client.clone())
        .enqueue_batch(&[Job(1), Job(2), Job(3), Job(4)])
        .await
        .expect("enqueue");
    let admin = QueueAdmin::new(shared.client.clone());
    // Eight workers die holding all four jobs: no crash, nothing dead.
    for _ in 0..8 {
        for (id, crashes) in lose(&shared, 4, 0).await {
            assert_eq!(crashes, 0, "job {id} was charged a crash while only held");
        }
    }
    assert_eq!(admin.stats(QUEUE).await.expect("stats").dead, 0);
    // Started jobs are charged: three deaths while running bury a job.
    for round in 1..=3_u32 {
        let claimed = lose(&shared, 4, 4).await;
        assert!(claimed.iter().all(|(_, crashes)| *crashes == round - 1));
    }
    let stats = admin.stats(QUEUE).await.expect("stats");
    assert_eq!((stats.dead, stats.ready), (4, 0));
    let dead = admin.dead_list(QUEUE, 0, 10).await.expect("dead");
    assert!(
        dead.iter()
            .all(|d| d.crashes == 3 && d.error.contains("worker lost 3 times")),
        "{dead:?}"
    );
}

#[tokio::test]
async fn a_job_lost_while_held_over_and_over_still_ends_dead() {
    let (_redis, shared) = setup().await;
    Producer::new(shared.client.clone())
        .enqueue(&Job(1))
        .await
        .expect("enqueue");
    let admin = QueueAdmin::new(shared.client.clone());
    // max attempts 3: a job that kills every worker right after leaving the
    // buffer (so Redis only ever saw it held) is buried after 3 x 3 losses.
    for _ in 0..8 {
        lose(&shared, 1, 0).await;
    }
    assert_eq!(admin.stats(QUEUE).await.expect("stats").dead, 0);
    lose(&shared, 1, 0).await;
    let dead = admin.dead_list(QUEUE, 0, 10).await.expect("dead");
    assert_eq!(dead.len(), 1);
    assert!(dead[0].error.contains("while holding"), "{}", dead[0].error);
    assert_eq!(dead[0].crashes, 0);
}

#[tokio::test]
async fn claims_and_acks_of_any_size_lose_nothing() {
    // Lua's unpack() takes about 8,000 values; the claim of 20,000 jobs
    // unpacks 40,000 (lease entries), its ack as many.
    const TOTAL: usize = 20_000;
    let (_redis, shared) = setup().await;
    let jobs: Vec<Job> = (0..TOTAL as u64).map(Job).collect();
    Producer::new(shared.client.clone())
        .enqueue_batch(&jobs)
        .await
        .expect("enqueue");
    let reply = claim_call(&shared, TOTAL, TOTAL, &[], None)
        .await
        .expect("claim of 20,000");
    assert_eq!(reply.jobs.len(), TOTAL);
    let acks: Vec<Finished> = reply
        .jobs
        .iter()
        .map(|j| Finished {
            id: j.id.clone(),
            token: j.token,
            kind: "job".into(),
            attempt: j.attempt,
            duration: Duration::ZERO,
            wait: None,
            resent: false,
        })
        .collect();
    let reply = claim_call(&shared, 0, 0, &acks, None).await.expect("ack of 20,000");
    assert_eq!(reply.acks, vec![1; TOTAL]);
    let stats = QueueAdmin::new(shared.client.clone())
        .stats(QUEUE)
        .await
        .expect("stats");
    assert_eq!(
        (stats.counters.completed, stats.ready, stats.in_flight),
        (TOTAL as u64, 0, 0)
    );
}

#[tokio::test]
async fn an_acknowledgement_sent_again_recognises_its_own_earlier_effect() {
    let (_redis, shared) = setup().await;
    Producer::new(shared.client.clone())
        .enqueue(&Job(1))
        .await
        .expect("enqueue");
    let claimed = claim_call(&shared, 1, 1, &[], None).await.expect("claim").jobs;
    let ack = || Finished {
        id: claimed[0].id.clone(),
        token: claimed[0].token,
        kind: "job".into(),
        attempt: 1,
        duration: Duration::ZERO,
        wait: None,
        resent: false,
    };
    // The first acknowledgement ran but its reply was lost; the second one
    // finds the job finished.
    assert_eq!(
        claim_call(&shared, 0, 0, &[ack()], None).await.expect("ack").acks,
        vec![1]
    );
    let again = claim_call(&shared, 0, 0, &[ack()], None).await.expect("ack again").acks;
    assert_eq!(again, vec![2], "already finished, not a stale token");
    report_acks(&shared, vec![ack()], again, true);
    let counters = &shared.counters;
    assert_eq!(
        (
            counters.completed.load(std::sync::atomic::Ordering::Relaxed),
            counters.stale.load(std::sync::atomic::Ordering::Relaxed)
        ),
        (1, 0)
    );
}

#[tokio::test]
async fn fencing_tokens_never_repeat_after_redis_loses_its_last_writes() {
    let (redis, shared) = setup().await;
    Producer::new(shared.client.clone())
        .enqueue(&Job(1))
        .await
        .expect("enqueue");
    let mut conn = redis.connection().await;
    let token_key = shared.keys.token();
    let before: Option<String> = redis::cmd("GET")
        .arg(&token_key)
        .query_async(&mut conn)
        .await
        .expect("get");
    let first = claim_call(&shared, 1, 1, &[], None).await.expect("claim").jobs;
    // A crash with AOF everysec loses the last second of writes: the token
    // counter is back where it was, and the job waits again.
    match before {
        Some(value) => {
            redis::cmd("SET")
                .arg(&token_key)
                .arg(value)
                .query_async::<()>(&mut conn)
                .await
        }
        None => redis::cmd("DEL").arg(&token_key).query_async::<()>(&mut conn).await,
    }
    .expect("roll the counter back");
    tokio::time::sleep(Duration::from_millis(150)).await;
    reap_expired(&shared.client, &shared.keys).await.expect("reap");
    let second = claim_call(&shared, 1, 1, &[], None).await.expect("claim").jobs;
    assert_eq!(first[0].id, second[0].id);
    assert!(
        second[0].token > first[0].token,
        "the second claim's token {} repeats or precedes the lost one {}",
        second[0].token,
        first[0].token
    );
}

#[test]
fn a_huge_backoff_or_retry_after_cannot_overflow_the_due_time() {
    use tally_jobs::{Backoff, BackoffKind, JobPolicy};

    use crate::worker::JobError;
    use crate::worker::driver::decide;
    use crate::worker::runtime::Running;

    let running = |backoff| Running {
        id: "x".into(),
        token: 1,
        kind: "job".into(),
        attempt: 1,
        errors: 0,
        policy: JobPolicy {
            max_attempts: 50,
            backoff,
            ..JobPolicy::default()
        },
        started: std::time::Instant::now(),
        wait: None,
        cancel: tokio_util::sync::CancellationToken::new(),
    };
    let huge = Backoff {
        kind: BackoffKind::Exponential,
        base_ms: u64::MAX,
        max_ms: u64::MAX,
        jitter: true,
    };
    let now = i64::try_from(crate::now_ms()).expect("now");
    let year_ms = 366 * 24 * 3_600_000;
    for error in [
        JobError::Retry("boom".into()),
        JobError::RetryAfter(Duration::MAX, "later".into()),
    ] {
        let (due, _) = decide(&running(huge), &error);
        assert!(due > now && due <= now + year_ms, "due {due} for {error:?}");
    }
}
