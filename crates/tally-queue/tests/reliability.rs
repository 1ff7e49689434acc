//! Reliability: recovery of a lost worker's job, fencing, crash loops,
//! graceful drain, bounded memory, and a Redis restart mid-run.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Echo, Hooks, QUEUE, Recorder, eventually, fast_config, setup, spawn};
use redis::AsyncCommands as _;
use tally_jobs::Priority;
use tally_queue::{EnqueueOptions, JobContext, JobError, Producer, QueueAdmin, QueueClient, QueueConfig, Worker};
use tally_testkit::{DedicatedRedis, RedisOptions};
use tokio::sync::mpsc;

/// A worker whose handler reports its start, then never finishes.
fn stuck_worker(client: &QueueClient, started: mpsc::UnboundedSender<(String, u64)>) -> Worker {
    Worker::builder(client.clone(), QUEUE)
        .concurrency(1)
        .handle(move |_job: Echo, ctx: JobContext| {
            let started = started.clone();
            async move {
                started.send((ctx.id.clone(), ctx.token)).expect("send");
                std::future::pending::<()>().await;
                Ok(())
            }
        })
        .build()
        .expect("build")
}

/// Guarantee 1: the job of a killed worker is recovered by another worker
/// within lease + a few seconds, as a new attempt with the crash counted.
#[tokio::test]
async fn s01_killed_workers_job_is_recovered_within_lease_plus_5s() {
    let (_redis, client) = setup().await;
    let lease = client.config().lease;
    let (tx, mut started) = mpsc::unbounded_channel();
    let doomed = spawn(stuck_worker(&client, tx));
    let id = Producer::new(client.clone())
        .enqueue(&Echo::new(1))
        .await
        .expect("enqueue")
        .id;
    let (started_id, _) = started.recv().await.expect("started");
    assert_eq!(started_id, id);
    // Let a few heartbeats pass first: the lease is extended while it runs.
    tokio::time::sleep(lease * 2).await;
    let admin = QueueAdmin::new(client.clone());
    assert_eq!(
        admin.stats(QUEUE).await.expect("stats").in_flight,
        1,
        "heartbeats kept the lease"
    );
    doomed.kill().await;
    let killed_at = Instant::now();

    let recorder = Recorder::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let rescuer = Worker::builder(client.clone(), QUEUE)
        .events(Hooks(recorder.clone()))
        .handle(move |_job: Echo, ctx: JobContext| {
            tx.send((ctx.attempt, ctx.crashes, Instant::now())).expect("send");
            async { Ok(()) }
        })
        .build()
        .expect("build");
    let running = spawn(rescuer);
    let (attempt, crashes, at) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("recovered")
        .expect("job");
    eventually("completion", Duration::from_secs(10), || async {
        recorder.count("completed") == 1
    })
    .await;
    running.stop().await;
    let recovery = at - killed_at;
    assert!(
        recovery <= lease + Duration::from_secs(5),
        "recovered after {recovery:?}"
    );
    assert_eq!((attempt, crashes), (2, 1));
    assert_eq!(recorder.count("recovered"), 1);
    let recovered = &recorder.of("recovered")[0];
    assert_eq!(
        (recovered.id.as_str(), recovered.kind.as_deref(), recovered.attempt),
        (id.as_str(), Some("echo"), 1)
    );
    let stats = admin.stats(QUEUE).await.expect("stats");
    assert_eq!(
        (stats.counters.recovered, stats.counters.completed, stats.in_flight),
        (1, 1, 0)
    );
}

/// Guarantee 2: a result with a stale fencing token is rejected, so a
/// recovered job is never finished twice by a slow old worker.
#[tokio::test]
async fn s02_stale_token_results_are_rejected() {
    let (redis, client) = setup().await;
    // The slow worker's heartbeat is effectively off, so its lease can be
    // made to lapse without racing a heartbeat.
    let slow_config = QueueConfig {
        lease: Duration::from_secs(20),
        heartbeat: Some(Duration::from_secs(19)),
        ..client.config().clone()
    };
    let slow_client = QueueClient::connect(&redis.url, slow_config).await.expect("connect");
    let (tx, mut started) = mpsc::unbounded_channel();
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    let slow = Worker::builder(slow_client.clone(), QUEUE)
        .concurrency(1)
        .background_tasks(false)
        .handle(move |job: Echo, ctx: JobContext| {
            let (tx, gate) = (tx.clone(), gate.clone());
            async move {
                tx.send(ctx.token).expect("send");
                gate.notified().await;
                if job.n == 2 {
                    Err(JobError::Retry("late failure".into()))
                } else {
                    Ok(())
                }
            }
        })
        .build()
        .expect("build");
    let slow = spawn(slow);
    let producer = Producer::new(client.clone());
    let admin = QueueAdmin::new(client.clone());
    let keys = client.keys(QUEUE);
    let mut conn = redis.connection().await;
    let mut stale_tokens = Vec::new();
    for n in [1, 2] {
        let id = producer.enqueue(&Echo::new(n)).await.expect("enqueue").id;
        let old_token = started.recv().await.expect("started");
        stale_tokens.push(old_token);
        // The slow worker stalls past its lease: make the lease lapse and reap.
        let _: () = conn.zadd(keys.leases(), &id, 0).await.expect("zadd");
        assert_eq!(admin.reap_expired(QUEUE).await.expect("reap"), 1);
        // Another worker runs it with a newer token and completes it.
        let (tx, mut rx) = mpsc::unbounded_channel();
        let fast = Worker::builder(client.clone(), QUEUE)
            .handle(move |_job: Echo, ctx: JobContext| {
                tx.send(ctx.token).expect("send");
                async { Ok(()) }
            })
            .build()
            .expect("build");
        let fast = spawn(fast);
        let new_token = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("rerun")
            .expect("token");
        assert!(new_token > old_token, "tokens grow: {new_token} > {old_token}");
        eventually("completed once", Duration::from_secs(10), || async {
            admin.stats(QUEUE).await.expect("stats").counters.completed == n
        })
        .await;
        fast.stop().await;
        // Now the old worker finishes (job 1) or fails (job 2): rejected.
        release.notify_one();
    }
    let report = slow.stop().await;
    assert_eq!((report.completed, report.retried, report.dead), (0, 0, 0));
    assert_eq!(report.stale, 2, "the late ack and the late failure were both refused");
    let stats = admin.stats(QUEUE).await.expect("stats");
    assert_eq!(
        (
            stats.counters.completed,
            stats.counters.failed,
            stats.scheduled,
            stats.ready,
            stats.in_flight
        ),
        (2, 0, 0, 0, 0)
    );
}

/// Guarantee 2: a worker whose lease is taken over sees its heartbeat refused
/// and its attempt cancelled.
#[tokio::test]
async fn s02_lost_lease_cancels_the_attempt() {
    let (redis, client) = setup().await;
    let cancelled = Arc::new(AtomicBool::new(false));
    let flag = cancelled.clone();
    let (tx, mut started) = mpsc::unbounded_channel();
    let worker = Worker::builder(client.clone(), QUEUE)
        .handle(move |_job: Echo, ctx: JobContext| {
            let (tx, flag) = (tx.clone(), flag.clone());
            async move {
                tx.send(ctx.id.clone()).expect("send");
                ctx.cancel.cancelled().await;
                flag.store(true, Ordering::SeqCst);
                Ok(())
            }
        })
        .build()
        .expect("build");
    let running = spawn(worker);
    Producer::new(client.clone())
        .enqueue(&Echo::new(1))
        .await
        .expect("enqueue");
    let id = started.recv().await.expect("started");
    // Someone else now holds the job (as after a recovery and a new claim).
    let mut conn = redis.connection().await;
    let _: () = conn
        .hset(client.keys(QUEUE).state(), &id, "999999:2:1:0:n")
        .await
        .expect("hset");
    eventually("attempt cancelled", Duration::from_secs(10), || async {
        cancelled.load(Ordering::SeqCst)
    })
    .await;
    let report = running.stop().await;
    assert_eq!((report.completed, report.stale), (0, 1));
}

/// Guarantee 3: crashes are counted apart from errors; a job that kills its
/// worker every time ends in the dead set instead of looping.
#[tokio::test]
async fn s03_a_job_that_kills_its_worker_every_time_ends_dead() {
    let (_redis, client) = setup().await;
    let id = Producer::new(client.clone())
        .enqueue(&Echo::new(1))
        .await
        .expect("enqueue")
        .id;
    let admin = QueueAdmin::new(client.clone());
    for crash in 1..=3_u32 {
        let (tx, mut started) = mpsc::unbounded_channel();
        let doomed = spawn(stuck_worker(&client, tx));
        tokio::time::timeout(Duration::from_secs(30), started.recv())
            .await
            .expect("claimed")
            .expect("started");
        doomed.kill().await;
        if crash < 3 {
            // The next worker's reaper returns it once the lease lapses.
            continue;
        }
        eventually("crash-looping job buried", Duration::from_secs(10), || async {
            let _ = admin.reap_expired(QUEUE).await;
            admin.stats(QUEUE).await.expect("stats").dead == 1
        })
        .await;
    }
    let dead = admin.dead_get(QUEUE, &id).await.expect("get").expect("dead");
    assert!(dead.error.contains("worker lost 3 times"), "{}", dead.error);
    assert_eq!((dead.crashes, dead.errors, dead.attempts), (3, 0, 3));
    let stats = admin.stats(QUEUE).await.expect("stats");
    assert_eq!(
        (
            stats.counters.recovered,
            stats.counters.dead,
            stats.ready,
            stats.in_flight
        ),
        (2, 1, 0, 0)
    );
}

/// Guarantee 10: on shutdown the worker stops claiming, lets short jobs
/// finish, and puts the unfinished ones back at the HEAD of their ready list
/// without spending an attempt, within the drain deadline.
#[tokio::test]
async fn s10_graceful_shutdown_requeues_unfinished_jobs_at_the_head() {
    let (_redis, client) = setup().await;
    let producer = Producer::new(client.clone());
    // n 0 and 1 hang; n 2 takes 100 ms; n 3..5 wait their turn.
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(producer.enqueue(&Echo::new(n)).await.expect("enqueue").id);
    }
    let (tx, mut started) = mpsc::unbounded_channel();
    let drain = Duration::from_millis(400);
    let worker = Worker::builder(client.clone(), QUEUE)
        .concurrency(3)
        .drain_timeout(drain)
        .handle(move |job: Echo, _ctx: JobContext| {
            let tx = tx.clone();
            async move {
                tx.send(job.n).expect("send");
                if job.n < 2 {
                    // Ignores cancellation: only the drain deadline stops it.
                    tokio::time::sleep(Duration::from_hours(1)).await;
                } else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(())
            }
        })
        .build()
        .expect("build");
    let running = spawn(worker);
    let mut first = HashSet::new();
    for _ in 0..3 {
        first.insert(started.recv().await.expect("started"));
    }
    assert_eq!(first, HashSet::from([0, 1, 2]));
    let stop_at = Instant::now();
    let report = running.stop().await;
    let took = stop_at.elapsed();
    assert!(took < drain + Duration::from_secs(3), "drain took {took:?}");
    assert_eq!((report.completed, report.requeued), (1, 2));
    assert!(
        started.try_recv().is_err(),
        "nothing new was claimed after the shutdown signal"
    );

    let admin = QueueAdmin::new(client.clone());
    let stats = admin.stats(QUEUE).await.expect("stats");
    assert_eq!((stats.ready, stats.in_flight, stats.counters.completed), (5, 0, 1));
    // The unfinished two are at the head, ahead of the jobs never started.
    let mut conn = tally_testkit::redis().await.connection().await;
    let head: Vec<String> = conn
        .lrange(client.keys(QUEUE).ready(Priority::Normal), 0, -1)
        .await
        .expect("lrange");
    assert_eq!(
        head[..2].iter().collect::<HashSet<_>>(),
        HashSet::from([&ids[0], &ids[1]])
    );
    assert_eq!(&head[2..], &ids[3..]);
    // And no attempt was spent: the next run is attempt 1 again.
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = attempts.clone();
    let worker = Worker::builder(client.clone(), QUEUE)
        .concurrency(1)
        .handle(move |job: Echo, ctx: JobContext| {
            seen.lock().expect("lock").push((job.n, ctx.attempt));
            async { Ok(()) }
        })
        .build()
        .expect("build");
    let running = spawn(worker);
    eventually("all done", Duration::from_secs(10), || async {
        attempts.lock().expect("lock").len() == 5
    })
    .await;
    running.stop().await;
    let attempts = attempts.lock().expect("lock").clone();
    assert!(attempts.iter().all(|(_, a)| *a == 1), "{attempts:?}");
}

/// Guarantee 10 with claiming ahead: a fast worker holds claimed jobs it has
/// not started yet; on shutdown they go back without spending an attempt,
/// and every job still runs exactly once overall.
#[tokio::test]
async fn s10_jobs_claimed_ahead_go_back_on_shutdown_without_spending_an_attempt() {
    const TOTAL: u64 = 20_000;
    let (_redis, client) = setup().await;
    let jobs: Vec<Echo> = (0..TOTAL).map(Echo::new).collect();
    Producer::new(client.clone())
        .enqueue_batch(&jobs)
        .await
        .expect("enqueue");
    let runs = Arc::new(Mutex::new(Vec::new()));
    let make = |runs: Arc<Mutex<Vec<(u64, u32)>>>| {
        Worker::builder(client.clone(), QUEUE)
            .concurrency(5)
            .handle(move |job: Echo, ctx: JobContext| {
                runs.lock().expect("lock").push((job.n, ctx.attempt));
                async { Ok(()) }
            })
            .build()
            .expect("build")
    };
    let first = spawn(make(runs.clone()));
    eventually("some progress", Duration::from_secs(30), || async {
        runs.lock().expect("lock").len() >= 3000
    })
    .await;
    let report = first.stop().await;
    eprintln!("first worker: {report:?}");
    // No-op handlers are far faster than a round trip, so the worker was
    // holding jobs claimed ahead when it stopped: they are the requeued.
    assert!(report.requeued > 0, "nothing was claimed ahead: {report:?}");
    let second = spawn(make(runs.clone()));
    let admin = QueueAdmin::new(client.clone());
    eventually("all done", Duration::from_mins(1), || async {
        admin.stats(QUEUE).await.expect("stats").counters.completed == TOTAL
    })
    .await;
    second.stop().await;
    let runs = runs.lock().expect("lock").clone();
    assert_eq!(
        runs.len() as u64,
        TOTAL,
        "each job ran exactly once (first worker requeued {})",
        report.requeued
    );
    assert!(
        runs.iter().all(|(_, attempt)| *attempt == 1),
        "no attempt was spent by the shutdown"
    );
    assert_eq!(runs.iter().map(|(n, _)| *n).collect::<HashSet<_>>().len() as u64, TOTAL);
}

/// Guarantee 12: after 100,000 jobs (with retries, dedup, delays and dead
/// jobs mixed in) the queue holds no per-job data: only its fixed keys.
#[tokio::test]
async fn s12_no_per_job_leftovers_after_100k_jobs() {
    const TOTAL: u64 = 100_000;
    let (redis, client) = setup().await;
    let producer = Producer::new(client.clone());
    let recorder = Recorder::new();
    let worker = Worker::builder(client.clone(), QUEUE)
        .concurrency(50)
        .events(Hooks(recorder.clone()))
        .handle(|job: Echo, ctx: JobContext| async move {
            match if job.n < TOTAL { job.n % 1000 } else { 0 } {
                1 if ctx.attempt == 1 => Err(JobError::RetryAfter(Duration::from_millis(1), "once".into())),
                2 => Err(JobError::GiveUp("never".into())),
                _ => Ok(()),
            }
        })
        .build()
        .expect("build");
    let running = spawn(worker);
    for chunk in (0..TOTAL).collect::<Vec<_>>().chunks(10_000) {
        let jobs: Vec<Echo> = chunk.iter().map(|n| Echo::new(*n)).collect();
        producer.enqueue_batch(&jobs).await.expect("batch");
    }
    for n in 0..100 {
        producer
            .enqueue(&Echo {
                key: Some(format!("k{}", n % 10)),
                ..Echo::new(TOTAL + n)
            })
            .await
            .expect("enqueue");
        producer
            .enqueue_with(
                &Echo::new(TOTAL + 1000 + n),
                EnqueueOptions::delayed(Duration::from_millis(50)),
            )
            .await
            .expect("enqueue");
    }
    let admin = QueueAdmin::new(client.clone());
    eventually("everything processed", Duration::from_mins(4), || async {
        let s = admin.stats(QUEUE).await.expect("stats");
        s.ready == 0
            && s.scheduled == 0
            && s.in_flight == 0
            && s.counters.completed + s.counters.dead == s.counters.enqueued
    })
    .await;
    running.stop().await;
    let stats = admin.stats(QUEUE).await.expect("stats");
    assert_eq!(stats.counters.dead, TOTAL / 1000);
    assert!(stats.counters.enqueued >= TOTAL + 100);

    let mut conn = redis.connection().await;
    // Every master's keys: on a cluster, SCAN answers for one node only.
    let found = redis.scan(&format!("{}:*", redis.namespace)).await;
    let keys = client.keys(QUEUE);
    let allowed: HashSet<String> = keys.all().into_iter().collect();
    for key in &found {
        assert!(allowed.contains(key), "unexpected key {key}");
    }
    assert!(found.len() <= allowed.len());
    for hash in [keys.jobs(), keys.dedup()] {
        let n: u64 = conn.hlen(&hash).await.expect("hlen");
        assert_eq!(n, 0, "{hash} still holds {n} entries");
    }
    // The state hash keeps only its one field that is not a job (which
    // keeps it in hashtable encoding, docs/PROTOCOL.md "Per-job state").
    let fields: Vec<Vec<u8>> = conn.hkeys(keys.state()).await.expect("hkeys");
    assert_eq!(fields, vec![b"\0encoding".to_vec()], "per-job state left behind");
    let encoding: String = redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(keys.state())
        .query_async(&mut conn)
        .await
        .expect("OBJECT ENCODING");
    assert_eq!(encoding, "hashtable");
    // Only the capped dead set holds per-job data, one record per dead job.
    let dead_records: u64 = conn.hlen(keys.dead_envelopes()).await.expect("hlen");
    assert_eq!(dead_records, TOTAL / 1000);
}

/// Guarantee 11: Redis going away. Producers get a clear `Unavailable` error;
/// workers back off, reconnect and resume; with AOF nothing is lost. On a
/// cluster every node stops and starts again (a whole-cluster outage).
#[tokio::test]
async fn s11_redis_restart_mid_run_loses_nothing() {
    const TOTAL: u64 = 600;
    let mut server = DedicatedRedis::start(RedisOptions {
        appendonly: true,
        extra_args: Vec::new(),
    })
    .await
    .expect("redis");
    let config = QueueConfig {
        command_timeout: Duration::from_secs(1),
        ..fast_config("restart")
    };
    let client = QueueClient::new(&server.url(), config).expect("client");
    let producer = Producer::new(client.clone());
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let s = seen.clone();
    let worker = Worker::builder(client.clone(), QUEUE)
        .concurrency(5)
        .handle(move |job: Echo, _ctx: JobContext| {
            let s = s.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                s.lock().expect("lock").insert(job.n);
                Ok(())
            }
        })
        .build()
        .expect("build");
    let running = spawn(worker);
    let enqueue_all = |from: u64, to: u64| {
        let producer = producer.clone();
        async move {
            for n in from..to {
                loop {
                    let options = EnqueueOptions {
                        id: Some(format!("job-{n}")),
                        ..EnqueueOptions::default()
                    };
                    match producer.enqueue_with(&Echo::new(n), options).await {
                        Ok(_) => break,
                        Err(err) => {
                            assert!(err.is_unavailable(), "{err}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }
        }
    };
    enqueue_all(0, 300).await;
    eventually("some progress", Duration::from_secs(20), || async {
        seen.lock().expect("lock").len() >= 100
    })
    .await;
    server.stop().await;
    let err = producer.enqueue(&Echo::new(9999)).await.expect_err("redis is down");
    assert!(err.is_unavailable(), "a clear error: {err}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart().await.expect("restart");
    enqueue_all(300, TOTAL).await;
    let admin = QueueAdmin::new(client.clone());
    eventually("all jobs done after the restart", Duration::from_mins(1), || async {
        seen.lock().expect("lock").len() as u64 == TOTAL
            && admin
                .stats(QUEUE)
                .await
                .is_ok_and(|s| s.ready == 0 && s.in_flight == 0 && s.scheduled == 0)
    })
    .await;
    running.stop().await;
    let stats = admin.stats(QUEUE).await.expect("stats");
    assert_eq!(stats.dead, 0);
    assert!(stats.counters.completed >= TOTAL, "{stats:?}");
}

/// Item 4 of the hardening: a worker that lost a job's lease (Redis away
/// longer than a lease, simulated by expiring it) and claims the same job
/// again keeps the two attempts apart: the stale one is cancelled when its
/// token is refused, and its end does not stop the heartbeats of the new
/// claim, so the new attempt, longer than a lease, is not reaped again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reclaimed_job_keeps_its_new_lease_when_the_stale_attempt_ends() {
    let (redis, client) = setup().await;
    let id = Producer::new(client.clone())
        .enqueue(&Echo::new(1))
        .await
        .expect("enqueue")
        .id;
    let (started_tx, mut started) = mpsc::unbounded_channel::<(u32, u64)>();
    let cancelled = Arc::new(AtomicBool::new(false));
    let saw_cancel = cancelled.clone();
    let worker = Worker::builder(client.clone(), QUEUE)
        .concurrency(2)
        .handle(move |_job: Echo, ctx: JobContext| {
            let started_tx = started_tx.clone();
            let saw_cancel = saw_cancel.clone();
            async move {
                started_tx.send((ctx.attempt, ctx.token)).expect("send");
                if ctx.attempt == 1 {
                    // The stale attempt: would run 1 s unless cancelled.
                    tokio::select! {
                        () = ctx.cancel.cancelled() => saw_cancel.store(true, Ordering::SeqCst),
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    return Ok(());
                }
                // The new claim: four leases long, alive only by heartbeats.
                tokio::time::sleep(Duration::from_secs(2)).await;
                Ok(())
            }
        })
        .build()
        .expect("build");
    let running = spawn(worker);
    let first = tokio::time::timeout(Duration::from_secs(10), started.recv())
        .await
        .expect("first attempt")
        .expect("started");
    assert_eq!(first.0, 1);
    // The lease lapses while the worker lives: the reaper hands the job out
    // again, and this same worker (a free slot) claims it. The worker's
    // heartbeat may renew the lease between the expiry and the reap (or its
    // own reaper may take it first), so expire and reap until the job has
    // been recovered once.
    let conn = redis.connection().await;
    let admin = QueueAdmin::new(client.clone());
    let leases = client.keys(QUEUE).leases();
    eventually("the lapsed lease reaped", Duration::from_secs(10), || {
        let (mut conn, admin, leases, id) = (conn.clone(), admin.clone(), leases.clone(), id.clone());
        async move {
            let _: () = conn.zadd(&leases, &id, 0).await.expect("expire the lease");
            admin.reap_expired(QUEUE).await.expect("reap");
            admin.stats(QUEUE).await.expect("stats").counters.recovered > 0
        }
    })
    .await;
    let second = tokio::time::timeout(Duration::from_secs(10), started.recv())
        .await
        .expect("second attempt")
        .expect("started");
    assert_eq!(second.0, 2);
    assert_ne!(second.1, first.1);
    eventually("the job completed", Duration::from_secs(15), || async {
        admin.stats(QUEUE).await.expect("stats").counters.completed == 1
    })
    .await;
    let report = running.stop().await;
    assert!(cancelled.load(Ordering::SeqCst), "the stale attempt was cancelled");
    assert!(started.try_recv().is_err(), "no third attempt");
    let stats = admin.stats(QUEUE).await.expect("stats");
    assert_eq!(
        (stats.counters.recovered, stats.counters.completed, stats.dead),
        (1, 1, 0),
        "only the simulated loss was recovered: {stats:?} {report:?}"
    );
}

/// Item 7 of the hardening: at shutdown, jobs claimed ahead go back at once,
/// not after the running handlers finish, so other workers can take them
/// while a long job drains. (Without a shutdown they go back too, once the
/// slow job has kept the worker's one slot for 100 ms: see
/// `promises.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_claimed_ahead_go_back_at_once_while_a_long_job_drains() {
    const SLOW: u64 = 200;
    let (_redis, client) = setup().await;
    let jobs: Vec<Echo> = (0..400).map(Echo::new).collect();
    Producer::new(client.clone())
        .enqueue_batch(&jobs)
        .await
        .expect("enqueue");
    let (slow_tx, mut slow_started) = mpsc::unbounded_channel::<()>();
    let worker = Worker::builder(client.clone(), QUEUE)
        .concurrency(1)
        .drain_timeout(Duration::from_secs(10))
        .handle(move |job: Echo, _ctx: JobContext| {
            let slow_tx = slow_tx.clone();
            async move {
                if job.n == SLOW {
                    slow_tx.send(()).expect("send");
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
                Ok(())
            }
        })
        .build()
        .expect("build");
    let running = spawn(worker);
    tokio::time::timeout(Duration::from_secs(30), slow_started.recv())
        .await
        .expect("the slow job started")
        .expect("started");
    let admin = QueueAdmin::new(client.clone());
    let stopping = tokio::spawn(running.stop());
    eventually("jobs claimed ahead are back", Duration::from_secs(2), || async {
        admin.stats(QUEUE).await.expect("stats").in_flight == 1
    })
    .await;
    assert!(!stopping.is_finished(), "the slow job still drains");
    let report = stopping.await.expect("stop");
    assert!(
        report.most_claimed_ahead >= 1,
        "no-op handlers make the worker claim ahead: {report:?}"
    );
    assert!(report.requeued >= 1, "the jobs claimed ahead went back: {report:?}");
    let stats = admin.stats(QUEUE).await.expect("stats");
    assert_eq!(stats.in_flight, 0);
    assert_eq!(stats.ready + stats.counters.completed, 400);
    // The jobs finished before the slow one were acknowledged before it
    // ended: none of their leases lapsed while it drained.
    assert_eq!((stats.counters.recovered, report.stale), (0, 0), "{stats:?} {report:?}");
}
