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
    stack
        .start_services(&[("scoring-worker", "scoring-worker"), ("stats-worker", "stats-worker")])
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
    stack.stop_cleanly().await;
}
