//! Dependencies going away mid-run: PostgreSQL stopped for 10 seconds, Redis
//! restarted (with AOF persistence). Jobs retry and complete; none is dead.

use std::time::Duration;

use tally_e2e::{Stack, StackOptions, score_for};

#[tokio::test]
async fn postgres_down_for_ten_seconds_delays_jobs_without_killing_them() {
    let mut stack = Stack::new(StackOptions {
        own_postgres: true,
        ..StackOptions::default()
    })
    .await
    .expect("stack");
    stack
        .start_services(&[("scoring-worker", "scoring-worker"), ("stats-worker", "stats-worker")])
        .await;
    let matchday = stack.matchday().await.expect("matchday");
    // Record the results while the database is up, enqueue the scoring while it is down.
    for f in &matchday {
        let (h, a) = score_for(f.id);
        stack.store.record_result(f.id, h, a).await.expect("record");
    }
    stack.postgres.as_mut().expect("own postgres").stop().await;
    for f in &matchday {
        stack
            .producer
            .enqueue(&tally_jobs::ScoreMatch { match_id: f.id })
            .await
            .expect("enqueue while db is down");
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    stack
        .postgres
        .as_mut()
        .expect("own postgres")
        .start_again()
        .await
        .expect("postgres back");
    stack
        .wait_settled(Duration::from_secs(90))
        .await
        .expect("jobs delayed and completed, none dead");
    // The outage was felt, and waited out inside the attempts: no job spent
    // its attempts on it, none is dead.
    let log = stack.service("scoring-worker").log_tail(10_000);
    assert!(
        log.contains("database unavailable; waiting for it"),
        "the outage was not noticed:\n{log}"
    );
    for queue in ["scoring", "stats"] {
        let stats = stack.admin.stats(queue).await.expect("stats");
        assert_eq!((stats.dead, stats.counters.dead), (0, 0), "{queue}: {stats:?}");
    }
    stack.stop_cleanly().await;
}

#[tokio::test]
async fn a_redis_restart_mid_run_loses_nothing() {
    let mut stack = Stack::new(StackOptions {
        own_redis: true,
        ..StackOptions::default()
    })
    .await
    .expect("stack");
    stack
        .start_services(&[
            ("scoring-worker", "scoring-worker"),
            ("stats-worker", "stats-worker"),
            ("cron-gateway", "cron-gateway"),
        ])
        .await;
    let matchday = stack.matchday().await.expect("matchday");
    let (first, second) = matchday.split_at(matchday.len() / 2);
    stack.finish_all(first).await;
    stack
        .redis
        .as_mut()
        .expect("own redis")
        .restart()
        .await
        .expect("redis restarted");
    for f in second {
        let (h, a) = score_for(f.id);
        // The producer reconnects on its own; a call during the restart may fail once.
        let mut tries = 0;
        while let Err(e) = stack.finish(f.id, h, a).await {
            tries += 1;
            assert!(tries < 50, "enqueue never recovered: {e:#}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    stack
        .wait_settled(Duration::from_secs(60))
        .await
        .expect("settled after the Redis restart");
    // Each service reconnected: its readiness probe passes again (the first
    // command on a connection Redis dropped may fail; probes tolerate that).
    for name in ["scoring-worker", "stats-worker", "cron-gateway"] {
        let addr = stack.service(name).addr;
        let mut last = None;
        for _ in 0..50 {
            let ready = tally_testkit::http::get(addr, "/readyz").await.expect("readyz");
            if ready.status == 200 {
                last = None;
                break;
            }
            last = Some(ready.body);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(last, None, "{name} did not reconnect");
    }
    stack.stop_cleanly().await;
}
