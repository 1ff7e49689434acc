//! An alert on a series nobody emits never fires: every metric name the
//! Prometheus rules (`deploy/prometheus/alerts.yaml`) and the Grafana
//! dashboard (`deploy/grafana/tally-dashboard.json`) query must be served by
//! a real binary's `/metrics` once the events behind it happened. The test
//! makes each happen through the running services (a job completed, one
//! retried, one dead, a worker killed mid-job and its lease recovered, a
//! result written behind tally's back and repaired after a cron call) and reads
//! the names from the two files, so a renamed metric or a new panel on a
//! series nobody emits fails here.

use std::{collections::BTreeSet, time::Duration};

use tally_e2e::{Stack, StackOptions};
use tally_jobs::ScoreMatch;
use tally_testkit::http::get;
use tally_testkit::prometheus;

/// Every `tally_…` metric name in a rules or dashboard file (recording-rule
/// names, `tally:…`, are Prometheus's own and not looked for).
fn queried_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("tally_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// Whether a `/metrics` text serves `name`: a sample of it, or (for a
/// histogram queried by its family name) its `# TYPE` line.
fn serves(text: &str, name: &str) -> bool {
    text.lines().any(|line| {
        line.strip_prefix(name)
            .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
            || line
                .strip_prefix("# TYPE ")
                .and_then(|r| r.strip_prefix(name))
                .is_some_and(|r| r.starts_with(' '))
    })
}

#[test]
fn the_name_reader_finds_names_and_skips_recording_rules() {
    let names = queried_names(
        "sum(rate(tally_jobs_failed_total[5m])) / tally:x:rate5m + tally_job_wait_seconds_bucket{le=\"1\"}",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["tally_job_wait_seconds_bucket", "tally_jobs_failed_total"]
    );
    let text = "# TYPE tally_a histogram\ntally_a_bucket{le=\"1\"} 3\ntally_b 2\n";
    assert!(serves(text, "tally_a") && serves(text, "tally_a_bucket") && serves(text, "tally_b"));
    assert!(!serves(text, "tally_c") && !serves(text, "tally_a_sum"));
}

#[tokio::test]
async fn every_series_the_alerts_and_the_dashboard_query_is_served_by_a_binary() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mut wanted = BTreeSet::new();
    for file in ["deploy/prometheus/alerts.yaml", "deploy/grafana/tally-dashboard.json"] {
        let text = std::fs::read_to_string(format!("{root}/{file}")).expect(file);
        let names = queried_names(&text);
        assert!(names.len() >= 5, "{file} queries {names:?}");
        wanted.extend(names);
    }

    let mut stack = Stack::new(StackOptions {
        users: 200,
        predictions: 3_000,
        ..StackOptions::default()
    })
    .await
    .expect("stack");
    stack.extra_env.push(("REPAIR_GRACE_SECS".into(), "0".into()));
    stack
        .start_services(&[
            ("scoring-worker", "scoring-worker"),
            ("stats-worker", "stats-worker"),
            ("cron-gateway", "cron-gateway"),
        ])
        .await;

    // A worker killed mid-job (a SHARE lock on predictions holds the scoring
    // job in its UPDATE) and restarted: its successor recovers the lease.
    let (_, held) = stack.matchday_with_scoring_held().await.expect("scoring held");
    stack.service("scoring-worker").kill9().await.expect("kill");
    held.release().await.expect("unlock");
    stack.service("scoring-worker").restart().expect("restart");
    stack.wait_settled(Duration::from_secs(60)).await.expect("settled");

    // One job dead (no such match: it gives up), one retried (the match is
    // not finished yet: retried in a minute), one result written straight
    // into the database and found by the repair the cron call asks for
    // (scoring-worker runs it and serves the `tally_repair_*` series).
    let next = stack.matchday().await.expect("matchday");
    assert!(next.len() >= 2, "{next:?}");
    stack
        .producer
        .enqueue(&ScoreMatch { match_id: 987_654_321 })
        .await
        .expect("enqueue");
    stack
        .producer
        .enqueue(&ScoreMatch { match_id: next[0].id })
        .await
        .expect("enqueue");
    let client = stack.store.pool().get().await.expect("client");
    client
        .execute(
            "UPDATE matches SET status = 'finished', home_score = 1, away_score = 0, finished_at = now() WHERE id = $1",
            &[&next[1].id],
        )
        .await
        .expect("result written directly");
    let (answer, repaired) = stack
        .cron_and_repair("cron-gateway", "scoring-worker")
        .await
        .expect("cron call and repair");
    assert_eq!(repaired.unscored, 1, "{answer} {repaired:?}");

    // Gauges are sampled every few seconds: wait until every name is served
    // (a hang guard; the failure names what is missing).
    let addrs: Vec<_> = ["scoring-worker", "stats-worker", "cron-gateway"]
        .into_iter()
        .map(|name| (name, stack.service(name).addr))
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let texts = loop {
        let mut texts = Vec::new();
        for (name, addr) in &addrs {
            texts.push((*name, get(*addr, "/metrics").await.expect("metrics").body));
        }
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|n| !texts.iter().any(|(_, t)| serves(t, n)))
            .collect();
        if missing.is_empty() {
            break texts;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "queried but served by no binary: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // The heartbeats the "no worker" alerts watch, from the worker of each queue.
    let text = |name: &str| &texts.iter().find(|(n, _)| *n == name).expect(name).1;
    for (worker, queue) in [("scoring-worker", "scoring"), ("stats-worker", "stats")] {
        let beat = prometheus::sum(
            text(worker),
            "tally_worker_heartbeat_timestamp_seconds",
            &[("queue", queue)],
        )
        .unwrap_or(0.0);
        assert!(beat > 1.6e9, "{worker}'s heartbeat for {queue}: {beat}");
    }
    let scoring = text("scoring-worker");
    for (name, at_least) in [
        ("tally_lease_recoveries_total", 1.0),
        ("tally_jobs_dead_total", 1.0),
        ("tally_jobs_retried_total", 1.0),
        ("tally_jobs_failed_total", 2.0),
    ] {
        let n = prometheus::sum(scoring, name, &[("queue", "scoring")]).unwrap_or(0.0);
        assert!(n >= at_least, "{name} = {n} on the scoring worker:\n{scoring}");
    }
    stack.stop_cleanly().await;
}
