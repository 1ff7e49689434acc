//! A matchday through the real binaries: results recorded through the CLI,
//! then scored, totalled and refreshed by the workers, checked against a
//! brute-force recomputation; and the same under SIGKILL and SIGTERM.

use std::time::Duration;

use tally_e2e::{Stack, StackOptions, score_for};
use tally_jobs::{CalculatePoints, Job as _, ScoreMatch};

const SETTLE: Duration = Duration::from_secs(60);

fn opts() -> StackOptions {
    StackOptions {
        users: 300,
        predictions: 4_000,
        ..StackOptions::default()
    }
}

#[tokio::test]
async fn results_recorded_through_the_cli_reach_the_leaderboards_exactly() {
    let mut stack = Stack::new(opts()).await.expect("stack");
    stack
        .start_services(&[
            ("scoring-worker", "scoring-worker"),
            ("stats-worker", "stats-worker-1"),
            ("stats-worker", "stats-worker-2"),
        ])
        .await;

    let matchday = stack.matchday().await.expect("matchday");
    assert!(matchday.len() >= 6, "a round per competition");
    for f in &matchday {
        let (h, a) = score_for(f.id);
        let out = stack
            .tally(&["match", "finish", &f.id.to_string(), &h.to_string(), &a.to_string()])
            .expect("cli");
        assert!(
            out.status.success(),
            "tally match finish failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("ScoreMatch committed with it as job outbox-"), "{text}");
    }
    let checked = stack.wait_settled(SETTLE).await.expect("settled and exact");
    assert_eq!(checked.boards, 3, "overall + two competitions");
    assert!(checked.rows > 0 && checked.tables == 2, "{checked:?}");

    // The CLI reads what the workers published.
    let out = stack.tally(&["--json", "leaderboard", "--top", "3"]).expect("cli");
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(rows[0]["rank"], 1, "{rows}");
    assert!(rows[0]["userId"].is_i64() && rows[0]["points"].is_i64(), "{rows}");
    let out = stack.tally(&["--json", "queue", "stats"]).expect("cli");
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    for q in ["scoring", "stats"] {
        let s = &stats["queues"][q];
        assert_eq!(
            (s["ready"].as_u64(), s["inFlight"].as_u64(), s["dead"].as_u64()),
            (Some(0), Some(0), Some(0)),
            "{q}: {s}"
        );
    }
    assert_eq!(
        stats["queues"]["scoring"]["counters"]["completed"].as_u64(),
        Some(matchday.len() as u64),
        "{stats}"
    );

    stack.stop_cleanly().await;
}

#[tokio::test]
async fn workers_killed_with_sigkill_mid_run_leave_the_final_state_exact() {
    let mut stack = Stack::new(StackOptions {
        users: 400,
        predictions: 12_000,
        ..StackOptions::default()
    })
    .await
    .expect("stack");
    stack
        .start_services(&[
            ("scoring-worker", "scoring-worker"),
            ("stats-worker", "stats-worker-1"),
            ("stats-worker", "stats-worker-2"),
        ])
        .await;

    // Three rounds of results. In each, a transaction of the test's own
    // holds a SHARE lock on `predictions`, so the scoring job blocks inside
    // its UPDATE with its lease held: the SIGKILL lands mid-job by
    // construction, not by luck of timing. (The stats workers are killed at
    // whatever point they are.)
    for _ in 0..3 {
        let (_, held) = stack.matchday_with_scoring_held().await.expect("scoring held");
        stack.service("stats-worker-1").kill9().await.expect("kill stats");
        stack.service("scoring-worker").kill9().await.expect("kill scoring");
        held.release().await.expect("unlock");
        stack.service("stats-worker-1").restart().expect("restart stats");
        stack.service("scoring-worker").restart().expect("restart scoring");
        stack
            .service("scoring-worker")
            .wait_ready(Duration::from_secs(20))
            .await
            .expect("ready");
    }
    // Leases are 2 s: whatever the killed workers held comes back and runs
    // again; idempotent handlers make the repeat harmless.
    stack
        .wait_settled(SETTLE)
        .await
        .expect("settled and exact after SIGKILLs");
    // Each kill took at least the blocked job with it: the reaper gave each
    // back to the queue (a kill between jobs would leave this at 0).
    let recovered = stack
        .admin
        .stats(ScoreMatch::QUEUE)
        .await
        .expect("stats")
        .counters
        .recovered;
    assert!(
        recovered >= 3,
        "{recovered} scoring job(s) recovered after 3 mid-job kills"
    );
    stack.stop_cleanly().await;
}

#[tokio::test]
async fn sigterm_under_load_exits_zero_within_the_deadline_and_loses_nothing() {
    let mut stack = Stack::new(StackOptions {
        users: 400,
        predictions: 12_000,
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
    stack.finish_all(&matchday).await;
    // SHUTDOWN_TIMEOUT_SECS is 5: each must be gone well within 5 s + slack.
    for name in ["scoring-worker", "stats-worker", "cron-gateway"] {
        let started = std::time::Instant::now();
        let status = stack
            .service(name)
            .terminate(Duration::from_secs(10))
            .await
            .expect("terminated");
        assert!(status.success(), "{name} exited with {status}");
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{name} took {:?}",
            started.elapsed()
        );
    }
    // Whatever was running went back to the head of its queue: new workers finish it.
    stack.service("scoring-worker").restart().expect("restart");
    stack.service("stats-worker").restart().expect("restart");
    stack.wait_settled(SETTLE).await.expect("nothing lost");
    stack.stop_cleanly().await;
}

/// A matchday's results scored while no stats worker runs leave their
/// points jobs waiting; a stats worker then totals them. Each finished
/// points job asks for a refresh, which coalesces into one still waiting;
/// a free slot claims that waiting refresh at once, after which the next
/// request makes a new one. So one slot (`WORKER_CONCURRENCY=1`) costs one
/// or two refreshes for the burst, and the default five slots up to about
/// one per slot (measured: 5 for 6 results), never more than one per
/// result. (The stats-worker's docs say this; without the dedup key every
/// result would cost its own refresh at any concurrency.)
async fn burst_refreshes(concurrency: &str) -> (u64, u64) {
    let mut stack = Stack::new(opts()).await.expect("stack");
    stack.start_services(&[("scoring-worker", "scoring-worker")]).await;
    let matchday = stack.matchday().await.expect("matchday");
    let n = matchday.len() as u64;
    assert!(n >= 6, "{matchday:?}");
    stack.finish_all(&matchday).await;
    let admin = stack.admin.clone();
    stack
        .wait_for("every result scored, its points job waiting", SETTLE, || {
            let admin = admin.clone();
            async move { Ok(admin.stats(CalculatePoints::QUEUE).await?.ready == n) }
        })
        .await
        .expect("points jobs waiting");
    stack
        .start_with("stats-worker", "stats-worker", &[("WORKER_CONCURRENCY", concurrency)])
        .await
        .expect("stats-worker");
    stack.wait_settled(SETTLE).await.expect("settled and exact");
    let completed = stack
        .admin
        .stats(CalculatePoints::QUEUE)
        .await
        .expect("stats")
        .counters
        .completed;
    stack.stop_cleanly().await;
    (completed - n, n)
}

#[tokio::test]
async fn a_burst_of_results_costs_one_or_two_refreshes_on_one_slot() {
    let (refreshes, n) = burst_refreshes("1").await;
    assert!(
        (1..=2).contains(&refreshes),
        "{refreshes} refreshes for a burst of {n} results"
    );
}

#[tokio::test]
async fn a_burst_of_results_never_costs_more_refreshes_than_results() {
    let (refreshes, n) = burst_refreshes("5").await;
    assert!(
        (1..=n).contains(&refreshes),
        "{refreshes} refreshes for a burst of {n} results"
    );
}
