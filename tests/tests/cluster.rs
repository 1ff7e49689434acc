//! The services on a Redis Cluster: `REDIS_URL=redis+cluster://…` for the
//! workers and the CLI, a matchday played through them, and every
//! leaderboard and league table equal to a recomputation from scratch.

use std::time::Duration;

use tally_e2e::{Stack, StackOptions, score_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matchday_on_a_redis_cluster_reaches_exact_leaderboards() {
    let mut stack = Stack::new(StackOptions {
        cluster: true,
        ..StackOptions::default()
    })
    .await
    .expect("stack on a cluster");
    assert!(stack.redis_url.starts_with("redis+cluster://"), "{}", stack.redis_url);
    // Both queues partitioned by the workers' own setting, so every job
    // crosses the partition routing of the CLI, the relay and the workers.
    stack
        .start_with("scoring-worker", "scoring-worker", &[("QUEUE_PARTITIONS", "2")])
        .await
        .expect("scoring-worker");
    stack
        .start_with("stats-worker", "stats-worker", &[("QUEUE_PARTITIONS", "3")])
        .await
        .expect("stats-worker");
    tally_testkit::eventually(
        "the workers partitioned their queues",
        Duration::from_secs(20),
        || async {
            let scoring = stack.admin.stats("scoring").await.is_ok_and(|s| s.partitions == 2);
            let stats = stack.admin.stats("stats").await.is_ok_and(|s| s.partitions == 3);
            scoring && stats
        },
    )
    .await;
    let matchday = stack.matchday().await.expect("matchday");
    for f in &matchday {
        let (h, a) = score_for(f.id);
        let out = stack
            .tally(&["match", "finish", &f.id.to_string(), &h.to_string(), &a.to_string()])
            .expect("cli");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let checked = stack
        .wait_settled(Duration::from_secs(120))
        .await
        .expect("settled and exact");
    assert!(checked.rows > 0 && checked.tables == 2, "{checked:?}");
    let out = stack.tally(&["--json", "queue", "stats"]).expect("cli");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        stats["queues"]["scoring"]["counters"]["completed"].as_u64() >= Some(matchday.len() as u64),
        "{stats}"
    );
    assert_eq!(stats["queues"]["stats"]["partitions"].as_u64(), Some(3), "{stats}");
    // The matches' jobs were spread: every scoring partition did some.
    let seeds = tally_queue::cluster_seed_urls(&stack.redis_url).expect("a cluster url");
    let mut conn = redis::cluster::ClusterClient::new(seeds)
        .expect("cluster client")
        .get_async_connection()
        .await
        .expect("cluster connection");
    for p in 0..2 {
        let keys = tally_queue::QueueKeys::partition(&stack.prefix, "scoring", p);
        let completed: Option<u64> = redis::AsyncCommands::hget(&mut conn, keys.stats(), "completed")
            .await
            .expect("hget");
        assert!(completed.unwrap_or(0) > 0, "scoring partition {p} did nothing");
    }
    stack.stop_cleanly().await;
}
