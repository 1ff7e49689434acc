//! Producer → worker round trips: the happy path, priorities, dedup,
//! concurrency, delayed jobs and waking without polling.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Echo, Hooks, QUEUE, Recorder, eventually, private_setup, setup, spawn, wait_until_blocked};
use tally_jobs::Priority;
use tally_queue::{EnqueueOptions, JobContext, JobError, Producer, QueueAdmin, QueueClient, QueueConfig, Worker};

#[tokio::test]
async fn enqueued_jobs_are_processed_once_and_leave_nothing_behind() {
    let (_redis, client) = setup().await;
    let producer = Producer::new(client.clone());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let worker = Worker::builder(client.clone(), QUEUE)
        .handle(move |job: Echo, ctx: JobContext| {
            let seen = seen2.clone();
            async move {
                assert_eq!(ctx.attempt, 1);
                assert!(ctx.token > 0);
                seen.lock().expect("lock").push(job.n);
                Ok(())
            }
        })
        .build()
        .expect("build");
    let running = spawn(worker);
    for n in 0..10 {
        producer.enqueue(&Echo::new(n)).await.expect("enqueue");
    }
    let jobs: Vec<Echo> = (10..110).map(Echo::new).collect();
    let batch = producer.enqueue_batch(&jobs).await.expect("batch");
    assert_eq!(batch.len(), 100);
    assert!(batch.iter().all(|e| !e.deduplicated));
    let admin = QueueAdmin::new(client.clone());
    eventually("110 completions", Duration::from_secs(10), || async {
        admin.stats(QUEUE).await.expect("stats").counters.completed == 110
    })
    .await;
    let report = running.stop().await;
    assert_eq!(report.completed, 110);
    let mut seen = seen.lock().expect("lock").clone();
    seen.sort_unstable();
    assert_eq!(seen, (0..110).collect::<Vec<_>>());
    let stats = admin.stats(QUEUE).await.expect("stats");
    assert_eq!(
        (stats.ready, stats.scheduled, stats.in_flight, stats.dead),
        (0, 0, 0, 0)
    );
    assert_eq!(stats.counters.enqueued, 110);
}

/// Guarantee 7: strict priority order within a queue.
#[tokio::test]
async fn s07_priorities_are_claimed_in_strict_order() {
    let (_redis, client) = setup().await;
    let producer = Producer::new(client.clone());
    // Enqueued low first, so any FIFO leak would show.
    for (n, priority) in [
        (1, Priority::Low),
        (2, Priority::Normal),
        (3, Priority::High),
        (4, Priority::Low),
        (5, Priority::High),
        (6, Priority::Normal),
    ] {
        producer
            .enqueue(&Echo {
                priority: Some(priority),
                ..Echo::new(n)
            })
            .await
            .expect("enqueue");
    }
    // An override through the options wins over the job's own priority.
    producer
        .enqueue_with(
            &Echo::new(7),
            EnqueueOptions {
                priority: Some(Priority::High),
                ..EnqueueOptions::default()
            },
        )
        .await
        .expect("enqueue");
    let admin = QueueAdmin::new(client.clone());
    let stats = admin.stats(QUEUE).await.expect("stats");
    assert_eq!(
        (
            stats.ready_by_priority.high,
            stats.ready_by_priority.normal,
            stats.ready_by_priority.low
        ),
        (3, 2, 2)
    );
    assert_eq!(admin.ready_len(QUEUE, Priority::High).await.expect("llen"), 3);

    let order = Arc::new(Mutex::new(Vec::new()));
    let seen = order.clone();
    let worker = Worker::builder(client.clone(), QUEUE)
        .concurrency(1)
        .handle(move |job: Echo, _ctx: JobContext| {
            seen.lock().expect("lock").push(job.n);
            async { Ok(()) }
        })
        .build()
        .expect("build");
    let running = spawn(worker);
    eventually("7 jobs", Duration::from_secs(10), || async {
        order.lock().expect("lock").len() == 7
    })
    .await;
    running.stop().await;
    assert_eq!(*order.lock().expect("lock"), vec![3, 5, 7, 2, 6, 1, 4]);
}

/// Guarantee 8: a waiting job absorbs enqueues with the same dedup key; once
/// it has started, a new enqueue creates a new job.
#[tokio::test]
async fn s08_dedup_coalesces_while_waiting_and_not_after_start() {
    let (_redis, client) = setup().await;
    let producer = Producer::new(client.clone());
    let keyed = |n| Echo {
        key: Some("refresh:all".into()),
        ..Echo::new(n)
    };
    let first = producer.enqueue(&keyed(1)).await.expect("enqueue");
    assert!(!first.deduplicated);
    for n in 2..=100 {
        let again = producer.enqueue(&keyed(n)).await.expect("enqueue");
        assert!(again.deduplicated);
        assert_eq!(again.id, first.id);
    }
    // Within one batch too.
    let batch = producer.enqueue_batch(&[keyed(101), keyed(102)]).await.expect("batch");
    assert!(batch.iter().all(|e| e.deduplicated && e.id == first.id));
    // A different key, or no key, is its own job.
    let other = producer
        .enqueue(&Echo {
            key: Some("refresh:standings".into()),
            ..Echo::new(103)
        })
        .await
        .expect("enqueue");
    assert!(!other.deduplicated);
    let admin = QueueAdmin::new(client.clone());
    assert_eq!(admin.stats(QUEUE).await.expect("stats").ready, 2);

    // Once the waiting job has started, a request must create a new job (it
    // may need to see data committed after the first one started).
    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    let worker = Worker::builder(client.clone(), QUEUE)
        .concurrency(1)
        .handle(move |job: Echo, _ctx: JobContext| {
            let started = started_tx.clone();
            let gate = gate.clone();
            async move {
                started.send(job.n).expect("send");
                gate.notified().await;
                Ok(())
            }
        })
        .build()
        .expect("build");
    let running = spawn(worker);
    let n = tokio::time::timeout(Duration::from_secs(10), started_rx.recv())
        .await
        .expect("start")
        .expect("n");
    assert_eq!(n, 1, "the coalesced job keeps the first payload");
    let fresh = producer.enqueue(&keyed(200)).await.expect("enqueue");
    assert!(!fresh.deduplicated);
    assert_ne!(fresh.id, first.id);
    let coalesced = producer.enqueue(&keyed(201)).await.expect("enqueue");
    assert_eq!(coalesced.id, fresh.id);
    assert!(coalesced.deduplicated);
    // Two more jobs start: the other key's job and the fresh one.
    for _ in 0..2 {
        release.notify_one();
        tokio::time::timeout(Duration::from_secs(10), started_rx.recv())
            .await
            .expect("next start");
    }
    release.notify_one();
    eventually("3 completions", Duration::from_secs(10), || async {
        admin.stats(QUEUE).await.expect("stats").counters.completed == 3
    })
    .await;
    running.stop().await;
    assert_eq!(admin.stats(QUEUE).await.expect("stats").counters.enqueued, 3);
}

/// Guarantee 9: at most `concurrency` attempts per worker process; several
/// processes share a queue; each job runs exactly once.
#[tokio::test]
async fn s09_concurrency_per_worker_and_many_workers() {
    let (_redis, client) = setup().await;
    let producer = Producer::new(client.clone());
    let jobs: Vec<Echo> = (0..60).map(Echo::new).collect();
    producer.enqueue_batch(&jobs).await.expect("batch");
    let runs = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    let mut peaks = Vec::new();
    for w in 0..3 {
        let active = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        peaks.push(peak.clone());
        let runs = runs.clone();
        let worker = Worker::builder(client.clone(), QUEUE)
            .concurrency(4)
            .handle(move |job: Echo, _ctx: JobContext| {
                let (active, peak, runs) = (active.clone(), peak.clone(), runs.clone());
                async move {
                    let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    runs.lock().expect("lock").push((w, job.n));
                    active.fetch_sub(1, Ordering::SeqCst);
                    Ok(())
                }
            })
            .build()
            .expect("build");
        workers.push(spawn(worker));
    }
    eventually("60 runs", Duration::from_secs(20), || async {
        runs.lock().expect("lock").len() >= 60
    })
    .await;
    for w in workers {
        w.stop().await;
    }
    let runs = runs.lock().expect("lock").clone();
    assert_eq!(runs.len(), 60, "each job ran once");
    let distinct: HashSet<u64> = runs.iter().map(|(_, n)| *n).collect();
    assert_eq!(distinct.len(), 60);
    for peak in &peaks {
        let peak = peak.load(Ordering::SeqCst);
        assert!(peak <= 4, "a worker ran {peak} attempts at once");
    }
    assert!(
        peaks.iter().any(|p| p.load(Ordering::SeqCst) > 1),
        "attempts did run concurrently"
    );
    let workers_used: HashSet<usize> = runs.iter().map(|(w, _)| *w).collect();
    assert!(workers_used.len() > 1, "the queue was shared by several workers");
}

/// A worker whose idle poll and promoter safety sleep are a minute long, so
/// anything that happens within seconds was caused by a wake-up, not a poll.
fn no_polling(client: &QueueClient, url: &str) -> QueueClient {
    let config = QueueConfig {
        idle_poll: Duration::from_mins(1),
        promote_max_sleep: Duration::from_mins(1),
        ..client.config().clone()
    };
    QueueClient::new(url, config).expect("client")
}

/// Guarantee 5 (ready work): an idle worker blocks on Redis and is woken by
/// an enqueue at once, not by a poll.
#[tokio::test]
async fn s05_idle_worker_is_woken_by_enqueue_without_polling() {
    let (server, client) = private_setup().await;
    let client = no_polling(&client, &server.url());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let worker = Worker::builder(client.clone(), QUEUE)
        .handle(move |job: Echo, _ctx: JobContext| {
            tx.send(job.n).expect("send");
            async { Ok(()) }
        })
        .build()
        .expect("build");
    let running = spawn(worker);
    // The worker finds the queue empty and blocks.
    wait_until_blocked(&server.url(), 1).await;
    let producer = Producer::new(client.clone());
    for n in 0..3 {
        producer.enqueue(&Echo::new(n)).await.expect("enqueue");
        let got = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("woken well before the 60 s poll");
        assert_eq!(got, Some(n));
        // Blocked again before the next job arrives.
        wait_until_blocked(&server.url(), 1).await;
    }
    running.stop().await;
}

/// Guarantee 5 (delayed work): a delayed job waits in the scheduled set and
/// starts once due; the promoter learns of the due time by announcement,
/// not by polling (its safety sleep is a minute here).
#[tokio::test]
async fn s05_delayed_job_starts_when_due_not_before() {
    let (server, client) = private_setup().await;
    let client = no_polling(&client, &server.url());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let worker = Worker::builder(client.clone(), QUEUE)
        .handle(move |job: Echo, _ctx: JobContext| {
            tx.send((job.n, Instant::now())).expect("send");
            async { Ok(()) }
        })
        .build()
        .expect("build");
    let running = spawn(worker);
    wait_until_blocked(&server.url(), 1).await;
    let producer = Producer::new(client.clone());
    let admin = QueueAdmin::new(client.clone());
    let enqueued = Instant::now();
    producer
        .enqueue_with(&Echo::new(1), EnqueueOptions::delayed(Duration::from_millis(400)))
        .await
        .expect("enqueue");
    let stats = admin.stats(QUEUE).await.expect("stats");
    assert_eq!(
        (stats.scheduled, stats.ready),
        (1, 0),
        "a delayed job waits in the scheduled set"
    );
    // A later-due job first, then an earlier one: the announcement of the
    // earlier due time must cut the promoter's sleep short.
    producer
        .enqueue_with(&Echo::new(3), EnqueueOptions::delayed(Duration::from_secs(2)))
        .await
        .expect("enqueue");
    let at = std::time::SystemTime::now() + Duration::from_millis(200);
    producer
        .enqueue_with(
            &Echo::new(2),
            EnqueueOptions {
                at: Some(at),
                ..EnqueueOptions::default()
            },
        )
        .await
        .expect("enqueue");
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(
            tokio::time::timeout(Duration::from_secs(20), rx.recv())
                .await
                .expect("started")
                .expect("job"),
        );
    }
    running.stop().await;
    assert_eq!(got.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![2, 1, 3]);
    let since = |i: usize| got[i].1.duration_since(enqueued);
    assert!(
        since(0) >= Duration::from_millis(150),
        "job 2 started early: {:?}",
        since(0)
    );
    assert!(
        since(1) >= Duration::from_millis(400),
        "job 1 started early: {:?}",
        since(1)
    );
    assert!(
        since(2) >= Duration::from_secs(2),
        "job 3 started early: {:?}",
        since(2)
    );
}

/// Guarantee 13: event hooks see completed / failed / dead with job facts,
/// and the trace context travels in the envelope to the handler.
#[tokio::test]
async fn s13_event_hooks_and_trace_context() {
    let (_redis, client) = setup().await;
    let producer = Producer::new(client.clone());
    let trace = tally_jobs::TraceContext {
        traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        tracestate: Some("vendor=1".into()),
    };
    producer
        .enqueue_with(
            &Echo::new(1),
            EnqueueOptions {
                trace: Some(trace.clone()),
                ..EnqueueOptions::default()
            },
        )
        .await
        .expect("enqueue");
    producer
        .enqueue(&Echo {
            max_attempts: Some(2),
            ..Echo::new(2)
        })
        .await
        .expect("enqueue");
    let recorder = Recorder::new();
    let traces = Arc::new(Mutex::new(Vec::new()));
    let seen = traces.clone();
    let worker = Worker::builder(client.clone(), QUEUE)
        .events(Hooks(recorder.clone()))
        .handle(move |job: Echo, ctx: JobContext| {
            seen.lock().expect("lock").push((job.n, ctx.trace.clone()));
            async move {
                if job.n == 2 {
                    Err(JobError::Retry("boom".into()))
                } else {
                    Ok(())
                }
            }
        })
        .build()
        .expect("build");
    let running = spawn(worker);
    eventually("events", Duration::from_secs(10), || async {
        recorder.count("completed") == 1 && recorder.count("dead") == 1
    })
    .await;
    running.stop().await;
    assert_eq!(recorder.count("failed"), 1);
    let completed = &recorder.of("completed")[0];
    assert_eq!(completed.queue, QUEUE);
    assert_eq!(completed.kind.as_deref(), Some("echo"));
    assert_eq!(completed.attempt, 1);
    assert!(completed.duration.is_some() && completed.wait.is_some());
    let failed = &recorder.of("failed")[0];
    assert_eq!(failed.error.as_deref(), Some("boom"));
    let dead = &recorder.of("dead")[0];
    assert_eq!(dead.attempt, 2);
    assert!(dead.error.as_deref().is_some_and(|e| e.contains("boom")), "{dead:?}");
    let traces = traces.lock().expect("lock");
    assert!(traces.contains(&(1, Some(trace))));
}

/// Enqueue is idempotent per id: a caller-chosen id sent twice (a retried
/// request, another producer) is one job, run once; within one batch too.
#[tokio::test]
async fn an_id_enqueued_twice_is_one_job() {
    let (redis, client) = setup().await;
    let producer = Producer::new(client.clone());
    let with_id = |id: &str| EnqueueOptions {
        id: Some(id.to_owned()),
        ..EnqueueOptions::default()
    };
    let first = producer
        .enqueue_with(&Echo::new(1), with_id("fixed-1"))
        .await
        .expect("enqueue");
    let again = producer
        .enqueue_with(&Echo::new(2), with_id("fixed-1"))
        .await
        .expect("enqueue");
    assert_eq!((first.id.as_str(), first.deduplicated), ("fixed-1", false));
    assert_eq!((again.id.as_str(), again.deduplicated), ("fixed-1", true));
    // Scheduled for later, then the same id again now: still one job.
    let later = EnqueueOptions {
        delay: Some(Duration::from_secs(60)),
        ..with_id("fixed-2")
    };
    producer.enqueue_with(&Echo::new(3), later).await.expect("enqueue");
    let dup = producer
        .enqueue_with(&Echo::new(4), with_id("fixed-2"))
        .await
        .expect("enqueue");
    assert!(dup.deduplicated);
    let admin = QueueAdmin::new(client.clone());
    let stats = admin.stats(QUEUE).await.expect("stats");
    assert_eq!((stats.ready, stats.scheduled, stats.counters.enqueued), (1, 1, 2));

    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let worker = Worker::builder(client.clone(), QUEUE)
        .handle(move |_job: Echo, _ctx: JobContext| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        })
        .build()
        .expect("build");
    let running = spawn(worker);
    eventually("the job ran", Duration::from_secs(10), || async {
        admin.stats(QUEUE).await.expect("stats").counters.completed == 1
    })
    .await;
    // Stopping waits for anything already claimed: a second copy of the id
    // would have run by then or still wait in the ready list (checked below).
    running.stop().await;
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the id ran once");
    let mut conn = redis.connection().await;
    let ready: Vec<String> = redis::AsyncCommands::lrange(&mut conn, client.keys(QUEUE).ready(Priority::Normal), 0, -1)
        .await
        .expect("lrange");
    assert!(ready.is_empty(), "no second copy of the id waits: {ready:?}");
}

/// A dedup entry whose job is gone (left by another producer, or by an
/// older version) is replaced, not followed: the enqueue makes a real job.
#[tokio::test]
async fn a_dangling_dedup_entry_does_not_swallow_new_jobs() {
    let (redis, client) = setup().await;
    let mut conn = redis.connection().await;
    let _: () = redis::AsyncCommands::hset(&mut conn, client.keys(QUEUE).dedup(), "refresh:all", "gone-job")
        .await
        .expect("hset");
    let keyed = Echo {
        key: Some("refresh:all".into()),
        ..Echo::new(1)
    };
    let producer = Producer::new(client.clone());
    let enqueued = producer.enqueue(&keyed).await.expect("enqueue");
    assert!(!enqueued.deduplicated, "coalesced into a job that does not exist");
    assert_ne!(enqueued.id, "gone-job");
    let again = producer.enqueue(&keyed).await.expect("enqueue");
    assert_eq!((again.id, again.deduplicated), (enqueued.id, true));
    let stats = QueueAdmin::new(client).stats(QUEUE).await.expect("stats");
    assert_eq!(stats.ready, 1);
}
