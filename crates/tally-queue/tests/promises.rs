//! Promises of docs/PROTOCOL.md and docs/OPERATIONS.md, each shown once:
//! claiming ahead and its bounds, wake-ups that cannot be lost, recovery
//! within the default lease, a full Redis refusing enqueues whole, the wake
//! list's cap, scripts loaded again after `SCRIPT FLUSH`, and the promoter's
//! choice of ready list.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Echo, QUEUE, eventually, fast_config, private_setup, raw_connection, spawn, wait_until_blocked};
use redis::AsyncCommands as _;
use tally_jobs::Priority;
use tally_queue::{JobContext, Producer, QueueAdmin, QueueClient, QueueConfig, QueueError, Worker, WorkerReport};
use tally_testkit::{DedicatedRedis, RedisOptions};

/// Runs `jobs` jobs through one worker; returns its report.
async fn run_jobs(client: &QueueClient, worker: Worker, jobs: u64) -> WorkerReport {
    let list: Vec<Echo> = (0..jobs).map(Echo::new).collect();
    Producer::new(client.clone())
        .enqueue_batch(&list)
        .await
        .expect("enqueue");
    let admin = QueueAdmin::new(client.clone());
    let running = spawn(worker);
    eventually("all done", Duration::from_mins(1), || async {
        admin.stats(QUEUE).await.expect("stats").counters.completed >= jobs
    })
    .await;
    let report = running.stop().await;
    let stats = admin.stats(QUEUE).await.expect("stats");
    assert_eq!(stats.counters.completed, jobs);
    let _ = QueueAdmin::new(client.clone()).obliterate(QUEUE).await;
    report
}

fn echo_worker(client: &QueueClient, concurrency: usize, pause: Duration, prefetch: bool) -> Worker {
    Worker::builder(client.clone(), QUEUE)
        .concurrency(concurrency)
        .prefetch(prefetch)
        .handle(move |_job: Echo, _ctx: JobContext| async move {
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            Ok(())
        })
        .build()
        .expect("build")
}

/// PROTOCOL.md, "Claiming in batches": with handlers much faster than a
/// round trip a worker claims ahead, at most four times its concurrency or
/// 200;
/// `prefetch(false)` turns it off; with slow handlers nothing is claimed
/// ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claiming_ahead_happens_for_fast_handlers_only_and_within_its_bound() {
    const CONCURRENCY: u64 = 2;
    let (_server, client) = private_setup().await;
    let fast = run_jobs(&client, echo_worker(&client, 2, Duration::ZERO, true), 5000).await;
    assert!(
        fast.most_claimed_ahead > 0,
        "no-op handlers: jobs claimed ahead: {fast:?}"
    );
    assert!(
        fast.most_claimed_ahead <= (CONCURRENCY * 4).max(200),
        "at most 4x concurrency, or 200, ahead: {fast:?}"
    );
    let off = run_jobs(&client, echo_worker(&client, 2, Duration::ZERO, false), 2000).await;
    assert_eq!(off.most_claimed_ahead, 0, "prefetch(false): {off:?}");
    let slow = run_jobs(&client, echo_worker(&client, 2, Duration::from_millis(20), true), 100).await;
    assert_eq!(
        slow.most_claimed_ahead, 0,
        "20 ms handlers: nothing claimed ahead: {slow:?}"
    );
}

/// PROTOCOL.md, "Claiming in batches": jobs claimed ahead go back when the
/// worker's slots are all taken by handlers slower than the estimate that
/// claimed them, so another worker runs them instead of them waiting behind
/// the slow ones. A worker of concurrency 2 learns that jobs are fast and
/// claims ahead; then two slow jobs take both its slots for 5 s. A second
/// worker, started then, runs all the fast jobs behind them while the slow
/// ones still run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_held_behind_slow_handlers_go_back_for_other_workers() {
    const FAST_BEFORE: u64 = 3000;
    const SLOW: u64 = 2;
    const FAST_AFTER: u64 = 300;
    let (_server, client) = private_setup().await;
    let slow_started = Arc::new(AtomicU64::new(0));
    let handler = || {
        let slow_started = slow_started.clone();
        move |job: Echo, _ctx: JobContext| {
            let slow_started = slow_started.clone();
            async move {
                if (FAST_BEFORE..FAST_BEFORE + SLOW).contains(&job.n) {
                    slow_started.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                Ok(())
            }
        }
    };
    let first = Worker::builder(client.clone(), QUEUE)
        .concurrency(2)
        .handle(handler())
        .build()
        .expect("build");
    let jobs: Vec<Echo> = (0..FAST_BEFORE + SLOW + FAST_AFTER).map(Echo::new).collect();
    Producer::new(client.clone())
        .enqueue_batch(&jobs)
        .await
        .expect("enqueue");
    let admin = QueueAdmin::new(client.clone());
    let first = spawn(first);
    eventually(
        "the slow jobs hold both slots of the first worker",
        Duration::from_secs(30),
        || async { slow_started.load(Ordering::SeqCst) == SLOW },
    )
    .await;
    let second = spawn(
        Worker::builder(client.clone(), QUEUE)
            .concurrency(2)
            .handle(handler())
            .build()
            .expect("build"),
    );
    eventually("every fast job done", Duration::from_secs(30), || async {
        admin.stats(QUEUE).await.expect("stats").counters.completed >= FAST_BEFORE + FAST_AFTER
    })
    .await;
    // The slow ones are still running: the fast ones did not wait for them.
    let stats = admin.stats(QUEUE).await.expect("stats");
    assert_eq!(
        (stats.counters.completed, stats.in_flight, stats.ready),
        (FAST_BEFORE + FAST_AFTER, SLOW, 0),
        "{stats:?}"
    );
    eventually("the slow jobs done too", Duration::from_secs(30), || async {
        admin.stats(QUEUE).await.expect("stats").counters.completed == FAST_BEFORE + FAST_AFTER + SLOW
    })
    .await;
    let second = second.stop().await;
    let first = first.stop().await;
    assert!(
        first.most_claimed_ahead > 0,
        "the first worker claimed ahead: {first:?}"
    );
    assert!(first.requeued > 0, "it gave the held jobs back: {first:?}");
    assert_eq!(
        first.completed + second.completed,
        FAST_BEFORE + FAST_AFTER + SLOW,
        "{first:?} {second:?}"
    );
}

/// PROTOCOL.md, "Waking workers without polling": no wake-up can be lost.
/// Idle workers whose safety poll is a minute long, and producers enqueueing
/// one job at a time just as the workers run dry: every job starts, none
/// waits anywhere near the poll (a lost wake-up would wait the whole minute).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_wake_up_is_lost_when_jobs_arrive_as_workers_go_idle() {
    const PRODUCERS: u64 = 4;
    const PER_PRODUCER: u64 = 150;
    let (server, client) = private_setup().await;
    let client = QueueClient::new(
        &server.url(),
        QueueConfig {
            idle_poll: Duration::from_mins(1),
            ..client.config().clone()
        },
    )
    .expect("client");
    let worst_wait_ms = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let worst = worst_wait_ms.clone();
        let worker = Worker::builder(client.clone(), QUEUE)
            .concurrency(1)
            .handle(move |_job: Echo, ctx: JobContext| {
                let waited = tally_queue::now_ms().saturating_sub(ctx.created_at_ms);
                worst.fetch_max(waited, Ordering::SeqCst);
                async { Ok(()) }
            })
            .build()
            .expect("build");
        workers.push(spawn(worker));
    }
    wait_until_blocked(&server.url(), 4).await;
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let producer = Producer::new(client.clone());
        producers.push(tokio::spawn(async move {
            for i in 0..PER_PRODUCER {
                producer.enqueue(&Echo::new(p * 1000 + i)).await.expect("enqueue");
                // 0-2 ms apart: jobs land just as workers run dry and block.
                tokio::time::sleep(Duration::from_micros(rand::random::<u64>() % 2000)).await;
            }
        }));
    }
    for producer in producers {
        producer.await.expect("producer");
    }
    let admin = QueueAdmin::new(client.clone());
    // A hang guard, half the idle poll: only a lost wake-up takes that long.
    eventually("every job ran", Duration::from_secs(30), || async {
        admin.stats(QUEUE).await.expect("stats").counters.completed == PRODUCERS * PER_PRODUCER
    })
    .await;
    for worker in workers {
        worker.stop().await;
    }
    let worst = worst_wait_ms.load(Ordering::SeqCst);
    eprintln!("worst wait from enqueue to start: {worst} ms");
    assert!(worst < 30_000, "a job waited {worst} ms: a wake-up was lost");
}

/// PROTOCOL.md, "Recovery and bounds": with the default settings (15 s
/// lease, 1 s reap interval) a killed worker's job starts again within
/// lease + reap interval, plus scheduling noise. The one test that runs the
/// default lease; it takes about 16 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_job_is_recovered_within_the_default_lease_and_reap_interval() {
    let redis = tally_testkit::redis().await;
    let client = QueueClient::connect(&redis.url, QueueConfig::with_prefix(&redis.namespace))
        .await
        .expect("connect");
    let config = client.config().clone();
    Producer::new(client.clone())
        .enqueue(&Echo::new(1))
        .await
        .expect("enqueue");
    let (tx, mut started) = tokio::sync::mpsc::unbounded_channel::<(u32, Instant)>();
    let doomed_tx = tx.clone();
    let doomed = spawn(
        Worker::builder(client.clone(), QUEUE)
            .handle(move |_job: Echo, ctx: JobContext| {
                let tx = doomed_tx.clone();
                async move {
                    tx.send((ctx.attempt, Instant::now())).expect("send");
                    std::future::pending::<()>().await;
                    Ok(())
                }
            })
            .build()
            .expect("build"),
    );
    let (attempt, _) = started.recv().await.expect("first attempt");
    assert_eq!(attempt, 1);
    doomed.kill().await;
    let killed = Instant::now();
    let rescuer = spawn(
        Worker::builder(client.clone(), QUEUE)
            .handle(move |_job: Echo, ctx: JobContext| {
                let tx = tx.clone();
                async move {
                    tx.send((ctx.attempt, Instant::now())).expect("send");
                    Ok(())
                }
            })
            .build()
            .expect("build"),
    );
    let (attempt, at) = tokio::time::timeout(Duration::from_mins(1), started.recv())
        .await
        .expect("recovered within a minute (hang guard)")
        .expect("second attempt");
    rescuer.stop().await;
    let recovery = at.duration_since(killed);
    eprintln!(
        "recovered after {recovery:?} (lease {:?}, reap interval {:?})",
        config.lease, config.reap_interval
    );
    assert_eq!(attempt, 2);
    // The lease had up to a heartbeat period less to run at the kill.
    assert!(
        recovery <= config.lease + config.reap_interval + Duration::from_secs(2),
        "recovered after {recovery:?}"
    );
}

/// OPERATIONS.md: with `maxmemory-policy noeviction` a full Redis refuses
/// writes, so an enqueue fails with an error and stores nothing of its batch
/// (the script is refused whole), instead of evicting queue keys.
#[tokio::test]
async fn a_full_redis_refuses_enqueues_whole_with_an_error() {
    // On a cluster every node has the limit; the queue's master fills up.
    let server = DedicatedRedis::start(RedisOptions {
        appendonly: false,
        extra_args: ["--maxmemory", "3mb", "--maxmemory-policy", "noeviction"]
            .map(str::to_owned)
            .to_vec(),
    })
    .await
    .expect("redis-server");
    let client = QueueClient::connect(&server.url(), fast_config("t"))
        .await
        .expect("connect");
    let producer = Producer::new(client.clone());
    let admin = QueueAdmin::new(client.clone());
    let mut stored = 0;
    let err = loop {
        // 500 new jobs with large payloads (their dedup keys) per batch.
        let batch: Vec<Echo> = (stored..stored + 500)
            .map(|n| Echo {
                key: Some(format!("{n}-{}", "x".repeat(200))),
                ..Echo::new(n)
            })
            .collect();
        match producer.enqueue_batch(&batch).await {
            Ok(done) => stored += done.len() as u64,
            Err(err) => break err,
        }
        assert!(stored < 1_000_000, "Redis never filled up");
    };
    assert!(matches!(err, QueueError::Redis(_)), "{err:?}");
    assert!(err.to_string().contains("OOM"), "{err}");
    let stats = admin.stats(QUEUE).await.expect("stats still readable");
    assert_eq!(stats.ready, stored, "the refused batch left nothing behind");
    assert_eq!(stats.counters.enqueued, stored);
}

/// PROTOCOL.md: the wake list is capped at 64 markers however many jobs are
/// made ready while no worker listens.
#[tokio::test]
async fn the_wake_list_is_capped() {
    let (server, client) = private_setup().await;
    let jobs: Vec<Echo> = (0..3000).map(Echo::new).collect();
    Producer::new(client.clone())
        .enqueue_batch(&jobs)
        .await
        .expect("enqueue");
    for n in 0..100 {
        Producer::new(client.clone())
            .enqueue(&Echo::new(10_000 + n))
            .await
            .expect("enqueue");
    }
    let mut conn = raw_connection(&server.url()).await;
    let markers: u64 = conn.llen(client.keys(QUEUE).wake()).await.expect("llen");
    assert_eq!(markers, 64);
}

/// PROTOCOL.md: scripts are loaded again after `SCRIPT FLUSH` (or a restart
/// without them), with no manual step, by producers and running workers.
#[tokio::test]
async fn scripts_are_loaded_again_after_script_flush() {
    let (server, client) = private_setup().await;
    let producer = Producer::new(client.clone());
    let done = Arc::new(AtomicU64::new(0));
    let counted = done.clone();
    let worker = Worker::builder(client.clone(), QUEUE)
        .handle(move |_job: Echo, _ctx: JobContext| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        })
        .build()
        .expect("build");
    let running = spawn(worker);
    producer.enqueue(&Echo::new(1)).await.expect("enqueue");
    eventually("first job", Duration::from_secs(10), || async {
        done.load(Ordering::SeqCst) == 1
    })
    .await;
    // Every master's scripts (the server's, or each node's of a cluster).
    for mut conn in tally_testkit::master_connections(&server.url()).await.expect("connect") {
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut conn)
            .await
            .expect("flush");
    }
    producer
        .enqueue(&Echo::new(2))
        .await
        .expect("enqueue after SCRIPT FLUSH");
    eventually("second job", Duration::from_secs(10), || async {
        done.load(Ordering::SeqCst) == 2
    })
    .await;
    running.stop().await;
}

/// PROTOCOL.md: a job scheduled by a producer that wrote no state (raw
/// `ZADD`) is promoted to the ready list its envelope's priority names.
#[tokio::test]
async fn the_promoter_reads_the_priority_from_the_envelope() {
    let (server, client) = private_setup().await;
    let keys = client.keys(QUEUE);
    let mut conn = raw_connection(&server.url()).await;
    for (id, priority) in [("a", "high"), ("b", "low"), ("c", "normal")] {
        let envelope = format!(
            r#"{{"v":1,"id":"{id}","kind":"echo","queue":"test","payload":{{"n":1}},"policy":{{"maxAttempts":3,"backoff":{{"type":"fixed","baseMs":50,"maxMs":50}},"timeoutMs":5000,"priority":"{priority}"}},"createdAtMs":1}}"#
        );
        let _: () = conn.hset(keys.jobs(), id, envelope).await.expect("hset");
        let _: () = conn.zadd(keys.scheduled(), id, 1).await.expect("zadd");
    }
    let admin = QueueAdmin::new(client.clone());
    assert_eq!(admin.promote_due(QUEUE).await.expect("promote"), 3);
    for (priority, id) in [(Priority::High, "a"), (Priority::Low, "b"), (Priority::Normal, "c")] {
        let listed: Vec<String> = conn.lrange(keys.ready(priority), 0, -1).await.expect("lrange");
        assert_eq!(listed, vec![id.to_owned()], "{priority:?}");
    }
}
