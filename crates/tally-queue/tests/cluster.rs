//! The engine on a real Redis Cluster (three masters, each with a replica,
//! started by the test kit): jobs flow on queues in different slots, scripts
//! are loaded again on a node that lost them, a queue's slot moves to another
//! master while jobs flow, and a master dies (SIGKILL) and its replica takes
//! over while jobs flow. Each test starts a cluster of its own, since two of
//! them change its shape.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Echo, QUEUE, eventually, fast_config};
use tally_queue::{
    DeadSelector, EnqueueOptions, JobContext, JobError, Producer, QueueAdmin, QueueClient, QueueConfig, Worker,
};
use tally_testkit::RedisCluster;

async fn cluster_client(cluster: &RedisCluster, prefix: &str) -> QueueClient {
    let client = QueueClient::connect(&cluster.url(), fast_config(prefix))
        .await
        .expect("connect to the cluster");
    assert!(client.is_cluster());
    client
}

/// A plain connection to one node, without a response timeout (`WAIT`
/// blocks).
async fn node_conn(cluster: &RedisCluster, index: usize) -> redis::aio::MultiplexedConnection {
    redis::Client::open(cluster.nodes()[index].url())
        .expect("url")
        .get_multiplexed_async_connection_with_config(&redis::AsyncConnectionConfig::new().set_response_timeout(None))
        .await
        .expect("connect to a node")
}

/// The slot of a queue's keys (they share the `{queue}` hash tag).
async fn slot_of(cluster: &RedisCluster, client: &QueueClient, queue: &str) -> u16 {
    let mut conn = node_conn(cluster, 0).await;
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(client.keys(queue).jobs())
        .query_async(&mut conn)
        .await
        .expect("KEYSLOT")
}

/// How often each job (by payload number) ran.
fn runs_per_job(runs: &[u64]) -> HashMap<u64, u32> {
    let mut per_job = HashMap::new();
    for n in runs {
        *per_job.entry(*n).or_default() += 1;
    }
    per_job
}

/// A worker recording every run of every job (by payload number).
fn recording_worker(client: &QueueClient, runs: Arc<Mutex<Vec<u64>>>, pause: Duration) -> Worker {
    Worker::builder(client.clone(), QUEUE)
        .concurrency(8)
        .handle(move |job: Echo, _ctx: JobContext| {
            let runs = runs.clone();
            async move {
                tokio::time::sleep(pause).await;
                if job.max_attempts == Some(1) {
                    return Err(JobError::give_up("doomed"));
                }
                runs.lock().expect("lock").push(job.n);
                Ok(())
            }
        })
        .build()
        .expect("build")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_flow_on_a_cluster_with_delays_dedup_retries_and_the_dead_set() {
    let cluster = RedisCluster::start().await.expect("cluster");
    let client = cluster_client(&cluster, "c1").await;
    // Queues hash to different slots (on different masters, most likely):
    // each is served on its own.
    let other = QueueClient::connect(&cluster.url(), fast_config("c1-other"))
        .await
        .expect("connect");
    assert_ne!(
        slot_of(&cluster, &client, QUEUE).await,
        slot_of(&cluster, &other, "elsewhere").await
    );
    let producer = Producer::new(client.clone());
    let jobs: Vec<Echo> = (0..300).map(Echo::new).collect();
    producer.enqueue_batch(&jobs).await.expect("enqueue");
    producer
        .enqueue_with(&Echo::new(1000), EnqueueOptions::delayed(Duration::from_millis(300)))
        .await
        .expect("delayed");
    let keyed = Echo {
        key: Some("refresh:all".into()),
        ..Echo::new(2000)
    };
    let first = producer.enqueue(&keyed).await.expect("keyed");
    let again = producer.enqueue(&keyed).await.expect("keyed again");
    assert_eq!((again.id, again.deduplicated), (first.id, true));
    producer
        .enqueue(&Echo {
            max_attempts: Some(1),
            ..Echo::new(3000)
        })
        .await
        .expect("doomed");

    let runs = Arc::new(Mutex::new(Vec::new()));
    let worker = common::spawn(recording_worker(&client, runs.clone(), Duration::ZERO));
    let admin = QueueAdmin::new(client.clone());
    eventually("every job done", Duration::from_secs(30), || async {
        let stats = admin.stats(QUEUE).await.expect("stats");
        stats.counters.completed == 302 && stats.dead == 1
    })
    .await;
    let report = worker.stop().await;
    let runs = runs.lock().expect("lock").clone();
    assert_eq!(runs.len(), 302, "{report:?}");
    assert_eq!(runs.iter().collect::<HashSet<_>>().len(), 302, "each job ran once");
    let dead = admin.dead_list(QUEUE, 0, 10).await.expect("dead list");
    assert!(dead[0].error.contains("doomed"), "{dead:?}");
    assert_eq!(admin.dead_retry(QUEUE, DeadSelector::All).await.expect("retry"), 1);
    let stats = admin.stats(QUEUE).await.expect("stats");
    assert_eq!(
        (stats.ready, stats.dead, stats.in_flight, stats.scheduled),
        (1, 0, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_are_loaded_again_on_a_node_that_lost_them() {
    let cluster = RedisCluster::start().await.expect("cluster");
    let client = cluster_client(&cluster, "c2").await;
    let producer = Producer::new(client.clone());
    producer.enqueue(&Echo::new(1)).await.expect("enqueue");
    for i in 0..cluster.nodes().len() {
        let mut conn = node_conn(&cluster, i).await;
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
    let runs = Arc::new(Mutex::new(Vec::new()));
    let worker = common::spawn(recording_worker(&client, runs.clone(), Duration::ZERO));
    let admin = QueueAdmin::new(client.clone());
    eventually("both done", Duration::from_secs(20), || async {
        admin.stats(QUEUE).await.expect("stats").counters.completed == 2
    })
    .await;
    worker.stop().await;
}

/// Moves `slot` from the master at `from` to the master at `to` with the
/// commands `redis-cli --cluster reshard` sends, key by key, while clients
/// keep working (they follow `ASK` and `MOVED`, and retry `TRYAGAIN`).
async fn migrate_slot(cluster: &RedisCluster, slot: u16, from: usize, to: usize) {
    let mut src = node_conn(cluster, from).await;
    let mut dst = node_conn(cluster, to).await;
    let src_id: String = redis::cmd("CLUSTER")
        .arg("MYID")
        .query_async(&mut src)
        .await
        .expect("id");
    let dst_id: String = redis::cmd("CLUSTER")
        .arg("MYID")
        .query_async(&mut dst)
        .await
        .expect("id");
    let _: () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("IMPORTING")
        .arg(&src_id)
        .query_async(&mut dst)
        .await
        .expect("importing");
    let _: () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("MIGRATING")
        .arg(&dst_id)
        .query_async(&mut src)
        .await
        .expect("migrating");
    let dst_port = cluster.nodes()[to].port();
    loop {
        let keys: Vec<String> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(1)
            .query_async(&mut src)
            .await
            .expect("keys in slot");
        if keys.is_empty() {
            break;
        }
        let _: () = redis::cmd("MIGRATE")
            .arg("127.0.0.1")
            .arg(dst_port)
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("KEYS")
            .arg(&keys)
            .query_async(&mut src)
            .await
            .expect("migrate");
        // Slowly, so that jobs flow while the slot is split in two.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 0..cluster.nodes().len() {
        let mut conn = node_conn(cluster, i).await;
        let _: Result<(), _> = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("NODE")
            .arg(&dst_id)
            .query_async(&mut conn)
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_slot_moved_to_another_master_mid_run_loses_nothing() {
    const TOTAL: u64 = 2000;
    let cluster = RedisCluster::start().await.expect("cluster");
    // With the suite's 500 ms lease, one run on a loaded machine saw 2006
    // runs for 2000 jobs: most likely leases lapsing while the slot was
    // split (scripts touching it get TRYAGAIN, heartbeats included) and the
    // reaper handing those jobs out again, as at-least-once allows. A lease
    // longer than any move keeps the claim this test makes: the move itself
    // loses no write, so nothing runs twice (a lost ack would still show as a
    // second run once the lease lapsed).
    let client = QueueClient::connect(
        &cluster.url(),
        QueueConfig {
            lease: Duration::from_secs(10),
            ..fast_config("c3")
        },
    )
    .await
    .expect("connect to the cluster");
    assert!(client.is_cluster());
    let slot = slot_of(&cluster, &client, QUEUE).await;
    let from = cluster.master_of(slot).await.expect("master");
    let mut masters = Vec::new();
    for i in 0..cluster.nodes().len() {
        let mut conn = node_conn(&cluster, i).await;
        let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut conn).await.expect("role");
        if matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master") {
            masters.push(i);
        }
    }
    let to = *masters.iter().find(|m| **m != from).expect("another master");
    let jobs: Vec<Echo> = (0..TOTAL).map(Echo::new).collect();
    Producer::new(client.clone())
        .enqueue_batch(&jobs)
        .await
        .expect("enqueue");
    let runs = Arc::new(Mutex::new(Vec::new()));
    let worker = common::spawn(recording_worker(&client, runs.clone(), Duration::from_millis(2)));
    eventually("jobs flowing", Duration::from_secs(20), || async {
        runs.lock().expect("lock").len() >= 100
    })
    .await;
    migrate_slot(&cluster, slot, from, to).await;
    assert_eq!(cluster.master_of(slot).await.expect("master"), to, "the slot moved");
    let done_during_move = runs.lock().expect("lock").len() as u64;
    assert!(done_during_move < TOTAL, "jobs still flow after the move");
    let admin = QueueAdmin::new(client.clone());
    eventually("every job done after the move", Duration::from_secs(60), || async {
        admin
            .stats(QUEUE)
            .await
            .is_ok_and(|stats| stats.counters.completed >= TOTAL)
    })
    .await;
    let report = worker.stop().await;
    let stats = admin.stats(QUEUE).await.expect("stats");
    assert_eq!(
        (stats.counters.completed, stats.dead, stats.ready, stats.in_flight),
        (TOTAL, 0, 0, 0),
        "{report:?}"
    );
    let runs = runs.lock().expect("lock").clone();
    assert_eq!(runs.iter().collect::<HashSet<_>>().len() as u64, TOTAL, "every job ran");
    assert_eq!(
        runs.len() as u64,
        TOTAL,
        "none ran twice: a move loses no write (recovered leases: {})",
        stats.counters.recovered
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_mid_run_is_replaced_by_its_replica_and_nothing_is_lost() {
    const TOTAL: u64 = 2000;
    let mut cluster = RedisCluster::start().await.expect("cluster");
    let client = cluster_client(&cluster, "c4").await;
    let slot = slot_of(&cluster, &client, QUEUE).await;
    let master = cluster.master_of(slot).await.expect("master");
    let jobs: Vec<Echo> = (0..TOTAL).map(Echo::new).collect();
    Producer::new(client.clone())
        .enqueue_batch(&jobs)
        .await
        .expect("enqueue");
    // Replication is asynchronous: wait until the replica has every job, so
    // the failover below can lose progress (claims, acknowledgements) but
    // not the jobs themselves.
    let mut conn = node_conn(&cluster, master).await;
    let replicas: u64 = redis::cmd("WAIT")
        .arg(1)
        .arg(30_000)
        .query_async(&mut conn)
        .await
        .expect("WAIT");
    assert_eq!(replicas, 1, "the replica has the jobs");

    let runs = Arc::new(Mutex::new(Vec::new()));
    let worker = common::spawn(recording_worker(&client, runs.clone(), Duration::from_millis(2)));
    eventually("jobs flowing", Duration::from_secs(20), || async {
        runs.lock().expect("lock").len() >= 300
    })
    .await;
    cluster.nodes_mut()[master].kill().await;
    assert!(
        (runs.lock().expect("lock").len() as u64) < TOTAL,
        "the kill landed mid-run"
    );
    let promoted = cluster.wait_for_master_of(slot).await.expect("the replica took over");
    assert_ne!(promoted, master);

    let admin = QueueAdmin::new(client.clone());
    eventually("every job done after the failover", Duration::from_secs(90), || async {
        admin
            .stats(QUEUE)
            .await
            .is_ok_and(|stats| stats.ready + stats.scheduled + stats.in_flight == 0 && stats.counters.completed > 0)
    })
    .await;
    let report = worker.stop().await;
    let stats = admin.stats(QUEUE).await.expect("stats");
    let runs = runs.lock().expect("lock").clone();
    let per_job = runs_per_job(&runs);
    assert_eq!(per_job.len() as u64, TOTAL, "every job ran: {stats:?} {report:?}");
    assert_eq!(stats.dead, 0, "{stats:?}");
    let again = per_job.values().filter(|c| **c > 1).count();
    eprintln!(
        "failover: {} runs of {TOTAL} jobs ({again} ran again: progress the old master had not yet replicated), recovered {}",
        runs.len(),
        stats.counters.recovered
    );
}

/// The slot of one partition's keys.
async fn partition_slot(cluster: &RedisCluster, client: &QueueClient, partition: u32) -> u16 {
    let mut conn = node_conn(cluster, 0).await;
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(tally_queue::QueueKeys::partition(&client.config().prefix, QUEUE, partition).jobs())
        .query_async(&mut conn)
        .await
        .expect("KEYSLOT")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_queue_spreads_over_the_masters_and_loses_nothing_when_one_dies() {
    const PARTITIONS: u32 = 3;
    const TOTAL: u64 = 3000;
    let mut cluster = RedisCluster::start().await.expect("cluster");
    let client = cluster_client(&cluster, "c5").await;
    let admin = QueueAdmin::new(client.clone());
    admin.set_partitions(QUEUE, PARTITIONS).await.expect("partition");
    let mut slots = Vec::new();
    let mut masters = Vec::new();
    for p in 0..PARTITIONS {
        let slot = partition_slot(&cluster, &client, p).await;
        assert_eq!(
            tally_queue::QueueKeys::partition(&client.config().prefix, QUEUE, p).slot(),
            slot,
            "the slot the engine computes is the node's"
        );
        slots.push(slot);
        masters.push(cluster.master_of(slot).await.expect("master"));
    }
    let distinct: HashSet<usize> = masters.iter().copied().collect();
    assert!(
        distinct.len() >= 2,
        "partitions {slots:?} all on one master {masters:?}"
    );

    let jobs: Vec<Echo> = (0..TOTAL).map(Echo::new).collect();
    Producer::new(client.clone())
        .enqueue_batch(&jobs)
        .await
        .expect("enqueue");
    // Each master holds its partitions' jobs, and so does its replica
    // before the kill (replication is asynchronous, see the test above).
    let mut held = HashMap::new();
    for (p, &master) in masters.iter().enumerate() {
        let mut conn = node_conn(&cluster, master).await;
        let keys = tally_queue::QueueKeys::partition(&client.config().prefix, QUEUE, p as u32);
        let n: u64 = redis::cmd("HLEN")
            .arg(keys.jobs())
            .query_async(&mut conn)
            .await
            .expect("HLEN");
        *held.entry(master).or_insert(0) += n;
        let replicas: u64 = redis::cmd("WAIT")
            .arg(1)
            .arg(30_000)
            .query_async(&mut conn)
            .await
            .expect("WAIT");
        assert_eq!(replicas, 1);
    }
    assert_eq!(held.values().sum::<u64>(), TOTAL);
    // Jobs go to the partition their id hashes to: a third each, so a
    // master with two of the three partitions holds about two thirds.
    let busiest = *held.values().max().expect("a master");
    assert!(
        busiest * 100 <= TOTAL * 75,
        "one master holds {busiest} of {TOTAL} jobs: {held:?}"
    );

    let runs = Arc::new(Mutex::new(Vec::new()));
    let worker = common::spawn(recording_worker(&client, runs.clone(), Duration::from_millis(2)));
    eventually("jobs flowing", Duration::from_secs(20), || async {
        runs.lock().expect("lock").len() >= 300
    })
    .await;
    // Kill the master of partition 1.
    let victim = masters[1];
    cluster.nodes_mut()[victim].kill().await;
    assert!(
        (runs.lock().expect("lock").len() as u64) < TOTAL,
        "the kill landed mid-run"
    );
    let promoted = cluster
        .wait_for_master_of(slots[1])
        .await
        .expect("the replica took over");
    assert_ne!(promoted, victim);
    eventually("every job done after the failover", Duration::from_secs(90), || async {
        admin
            .stats(QUEUE)
            .await
            .is_ok_and(|stats| stats.ready + stats.scheduled + stats.in_flight == 0)
    })
    .await;
    let report = worker.stop().await;
    let stats = admin.stats(QUEUE).await.expect("stats");
    let runs = runs.lock().expect("lock").clone();
    let per_job = runs_per_job(&runs);
    assert_eq!(per_job.len() as u64, TOTAL, "every job ran: {stats:?} {report:?}");
    assert_eq!((stats.dead, stats.partitions), (0, PARTITIONS), "{stats:?}");
    eprintln!(
        "partitioned failover: jobs per master {held:?}; {} runs of {TOTAL} jobs ({} ran again)",
        runs.len(),
        per_job.values().filter(|c| **c > 1).count()
    );
}
