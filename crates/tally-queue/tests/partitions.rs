//! Partitioned queues on a single Redis: jobs spread over the partitions and
//! each runs once, a worker killed mid-run loses nothing in any partition,
//! dedup keys still coalesce, the count grows under running workers (and
//! never shrinks), controls hold on every partition, and the admin views add
//! the partitions up. The same queue on a real cluster is in `cluster.rs`.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Echo, QUEUE, eventually, fast_config};
use redis::AsyncCommands as _;
use tally_jobs::Priority;
use tally_queue::{
    EnqueueOptions, JobContext, JobError, JobState, Producer, QueueAdmin, QueueClient, QueueConfig, QueueKeys, Worker,
    partition_for_key,
};

fn config(prefix: &str) -> QueueConfig {
    QueueConfig {
        partition_refresh: Duration::from_millis(200),
        ..fast_config(prefix)
    }
}

async fn client() -> (tally_testkit::TestRedis, QueueClient) {
    let redis = tally_testkit::redis().await;
    let client = QueueClient::connect(&redis.url, config(&redis.namespace))
        .await
        .expect("connect");
    (redis, client)
}

/// Runs of each job (by payload number) and the partition each ran from.
type Runs = Arc<Mutex<Vec<(u64, String)>>>;

fn recording_worker(client: &QueueClient, concurrency: usize, runs: Runs, pause: Duration) -> Worker {
    Worker::builder(client.clone(), QUEUE)
        .concurrency(concurrency)
        .handle(move |job: Echo, ctx: JobContext| {
            let runs = runs.clone();
            async move {
                tokio::time::sleep(pause).await;
                runs.lock().expect("lock").push((job.n, ctx.id.clone()));
                Ok::<(), JobError>(())
            }
        })
        .build()
        .expect("build")
}

/// Ready jobs in each partition, read from the keys themselves.
async fn ready_per_partition(url: &str, client: &QueueClient, partitions: u32) -> Vec<u64> {
    let mut conn = common::raw_connection(url).await;
    let mut lens = Vec::new();
    for p in 0..partitions {
        let keys = QueueKeys::partition(&client.config().prefix, QUEUE, p);
        let len: u64 = conn.llen(keys.ready(Priority::Normal)).await.expect("llen");
        lens.push(len);
    }
    lens
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_spread_over_the_partitions_and_each_runs_once_despite_a_killed_worker() {
    let (redis, client) = client().await;
    let admin = QueueAdmin::new(client.clone());
    assert_eq!(admin.set_partitions(QUEUE, 3).await.expect("partition"), 3);
    let producer = Producer::new(client.clone());
    let jobs: Vec<Echo> = (0..600).map(Echo::new).collect();
    producer.enqueue_batch(&jobs).await.expect("enqueue");
    // Routed by a hash of each (random) id: about a third each.
    let spread = ready_per_partition(&redis.url, &client, 3).await;
    assert_eq!(spread.iter().sum::<u64>(), 600);
    assert!(spread.iter().all(|&n| (140..=260).contains(&n)), "{spread:?}");
    let stats = admin.stats(QUEUE).await.expect("stats");
    assert_eq!((stats.ready, stats.partitions, stats.counters.enqueued), (600, 3, 600));

    // One worker is killed while it holds jobs of every partition; the
    // other finishes everything, the killed one's jobs once their leases
    // expire.
    let runs: Runs = Arc::default();
    let doomed = common::spawn(recording_worker(&client, 6, Arc::default(), Duration::from_secs(30)));
    eventually("the doomed worker holds jobs", Duration::from_secs(10), || async {
        admin.stats(QUEUE).await.expect("stats").in_flight >= 6
    })
    .await;
    doomed.kill().await;
    let survivor = common::spawn(recording_worker(&client, 4, runs.clone(), Duration::ZERO));
    eventually("every job done", Duration::from_secs(30), || async {
        admin.stats(QUEUE).await.expect("stats").counters.completed == 600
    })
    .await;
    let report = survivor.stop().await;
    let runs = runs.lock().expect("lock").clone();
    assert_eq!(runs.len(), 600, "{report:?}");
    assert_eq!(
        runs.iter().map(|(n, _)| n).collect::<HashSet<_>>().len(),
        600,
        "each job ran once"
    );
    let stats = admin.stats(QUEUE).await.expect("stats");
    assert_eq!(
        (stats.ready, stats.in_flight, stats.scheduled, stats.dead),
        (0, 0, 0, 0)
    );
    assert!(stats.counters.recovered >= 6, "{stats:?}");
    // Every partition did its share.
    let mut conn = common::raw_connection(&redis.url).await;
    for (p, enqueued) in (0..3).zip(spread) {
        let keys = QueueKeys::partition(&client.config().prefix, QUEUE, p);
        let completed: u64 = conn.hget(keys.stats(), "completed").await.expect("hget");
        assert_eq!(completed, enqueued, "partition {p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dedup_key_always_lands_on_its_partition_and_coalesces_there() {
    let (redis, client) = client().await;
    let admin = QueueAdmin::new(client.clone());
    admin.set_partitions(QUEUE, 4).await.expect("partition");
    let producer = Producer::new(client.clone());
    let keyed = |k: u64| Echo {
        key: Some(format!("refresh:{k}")),
        ..Echo::new(k)
    };
    let mut first = HashMap::new();
    for k in 0..40 {
        let e = producer.enqueue(&keyed(k)).await.expect("enqueue");
        assert!(!e.deduplicated);
        first.insert(k, e.id);
    }
    // Again, in one batch: every one meets its waiting job.
    let again = producer
        .enqueue_batch(&(0..40).map(keyed).collect::<Vec<_>>())
        .await
        .expect("batch");
    for (k, e) in (0..40).zip(&again) {
        assert!(e.deduplicated, "{k}");
        assert_eq!(e.id, first[&k]);
    }
    let stats = admin.stats(QUEUE).await.expect("stats");
    assert_eq!((stats.ready, stats.counters.enqueued), (40, 40));
    // Each job is in the partition its key hashes to.
    let mut conn = common::raw_connection(&redis.url).await;
    for k in 0..40 {
        let p = partition_for_key(&format!("refresh:{k}"), 4);
        let keys = QueueKeys::partition(&client.config().prefix, QUEUE, p);
        let here: bool = conn.hexists(keys.jobs(), &first[&k]).await.expect("hexists");
        assert!(here, "job {k} is not in partition {p}");
        let detail = admin.job(QUEUE, &first[&k]).await.expect("job").expect("found");
        assert_eq!(detail.summary.partition, p);
    }
    let used: HashSet<u32> = (0..40).map(|k| partition_for_key(&format!("refresh:{k}"), 4)).collect();
    assert_eq!(used.len(), 4, "40 keys use every partition");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_sent_again_with_its_id_meets_its_first_copy() {
    // The outbox relay and the repairing safety net send a job again under
    // the same id when they cannot tell whether the first send landed: on a
    // partitioned queue the second send must reach the same partition.
    let (_redis, client) = client().await;
    let admin = QueueAdmin::new(client.clone());
    admin.set_partitions(QUEUE, 4).await.expect("partition");
    let producer = Producer::new(client.clone());
    for n in 0..40 {
        let options = || EnqueueOptions {
            id: Some(format!("outbox-{n}")),
            ..EnqueueOptions::default()
        };
        let first = producer.enqueue_with(&Echo::new(n), options()).await.expect("enqueue");
        let again = producer.enqueue_with(&Echo::new(n), options()).await.expect("again");
        assert_eq!((first.deduplicated, again.deduplicated), (false, true), "job {n}");
        assert_eq!(again.id, first.id);
        let detail = admin.job(QUEUE, &first.id).await.expect("job").expect("found");
        assert_eq!(detail.summary.partition, partition_for_key(&first.id, 4), "job {n}");
    }
    let stats = admin.stats(QUEUE).await.expect("stats");
    assert_eq!((stats.ready, stats.counters.enqueued), (40, 40), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_partitions_do_not_interrupt_running_jobs() {
    let (_redis, client) = client().await;
    let admin = QueueAdmin::new(client.clone());
    let runs: Runs = Arc::default();
    // A drain timeout far below the handlers' time: a worker that drained
    // its lanes to start new ones would cut these jobs off.
    let worker = Worker::builder(client.clone(), QUEUE)
        .concurrency(4)
        .drain_timeout(Duration::from_millis(100))
        .handle({
            let runs = runs.clone();
            move |job: Echo, ctx: JobContext| {
                let runs = runs.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    runs.lock().expect("lock").push((job.n, ctx.id.clone()));
                    Ok::<(), JobError>(())
                }
            }
        })
        .build()
        .expect("build");
    let worker = common::spawn(worker);
    let producer = Producer::new(client.clone());
    producer
        .enqueue_batch(&(0..4).map(Echo::new).collect::<Vec<_>>())
        .await
        .expect("enqueue");
    eventually("four jobs running", Duration::from_secs(10), || async {
        admin.stats(QUEUE).await.expect("stats").in_flight == 4
    })
    .await;
    admin.set_partitions(QUEUE, 2).await.expect("grow");
    producer
        .enqueue_batch(&(4..12).map(Echo::new).collect::<Vec<_>>())
        .await
        .expect("enqueue");
    eventually("every job done", Duration::from_secs(20), || async {
        admin.stats(QUEUE).await.expect("stats").counters.completed == 12
    })
    .await;
    let report = worker.stop().await;
    assert_eq!((report.completed, report.requeued), (12, 0), "{report:?}");
    let runs = runs.lock().expect("lock").clone();
    assert_eq!(runs.len(), 12, "each job ran once: {runs:?}");
    let stats = admin.stats(QUEUE).await.expect("stats");
    assert_eq!((stats.counters.recovered, stats.partitions), (0, 2), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_raising_the_count_at_once_end_with_the_highest_and_the_whole_limit() {
    let (redis, client) = client().await;
    let mut conn = common::raw_connection(&redis.url).await;
    for round in 0..15 {
        let queue = format!("race{round}");
        let admin = QueueAdmin::new(client.clone());
        admin.set_limit(&queue, Some(12)).await.expect("limit");
        // Separate clients, as two operators' processes would be.
        let (a, b) = (client.clone(), client.clone());
        let (qa, qb) = (queue.clone(), queue.clone());
        let (ra, rb) = tokio::join!(
            async move { QueueAdmin::new(a).set_partitions(&qa, 3).await },
            async move { QueueAdmin::new(b).set_partitions(&qb, 5).await },
        );
        assert_eq!(rb.expect("to five"), 5, "round {round}");
        // The lower call either went first or was refused naming the count.
        if let Err(err) = ra {
            assert!(err.to_string().contains("has 5 partitions"), "round {round}: {err}");
        }
        let shares: Vec<Option<u64>> = {
            let mut shares = Vec::new();
            for p in 0..5 {
                let keys = QueueKeys::partition(&client.config().prefix, &queue, p);
                shares.push(conn.hget(keys.control(), "limit").await.expect("hget"));
            }
            shares
        };
        assert_eq!(
            shares,
            vec![Some(3), Some(3), Some(2), Some(2), Some(2)],
            "round {round}"
        );
        let control = QueueKeys::partition(&client.config().prefix, &queue, 0).control();
        let count: u32 = conn.hget(control, "partitions").await.expect("hget");
        assert_eq!(count, 5, "round {round}");
        let control = admin.control(&queue).await.expect("control");
        assert_eq!(control.limit, Some(12), "round {round}: the shares add up to the limit");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_grow_under_running_workers_and_never_shrink() {
    let (redis, client) = client().await;
    let admin = QueueAdmin::new(client.clone());
    let runs: Runs = Arc::default();
    let worker = common::spawn(recording_worker(&client, 4, runs.clone(), Duration::ZERO));
    let producer = Producer::new(client.clone());
    producer
        .enqueue_batch(&(0..10).map(Echo::new).collect::<Vec<_>>())
        .await
        .expect("enqueue");
    eventually("one partition served", Duration::from_secs(10), || async {
        runs.lock().expect("lock").len() == 10
    })
    .await;

    assert_eq!(admin.set_partitions(QUEUE, 3).await.expect("grow"), 3);
    // A second client, as another producer process would be: it routes
    // by the new count at once (it never read the old one).
    let other = QueueClient::connect(&redis.url, config(&redis.namespace))
        .await
        .expect("connect");
    assert_eq!(other.partitions(QUEUE).await.expect("count"), 3);
    Producer::new(other)
        .enqueue_batch(&(10..40).map(Echo::new).collect::<Vec<_>>())
        .await
        .expect("enqueue");
    // The running worker notices the new partitions by itself.
    eventually("every partition served", Duration::from_secs(20), || async {
        runs.lock().expect("lock").len() == 40
    })
    .await;
    // The first lane gave up slots to the new ones; its registry entry
    // says so at its next beat.
    eventually(
        "the lanes' slots add up to the worker's",
        Duration::from_secs(5),
        || async {
            let workers = admin.workers(QUEUE).await.expect("workers");
            workers.len() == 1 && workers[0].concurrency == 4
        },
    )
    .await;
    let report = worker.stop().await;
    assert_eq!(report.completed, 40, "{report:?}");

    for bad in [2, 0, 65] {
        let err = admin.set_partitions(QUEUE, bad).await.expect_err("refused").to_string();
        assert!(err.contains("partitions"), "{err}");
    }
    assert_eq!(client.partitions(QUEUE).await.expect("count"), 3);
    assert_eq!(admin.set_partitions(QUEUE, 3).await.expect("same count"), 3);

    // A count written by hand that is not a count stops workers from
    // starting (they say why); setting a count replaces it.
    let mut conn = common::raw_connection(&redis.url).await;
    let control = QueueKeys::partition(&client.config().prefix, QUEUE, 0).control();
    let () = conn.hset(&control, "partitions", "banana").await.expect("hset");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let err = admin.stats(QUEUE).await.expect_err("invalid").to_string();
    assert!(err.contains("banana"), "{err}");
    assert_eq!(admin.set_partitions(QUEUE, 4).await.expect("replaced"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controls_hold_on_every_partition_and_the_views_add_them_up() {
    let (redis, client) = client().await;
    let admin = QueueAdmin::new(client.clone());
    admin.pause(QUEUE).await.expect("pause");
    // A limit below the new count would leave a partition without a share.
    admin.set_limit(QUEUE, Some(2)).await.expect("limit");
    let err = admin
        .set_partitions(QUEUE, 3)
        .await
        .expect_err("limit too low")
        .to_string();
    assert!(err.contains("limit"), "{err}");
    admin.set_limit(QUEUE, Some(7)).await.expect("limit");
    admin.set_partitions(QUEUE, 3).await.expect("partition");
    let control = admin.control(QUEUE).await.expect("control");
    assert!(control.paused, "the new partitions are paused too");
    assert_eq!(control.limit, Some(7), "the shares add up to the limit");
    let err = admin
        .set_limit(QUEUE, Some(2))
        .await
        .expect_err("below partitions")
        .to_string();
    assert!(err.contains("at least 3"), "{err}");

    let producer = Producer::new(client.clone());
    producer
        .enqueue_batch(&(0..30).map(Echo::new).collect::<Vec<_>>())
        .await
        .expect("enqueue");
    let runs: Runs = Arc::default();
    // Slow handlers: the limit's shares show as jobs in flight.
    let worker = common::spawn(recording_worker(&client, 12, runs.clone(), Duration::from_millis(300)));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(runs.lock().expect("lock").is_empty(), "claimed while paused");
    assert_eq!(admin.stats(QUEUE).await.expect("stats").in_flight, 0);

    admin.resume(QUEUE).await.expect("resume");
    let mut most = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while runs.lock().expect("lock").len() < 30 {
        assert!(tokio::time::Instant::now() < deadline, "not every job ran within 30 s");
        most = most.max(admin.stats(QUEUE).await.expect("stats").in_flight);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(most <= 7, "in flight reached {most} above the limit of 7");
    assert!(most >= 4, "only {most} ran at once: the shares were not used");
    worker.stop().await;

    // Paged listings walk the partitions in order and see every job once.
    admin.pause(QUEUE).await.expect("pause");
    producer
        .enqueue_batch(&(100..125).map(Echo::new).collect::<Vec<_>>())
        .await
        .expect("enqueue");
    let mut seen = Vec::new();
    let mut offset = 0;
    loop {
        let page = admin.jobs(QUEUE, JobState::Ready, offset, 4).await.expect("page");
        assert_eq!(page.total, 25);
        if page.jobs.is_empty() {
            break;
        }
        offset += page.jobs.len() as u64;
        seen.extend(page.jobs.into_iter().map(|j| (j.partition, j.id)));
    }
    assert_eq!(seen.len(), 25);
    assert_eq!(seen.iter().map(|(_, id)| id).collect::<HashSet<_>>().len(), 25);
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "partition by partition");
    assert_eq!(seen.iter().map(|(p, _)| *p).collect::<HashSet<_>>().len(), 3);
    let stats = admin.stats(QUEUE).await.expect("stats");
    assert_eq!((stats.ready, stats.counters.completed, stats.limit), (25, 30, Some(7)));
    assert_eq!(admin.ready_len(QUEUE, Priority::Normal).await.expect("len"), 25);
    admin.obliterate(QUEUE).await.expect("obliterate");
    // The count stays: producers and workers that read it still route to
    // and serve every partition.
    assert_eq!(client.partitions(QUEUE).await.expect("count"), 3);
    let stats = admin.stats(QUEUE).await.expect("stats");
    assert_eq!(
        (stats.ready, stats.counters.enqueued, stats.limit, stats.paused),
        (0, 0, None, false)
    );
    // A pause that reached only some partitions (a call cut off half way)
    // does not show as a paused queue.
    let mut conn = common::raw_connection(&redis.url).await;
    let one = QueueKeys::partition(&client.config().prefix, QUEUE, 1);
    let () = conn.hset(one.control(), "paused", "1").await.expect("hset");
    assert!(!admin.control(QUEUE).await.expect("control").paused);
    assert!(admin.pause(QUEUE).await.expect("pause").paused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_name_with_the_partition_separator_is_refused() {
    let (_redis, client) = client().await;
    let err = QueueAdmin::new(client.clone())
        .stats("stats#1")
        .await
        .expect_err("refused")
        .to_string();
    assert!(err.contains('#'), "{err}");
    let err = Worker::builder(client, "stats#1")
        .handle(|_: Echo, _ctx: JobContext| async { Ok::<(), JobError>(()) })
        .build()
        .expect_err("refused")
        .to_string();
    assert!(err.contains('#'), "{err}");
}
