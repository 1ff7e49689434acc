//! Failure handling: retries with backoff, giving up, panics, timeouts, the
//! dead set and its caps, and bad input.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Echo, Hooks, Other, QUEUE, Recorder, eventually, fast_config, setup, spawn};
use redis::AsyncCommands as _;
use tally_queue::{DeadSelector, JobContext, JobError, Producer, QueueAdmin, QueueClient, QueueConfig, Worker};

/// Guarantee 3: a failed attempt is retried after its backoff, from the
/// scheduled set in Redis; "retry after D" overrides the backoff; the
/// handler sees the attempt number and the failures so far.
#[tokio::test]
async fn s03_failures_retry_with_backoff_from_redis() {
    let (_redis, client) = setup().await;
    let recorder = Recorder::new();
    let starts = Arc::new(Mutex::new(Vec::new()));
    let seen = starts.clone();
    let worker = Worker::builder(client.clone(), QUEUE)
        .events(Hooks(recorder.clone()))
        .handle(move |_job: Echo, ctx: JobContext| {
            seen.lock()
                .expect("lock")
                .push((ctx.attempt, ctx.errors, Instant::now()));
            async move {
                match ctx.attempt {
                    1 => Err(JobError::RetryAfter(Duration::from_millis(700), "not yet".into())),
                    2 => Err(JobError::Retry("still not".into())),
                    _ => Ok(()),
                }
            }
        })
        .build()
        .expect("build");
    let running = spawn(worker);
    Producer::new(client.clone())
        .enqueue(&Echo::new(1))
        .await
        .expect("enqueue");
    let admin = QueueAdmin::new(client.clone());
    eventually("first failure recorded", Duration::from_secs(10), || async {
        recorder.count("failed") == 1
    })
    .await;
    let stats = admin.stats(QUEUE).await.expect("stats");
    assert_eq!(
        (stats.scheduled, stats.ready, stats.in_flight),
        (1, 0, 0),
        "the retry waits in Redis's scheduled set"
    );
    eventually("completion", Duration::from_secs(10), || async {
        recorder.count("completed") == 1
    })
    .await;
    running.stop().await;
    let starts = starts.lock().expect("lock").clone();
    assert_eq!(
        starts.iter().map(|(a, e, _)| (*a, *e)).collect::<Vec<_>>(),
        vec![(1, 0), (2, 1), (3, 2)]
    );
    assert!(
        starts[1].2 - starts[0].2 >= Duration::from_millis(700),
        "retry-after respected"
    );
    // Exponential backoff from 50 ms: the second failure waits 100 ms.
    assert!(
        starts[2].2 - starts[1].2 >= Duration::from_millis(100),
        "backoff respected"
    );
    let stats = admin.stats(QUEUE).await.expect("stats");
    assert_eq!(
        (stats.counters.failed, stats.counters.retried, stats.counters.completed),
        (2, 2, 1)
    );
}

/// Guarantee 3 + 4: attempts exhausted → dead set with the last error.
#[tokio::test]
async fn s03_exhausted_attempts_go_to_the_dead_set_with_the_last_error() {
    let (_redis, client) = setup().await;
    let recorder = Recorder::new();
    let worker = Worker::builder(client.clone(), QUEUE)
        .events(Hooks(recorder.clone()))
        .handle(|_job: Echo, ctx: JobContext| async move { Err(JobError::Retry(format!("boom {}", ctx.attempt))) })
        .build()
        .expect("build");
    let running = spawn(worker);
    let id = Producer::new(client.clone())
        .enqueue(&Echo::new(1))
        .await
        .expect("enqueue")
        .id;
    eventually("dead", Duration::from_secs(10), || async {
        recorder.count("dead") == 1
    })
    .await;
    running.stop().await;
    assert_eq!(recorder.count("failed"), 2);
    let admin = QueueAdmin::new(client.clone());
    let dead = admin.dead_get(QUEUE, &id).await.expect("get").expect("dead job");
    assert!(dead.error.starts_with("boom 3"), "{}", dead.error);
    assert_eq!((dead.attempts, dead.errors, dead.crashes), (3, 3, 0));
    assert_eq!(dead.kind.as_deref(), Some("echo"));
}

/// Guarantee 3: "do not retry" goes dead at once.
#[tokio::test]
async fn s03_give_up_skips_the_remaining_attempts() {
    let (_redis, client) = setup().await;
    let recorder = Recorder::new();
    let worker = Worker::builder(client.clone(), QUEUE)
        .events(Hooks(recorder.clone()))
        .handle(|_job: Echo, _ctx: JobContext| async { Err(JobError::GiveUp("match does not exist".into())) })
        .build()
        .expect("build");
    let running = spawn(worker);
    let id = Producer::new(client.clone())
        .enqueue(&Echo::new(1))
        .await
        .expect("enqueue")
        .id;
    eventually("dead", Duration::from_secs(10), || async {
        recorder.count("dead") == 1
    })
    .await;
    running.stop().await;
    assert_eq!(recorder.count("failed"), 0);
    let dead = QueueAdmin::new(client.clone())
        .dead_get(QUEUE, &id)
        .await
        .expect("get")
        .expect("dead");
    assert_eq!(dead.attempts, 1);
    assert!(dead.error.contains("match does not exist"));
}

/// A panicking handler is a failed attempt, not a dead worker.
#[tokio::test]
async fn panics_are_caught_and_count_as_failures() {
    let (_redis, client) = setup().await;
    let recorder = Recorder::new();
    let worker = Worker::builder(client.clone(), QUEUE)
        .events(Hooks(recorder.clone()))
        .handle(|job: Echo, ctx: JobContext| async move {
            assert!(
                ctx.attempt > 1 || job.n != 1,
                "deliberate panic in attempt {}",
                ctx.attempt
            );
            Ok(())
        })
        .build()
        .expect("build");
    let running = spawn(worker);
    let producer = Producer::new(client.clone());
    producer.enqueue(&Echo::new(1)).await.expect("enqueue");
    producer.enqueue(&Echo::new(2)).await.expect("enqueue");
    eventually("both complete", Duration::from_secs(10), || async {
        recorder.count("completed") == 2
    })
    .await;
    running.stop().await;
    let failed = recorder.of("failed");
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("deliberate panic")),
        "{failed:?}"
    );
}

/// Sets a flag when dropped: shows that a timed-out handler's future was
/// really dropped, and whether its cancellation token fired first.
struct DropProbe {
    dropped: Arc<AtomicBool>,
    cancelled_first: Arc<AtomicBool>,
    ctx: JobContext,
}

impl Drop for DropProbe {
    fn drop(&mut self) {
        self.cancelled_first
            .store(self.ctx.cancel.is_cancelled(), Ordering::SeqCst);
        self.dropped.store(true, Ordering::SeqCst);
    }
}

/// Guarantee 6: the per-job timeout cancels the handler (token cancelled,
/// future dropped) and is a retryable failure.
#[tokio::test]
async fn s06_timeout_really_cancels_the_handler_and_retries() {
    let (_redis, client) = setup().await;
    let recorder = Recorder::new();
    let dropped = Arc::new(AtomicBool::new(false));
    let cancelled_first = Arc::new(AtomicBool::new(false));
    let (d, c) = (dropped.clone(), cancelled_first.clone());
    let worker = Worker::builder(client.clone(), QUEUE)
        .events(Hooks(recorder.clone()))
        .handle(move |_job: Echo, ctx: JobContext| {
            let (d, c) = (d.clone(), c.clone());
            async move {
                if ctx.attempt == 1 {
                    let _probe = DropProbe {
                        dropped: d,
                        cancelled_first: c,
                        ctx: ctx.clone(),
                    };
                    // Would hang for an hour without the timeout.
                    tokio::time::sleep(Duration::from_hours(1)).await;
                }
                Ok(())
            }
        })
        .build()
        .expect("build");
    let running = spawn(worker);
    // The job's own policy says 200 ms.
    Producer::new(client.clone())
        .enqueue(&Echo {
            timeout_ms: Some(200),
            ..Echo::new(1)
        })
        .await
        .expect("enqueue");
    eventually("retried and completed", Duration::from_secs(10), || async {
        recorder.count("completed") == 1
    })
    .await;
    running.stop().await;
    assert!(dropped.load(Ordering::SeqCst), "the handler future was dropped");
    assert!(
        cancelled_first.load(Ordering::SeqCst),
        "the cancellation token fired before the drop"
    );
    let failed = recorder.of("failed");
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0].error.as_deref().is_some_and(|e| e.contains("timed out")),
        "{failed:?}"
    );
}

/// The worker-level timeout overrides the policy's.
#[tokio::test]
async fn s06_worker_timeout_override() {
    let (_redis, client) = setup().await;
    let recorder = Recorder::new();
    let worker = Worker::builder(client.clone(), QUEUE)
        .events(Hooks(recorder.clone()))
        .job_timeout(Duration::from_millis(100))
        .handle(|_job: Echo, _ctx: JobContext| async {
            tokio::time::sleep(Duration::from_hours(1)).await;
            Ok(())
        })
        .build()
        .expect("build");
    let running = spawn(worker);
    Producer::new(client.clone())
        .enqueue(&Echo {
            max_attempts: Some(1),
            ..Echo::new(1)
        })
        .await
        .expect("enqueue");
    eventually("dead after one timeout", Duration::from_secs(10), || async {
        recorder.count("dead") == 1
    })
    .await;
    running.stop().await;
    assert!(
        recorder.of("dead")[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("timed out after 100ms"))
    );
}

/// Guarantee 4: the dead set can be listed, inspected, retried and purged.
#[tokio::test]
async fn s04_dead_set_list_inspect_retry_purge() {
    let (_redis, client) = setup().await;
    let producer = Producer::new(client.clone());
    let admin = QueueAdmin::new(client.clone());
    let recorder = Recorder::new();
    let healed = Arc::new(AtomicBool::new(false));
    let h = healed.clone();
    let worker = Worker::builder(client.clone(), QUEUE)
        .events(Hooks(recorder.clone()))
        .handle(move |job: Echo, _ctx: JobContext| {
            let ok = h.load(Ordering::SeqCst);
            async move {
                if ok {
                    Ok(())
                } else {
                    Err(JobError::GiveUp(format!("bad job {}", job.n)))
                }
            }
        })
        .build()
        .expect("build");
    let running = spawn(worker);
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(producer.enqueue(&Echo::new(n)).await.expect("enqueue").id);
        eventually("dead", Duration::from_secs(10), || async {
            recorder.count("dead") == n as usize + 1
        })
        .await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let list = admin.dead_list(QUEUE, 0, 10).await.expect("list");
    assert_eq!(
        list.iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
        ids.iter().rev().cloned().collect::<Vec<_>>(),
        "most recent first"
    );
    assert_eq!(admin.dead_list(QUEUE, 1, 2).await.expect("page").len(), 2);
    let one = admin.dead_get(QUEUE, &ids[0]).await.expect("get").expect("dead");
    assert!(one.error.contains("bad job 0"));
    assert!(one.envelope.as_deref().is_some_and(|e| e.contains("\"kind\":\"echo\"")));
    assert!(one.died_at_ms > 0);
    assert!(admin.dead_get(QUEUE, "no-such-id").await.expect("get").is_none());

    // Retry one: it runs again with fresh attempts and now succeeds.
    healed.store(true, Ordering::SeqCst);
    assert_eq!(
        admin
            .dead_retry(QUEUE, DeadSelector::Ids(vec![ids[0].clone(), "no-such-id".into()]))
            .await
            .expect("retry"),
        1
    );
    eventually("retried job completes", Duration::from_secs(10), || async {
        recorder.count("completed") == 1
    })
    .await;
    assert_eq!(recorder.of("completed")[0].attempt, 1, "attempts start afresh");
    // Purge one by id, then everything older than a minute (none), then all.
    assert_eq!(
        admin
            .dead_purge(QUEUE, DeadSelector::Ids(vec![ids[1].clone()]))
            .await
            .expect("purge"),
        1
    );
    assert_eq!(
        admin
            .dead_purge(QUEUE, DeadSelector::OlderThan(Duration::from_mins(1)))
            .await
            .expect("purge"),
        0
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        admin
            .dead_purge(QUEUE, DeadSelector::OlderThan(Duration::from_millis(10)))
            .await
            .expect("purge"),
        3
    );
    assert_eq!(admin.stats(QUEUE).await.expect("stats").dead, 0);
    // Retry all: bury two more, retry both.
    healed.store(false, Ordering::SeqCst);
    producer.enqueue(&Echo::new(10)).await.expect("enqueue");
    producer.enqueue(&Echo::new(11)).await.expect("enqueue");
    eventually("two more dead", Duration::from_secs(10), || async {
        admin.stats(QUEUE).await.expect("stats").dead == 2
    })
    .await;
    healed.store(true, Ordering::SeqCst);
    assert_eq!(admin.dead_retry(QUEUE, DeadSelector::All).await.expect("retry all"), 2);
    eventually("both complete", Duration::from_secs(10), || async {
        recorder.count("completed") == 3
    })
    .await;
    running.stop().await;
    let stats = admin.stats(QUEUE).await.expect("stats");
    assert_eq!((stats.dead, stats.ready, stats.in_flight), (0, 0, 0));
    assert_eq!(admin.dead_purge(QUEUE, DeadSelector::All).await.expect("purge all"), 0);
}

/// Guarantee 4 + 12: the dead set is bounded by count and by age.
#[tokio::test]
async fn s04_dead_set_is_capped_by_count_and_age() {
    let redis = tally_testkit::redis().await;
    let config = QueueConfig {
        dead_max_count: 5,
        dead_max_age: Duration::from_millis(400),
        ..fast_config(&redis.namespace)
    };
    let client = QueueClient::connect(&redis.url, config).await.expect("connect");
    let recorder = Recorder::new();
    let worker = Worker::builder(client.clone(), QUEUE)
        .concurrency(1)
        .events(Hooks(recorder.clone()))
        .handle(|_job: Echo, _ctx: JobContext| async { Err(JobError::GiveUp("no".into())) })
        .build()
        .expect("build");
    let running = spawn(worker);
    let producer = Producer::new(client.clone());
    let mut ids = Vec::new();
    for n in 0..8 {
        ids.push(producer.enqueue(&Echo::new(n)).await.expect("enqueue").id);
        eventually("dead", Duration::from_secs(10), || async {
            recorder.count("dead") == n as usize + 1
        })
        .await;
    }
    let admin = QueueAdmin::new(client.clone());
    let kept: Vec<String> = admin
        .dead_list(QUEUE, 0, 100)
        .await
        .expect("list")
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(
        kept,
        ids[3..].iter().rev().cloned().collect::<Vec<_>>(),
        "the 5 most recent are kept"
    );
    // Age: after the max age, the next death drops the old ones.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let last = producer.enqueue(&Echo::new(99)).await.expect("enqueue").id;
    eventually("dead", Duration::from_secs(10), || async {
        recorder.count("dead") == 9
    })
    .await;
    running.stop().await;
    let kept: Vec<String> = admin
        .dead_list(QUEUE, 0, 100)
        .await
        .expect("list")
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(kept, vec![last]);
    // The dead records of dropped jobs are gone too (no leftovers).
    let mut conn = tally_testkit::redis().await.connection().await;
    let keys = client.keys(QUEUE);
    let envelopes: u64 = conn.hlen(keys.dead_envelopes()).await.expect("hlen");
    let infos: u64 = conn.hlen(keys.dead_info()).await.expect("hlen");
    assert_eq!((envelopes, infos), (1, 1));
}

/// Guarantee 11: bad input goes to the dead set with a clear reason and the
/// worker keeps going.
#[tokio::test]
async fn s11_bad_input_goes_dead_with_a_reason_and_the_worker_keeps_going() {
    let (redis, client) = setup().await;
    let keys = client.keys(QUEUE);
    let mut conn = redis.connection().await;
    let good = |id: &str, kind: &str, payload: &str, v: u32| {
        format!(
            r#"{{"v":{v},"id":"{id}","kind":"{kind}","queue":"test","payload":{payload},"policy":{{"maxAttempts":3,"backoff":{{"type":"exponential","baseMs":50,"maxMs":1000}},"timeoutMs":5000,"priority":"normal"}},"createdAtMs":1}}"#
        )
    };
    let bad: Vec<(&str, String, &str)> = vec![
        ("not-json", "{this is not json".to_owned(), "malformed envelope"),
        (
            "future-version",
            good("future-version", "echo", r#"{"n":1}"#, 2),
            "unsupported envelope version 2",
        ),
        (
            "unknown-kind",
            good("unknown-kind", "teleport", "{}", 1),
            "unknown job kind \"teleport\"",
        ),
        (
            "wrong-shape",
            good("wrong-shape", "echo", r#"{"n":"seven"}"#, 1),
            "payload does not match kind \"echo\"",
        ),
    ];
    for (id, envelope, _) in &bad {
        let _: () = conn.hset(keys.jobs(), *id, envelope).await.expect("hset");
        let _: () = conn
            .rpush(keys.ready(tally_jobs::Priority::Normal), *id)
            .await
            .expect("rpush");
    }
    // An id without an envelope.
    let _: () = conn
        .rpush(keys.ready(tally_jobs::Priority::Normal), "no-envelope")
        .await
        .expect("rpush");
    // A kind this worker has no handler for, enqueued properly.
    let producer = Producer::new(client.clone());
    let other = producer
        .enqueue(&Other { text: "hi".into() })
        .await
        .expect("enqueue")
        .id;
    // And a good job after all of them.
    producer.enqueue(&Echo::new(7)).await.expect("enqueue");
    let recorder = Recorder::new();
    let worker = Worker::builder(client.clone(), QUEUE)
        .events(Hooks(recorder.clone()))
        .handle(|_job: Echo, _ctx: JobContext| async { Ok(()) })
        .build()
        .expect("build");
    let running = spawn(worker);
    eventually("good job done, bad ones dead", Duration::from_secs(10), || async {
        recorder.count("completed") == 1 && recorder.count("dead") == 6
    })
    .await;
    running.stop().await;
    let admin = QueueAdmin::new(client.clone());
    for (id, _, reason) in &bad {
        let dead = admin.dead_get(QUEUE, id).await.expect("get").expect("dead");
        assert!(dead.error.contains(reason), "{id}: {}", dead.error);
    }
    let missing = admin.dead_get(QUEUE, "no-envelope").await.expect("get").expect("dead");
    assert!(missing.error.contains("envelope missing"), "{}", missing.error);
    let other = admin.dead_get(QUEUE, &other).await.expect("get").expect("dead");
    assert!(other.error.contains("unknown job kind \"other\""), "{}", other.error);
    assert_eq!(other.kind.as_deref(), Some("other"));
}

/// An id that is not UTF-8 (written by another producer) harms only its own
/// job: it is claimed in the same batch as good jobs, which all complete,
/// and it goes dead with a reason; the dead list still reads.
#[tokio::test]
async fn an_id_that_is_not_utf8_harms_only_its_own_job() {
    let (redis, client) = setup().await;
    let keys = client.keys(QUEUE);
    let producer = Producer::new(client.clone());
    let good: Vec<Echo> = (0..5).map(Echo::new).collect();
    producer.enqueue_batch(&good[..2]).await.expect("enqueue");
    let bad_id: &[u8] = b"bad-\xff\xfe-id";
    let mut conn = redis.connection().await;
    let envelope = r#"{"v":1,"id":"x","kind":"echo","queue":"test","payload":{"n":99},"policy":{"maxAttempts":3,"backoff":{"type":"exponential","baseMs":50,"maxMs":1000},"timeoutMs":5000,"priority":"normal"},"createdAtMs":1}"#;
    let _: () = conn.hset(keys.jobs(), bad_id, envelope).await.expect("hset");
    let _: () = conn
        .rpush(keys.ready(tally_jobs::Priority::Normal), bad_id)
        .await
        .expect("rpush");
    producer.enqueue_batch(&good[2..]).await.expect("enqueue");
    let recorder = Recorder::new();
    let worker = Worker::builder(client.clone(), QUEUE)
        .concurrency(10)
        .events(Hooks(recorder.clone()))
        .handle(|_job: Echo, _ctx: JobContext| async { Ok(()) })
        .build()
        .expect("build");
    let running = spawn(worker);
    eventually("good jobs done, the bad id dead", Duration::from_secs(10), || async {
        recorder.count("completed") == 5 && recorder.count("dead") == 1
    })
    .await;
    running.stop().await;
    let admin = QueueAdmin::new(client.clone());
    let dead = admin.dead_list(QUEUE, 0, 10).await.expect("the dead list reads");
    assert_eq!(dead.len(), 1);
    assert!(dead[0].error.contains("not valid UTF-8"), "{}", dead[0].error);
    let stats = admin.stats(QUEUE).await.expect("stats");
    assert_eq!(
        (
            stats.counters.completed,
            stats.counters.recovered,
            stats.ready,
            stats.in_flight
        ),
        (5, 0, 0, 0)
    );
}

/// Envelopes above the configured size are refused at enqueue with an error
/// naming the limit; nothing of the batch is stored.
#[tokio::test]
async fn envelopes_above_the_size_limit_are_refused_at_enqueue() {
    let redis = tally_testkit::redis().await;
    let config = QueueConfig {
        max_envelope_bytes: 1024,
        ..fast_config(&redis.namespace)
    };
    let client = QueueClient::connect(&redis.url, config).await.expect("connect");
    let producer = Producer::new(client.clone());
    let big = Echo {
        key: Some("k".repeat(2000)),
        ..Echo::new(1)
    };
    let err = producer
        .enqueue_batch(&[Echo::new(0), big])
        .await
        .expect_err("a 2 KB envelope over a 1 KB limit");
    let message = err.to_string();
    assert!(matches!(err, tally_queue::QueueError::InvalidArgument(_)), "{err:?}");
    assert!(message.contains("above the limit of 1024 bytes"), "{message}");
    let stats = QueueAdmin::new(client.clone()).stats(QUEUE).await.expect("stats");
    assert_eq!((stats.ready, stats.counters.enqueued), (0, 0), "nothing stored");
    // The default limit is 1 MiB.
    assert_eq!(QueueConfig::default().max_envelope_bytes, 1024 * 1024);
    producer.enqueue(&Echo::new(2)).await.expect("a small one passes");
}

/// Retrying every dead job walks the whole dead set, past any number of
/// entries that cannot be retried (no stored envelope), and says how many it
/// skipped; purging by an age too large for milliseconds purges nothing
/// instead of wrapping around to a short age.
#[tokio::test]
async fn retry_all_walks_past_unretriable_entries_and_huge_ages_purge_nothing() {
    let (redis, client) = setup().await;
    let keys = client.keys(QUEUE);
    let mut conn = redis.connection().await;
    // 1,500 dead entries without an envelope, an hour older than any real
    // one (and younger than the dead set's age cap).
    let an_hour_ago = tally_queue::now_ms() - 3_600_000;
    let mut pipe = redis::pipe();
    for i in 0..1500 {
        pipe.zadd(keys.dead(), format!("ghost-{i}"), an_hour_ago + i).ignore();
    }
    let _: () = pipe.query_async(&mut conn).await.expect("ghosts");
    let producer = Producer::new(client.clone());
    let give_up = Echo {
        max_attempts: Some(1),
        ..Echo::new(1)
    };
    for n in 0..3 {
        producer.enqueue(&Echo { n, ..give_up.clone() }).await.expect("enqueue");
    }
    let worker = Worker::builder(client.clone(), QUEUE)
        .handle(|_job: Echo, _ctx: JobContext| async { Err::<(), _>(JobError::retry("no")) })
        .build()
        .expect("build");
    let running = spawn(worker);
    let admin = QueueAdmin::new(client.clone());
    eventually("three real dead jobs", Duration::from_secs(10), || async {
        admin.stats(QUEUE).await.expect("stats").dead == 1503
    })
    .await;
    running.kill().await;
    let purged = admin
        .dead_purge(QUEUE, DeadSelector::OlderThan(Duration::MAX))
        .await
        .expect("purge by a huge age");
    assert_eq!(purged, 0, "nothing died that long ago");
    let (retried, skipped) = admin
        .dead_retry_counted(QUEUE, DeadSelector::All)
        .await
        .expect("retry all");
    assert_eq!((retried, skipped), (3, 1500));
    let stats = admin.stats(QUEUE).await.expect("stats");
    assert_eq!((stats.ready, stats.dead), (3, 1500));
}
