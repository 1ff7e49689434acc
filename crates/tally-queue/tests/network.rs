//! A network that goes silent: Redis stops answering without closing
//! anything (a failover to another address, a partition). The worker must
//! notice on its own, report not-ready meanwhile, and claim again once Redis
//! is reachable, however long its connections had been idle.

mod common;

use std::time::{Duration, Instant};

use common::{Echo, QUEUE, eventually, fast_config};
use tally_queue::{JobContext, Producer, QueueAdmin, QueueClient, QueueConfig, Worker};
use tally_testkit::SilentProxy;

/// A proxy in front of the test Redis, a client through it (for the worker)
/// and one straight to Redis (for the producer and the checks), with short
/// timeouts; `lease` overrides the test lease.
struct Proxied {
    _redis: tally_testkit::TestRedis,
    proxy: SilentProxy,
    behind: QueueClient,
    direct: QueueClient,
}

async fn behind_a_proxy(lease: Option<Duration>) -> Proxied {
    let redis = tally_testkit::redis().await;
    let target = redis
        .url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned();
    let proxy = SilentProxy::start(&target).await.expect("proxy");
    let base = fast_config(&redis.namespace);
    let config = QueueConfig {
        idle_poll: Duration::from_secs(1),
        command_timeout: Duration::from_secs(1),
        lease: lease.unwrap_or(base.lease),
        ..base
    };
    let behind = QueueClient::connect(&proxy.redis_url(), config.clone())
        .await
        .expect("connect through the proxy");
    let direct = QueueClient::connect(&redis.url, config).await.expect("connect");
    Proxied {
        _redis: redis,
        proxy,
        behind,
        direct,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_behind_a_silent_network_claims_again_once_it_is_back() {
    // The worker reaches Redis through the proxy; the producer directly.
    let Proxied {
        _redis,
        proxy,
        behind,
        direct,
    } = behind_a_proxy(None).await;
    let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
    let worker = Worker::builder(behind.clone(), QUEUE)
        .concurrency(2)
        .handle(move |job: Echo, _ctx: JobContext| {
            let done_tx = done_tx.clone();
            async move {
                done_tx.send(job.n).expect("send");
                Ok(())
            }
        })
        .build()
        .expect("build");
    let running = common::spawn(worker);
    let producer = Producer::new(direct.clone());
    producer.enqueue(&Echo::new(1)).await.expect("enqueue");
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), done.recv())
            .await
            .expect("first job"),
        Some(1)
    );
    // Idle, blocked on the wake list: now the network goes silent.
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.go_silent();
    producer.enqueue(&Echo::new(2)).await.expect("enqueue while silent");

    // Readiness (what /readyz asks) reports the outage instead of "ready".
    eventually(
        "ping fails while the network is silent",
        Duration::from_secs(15),
        || async { behind.ping().await.is_err() },
    )
    .await;
    assert!(done.try_recv().is_err(), "no job can run while Redis is unreachable");
    tokio::time::sleep(Duration::from_secs(3)).await;

    proxy.restore();
    let restored = Instant::now();
    let got = tokio::time::timeout(Duration::from_secs(30), done.recv()).await;
    assert_eq!(
        got.ok().flatten(),
        Some(2),
        "the worker never claimed again after the network came back"
    );
    eprintln!("claimed again {:?} after the network came back", restored.elapsed());
    eventually("ready again", Duration::from_secs(10), || async {
        behind.ping().await.is_ok()
    })
    .await;
    let report = running.stop().await;
    assert_eq!(report.completed, 2);
    let stats = QueueAdmin::new(direct).stats(QUEUE).await.expect("stats");
    assert_eq!((stats.counters.completed, stats.ready, stats.in_flight), (2, 0, 0));
}

/// A claim that ran in Redis but whose reply was lost (the network dropped
/// it; the call timed out) is sent again under its request id and gets the
/// same jobs back: they run as their first attempt, with no crash charged and
/// no wait for their leases to expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_reply_was_lost_gets_its_jobs_back_on_retry() {
    // A lease far longer than the outage: without the retry, the lost jobs
    // would wait all of it and then be charged a crash.
    let Proxied {
        _redis,
        proxy,
        behind,
        direct,
    } = behind_a_proxy(Some(Duration::from_secs(30))).await;
    let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
    // No promoter or reaper: the claim is the only call on the shared
    // connection when the replies stop.
    let worker = Worker::builder(behind.clone(), QUEUE)
        .concurrency(10)
        .background_tasks(false)
        .handle(move |job: Echo, ctx: JobContext| {
            let done_tx = done_tx.clone();
            async move {
                done_tx.send((job.n, ctx.attempt, ctx.crashes)).expect("send");
                Ok(())
            }
        })
        .build()
        .expect("build");
    let running = common::spawn(worker);
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.drop_replies();
    let jobs: Vec<Echo> = (1..=5).map(Echo::new).collect();
    Producer::new(direct.clone())
        .enqueue_batch(&jobs)
        .await
        .expect("enqueue");
    let admin = QueueAdmin::new(direct.clone());
    eventually("the claim ran in Redis", Duration::from_secs(15), || async {
        admin.stats(QUEUE).await.expect("stats").in_flight == 5
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(done.try_recv().is_err(), "no reply, no job started");
    proxy.restore();
    let restored = Instant::now();
    let mut runs = Vec::new();
    while runs.len() < 5 {
        let run = tokio::time::timeout(Duration::from_secs(15), done.recv())
            .await
            .expect("the lost claim's jobs ran well within their lease")
            .expect("run");
        runs.push(run);
    }
    eprintln!(
        "jobs of the lost claim ran {:?} after the network came back",
        restored.elapsed()
    );
    runs.sort_unstable();
    assert_eq!(
        runs,
        (1..=5).map(|n| (n, 1, 0)).collect::<Vec<_>>(),
        "each ran once, as its first attempt, no crash charged"
    );
    eventually("all acknowledged", Duration::from_secs(10), || async {
        admin.stats(QUEUE).await.expect("stats").counters.completed == 5
    })
    .await;
    let report = running.stop().await;
    let stats = admin.stats(QUEUE).await.expect("stats");
    assert_eq!(
        (stats.counters.completed, stats.counters.recovered, stats.in_flight),
        (5, 0, 0),
        "{report:?}"
    );
    assert_eq!(report.stale, 0, "no acknowledgement counted as stale");
}
