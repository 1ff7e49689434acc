//! Benchmark of the outbox relay and the repairing safety net, on a private
//! PostgreSQL and Redis (tally-testkit). Prints figures and one JSON line;
//! docs/BENCHMARKS.md ("Outbox relay and repair") has the results.
//!
//! ```sh
//! cargo run --release -p tally-bench --example safety_net
//! # sizes: ROWS=1000 GAP_MS=20 BURST=5000 USERS=100000 PREDICTIONS=1000000 COMPETITIONS=4 TEAMS=20 BATCH=200
//! ```
//!
//! 1. Relay latency when idle: one outbox row committed at a time, `GAP_MS`
//!    apart, with a relay running (LISTEN/NOTIFY, poll interval one hour so
//!    only notifications count); measured from just before the INSERT's
//!    autocommit is sent to the job id popped from the ready list with
//!    `BLPOP` (no polling on the measuring side either).
//! 2. Relay throughput: `BURST` rows committed in one transaction, time
//!    until the last is in Redis.
//! 3. Repair throughput on a seeded database (`USERS`, `PREDICTIONS`, every
//!    match of `COMPETITIONS` x `TEAMS` teams finished straight in SQL, no
//!    job): repair runs (`RepairPipeline`, as scoring-worker runs them) of
//!    `BATCH` matches until nothing is left, first with every prediction
//!    unscored (ScoreMatch enqueued), then
//!    with every match scored but no points calculated (CalculatePoints
//!    enqueued; the scan walks each match's predictions).

use std::time::{Duration, Instant};

use scoring_worker::repair::{RepairReport, repair};
use tally_jobs::{Priority, RepairPipeline, ScoreMatch};
use tally_queue::{Producer, QueueClient, QueueConfig};
use tally_store::Store;
use tally_store::seed::SeedOptions;
use tally_worker::outbox::{Relay, RelaySettings, outbox_envelope};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rows = env_num("ROWS", 1000) as usize;
    let gap = Duration::from_millis(env_num("GAP_MS", 20));
    let burst = env_num("BURST", 5000) as usize;

    let db = tally_testkit::database().await;
    tally_store::migrate_url(&db.url).await?;
    let store = Store::connect(&db.url, 8).await?;
    let redis = tally_testkit::redis().await;
    let client = QueueClient::new(&redis.url, QueueConfig::with_prefix(&redis.namespace))?;
    let producer = Producer::new(client.clone());
    let ready = client.keys("scoring").ready(Priority::Normal);

    // 1. Idle latency.
    let relay = Relay::new(
        store.clone(),
        producer.clone(),
        db.url.clone(),
        RelaySettings {
            enabled: true,
            batch: 100,
            poll: Duration::from_secs(3600),
        },
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(relay.run_until(async move {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut conn = redis.connection().await;
    let envelope = outbox_envelope(&ScoreMatch { match_id: 1 }, None);
    let mut latencies = Vec::with_capacity(rows);
    for i in 0..rows + 20 {
        let started = Instant::now();
        store.enqueue_outbox(&envelope).await?;
        let popped: Option<(String, String)> = redis::cmd("BLPOP").arg(&ready).arg(10).query_async(&mut conn).await?;
        anyhow::ensure!(popped.is_some(), "row {i} not relayed within 10 s");
        if i >= 20 {
            // The first 20 warm connections and caches up.
            latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        tokio::time::sleep(gap).await;
    }
    latencies.sort_by(f64::total_cmp);
    let (p50, p90, p99, max) = (
        percentile(&latencies, 50.0),
        percentile(&latencies, 90.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or(f64::NAN),
    );
    println!(
        "relay latency, idle ({rows} rows, one per {} ms): p50 {p50:.2} ms, p90 {p90:.2} ms, p99 {p99:.2} ms, max {max:.2} ms",
        gap.as_millis()
    );

    // 2. A burst in one transaction.
    let started = Instant::now();
    {
        let mut pg = store.pool().get().await?;
        let tx = pg.transaction().await?;
        for _ in 0..burst {
            tally_store::outbox::enqueue_in(&*tx, &envelope).await?;
        }
        tx.commit().await?;
    }
    let committed = started.elapsed();
    let mut popped = 0;
    while popped < burst {
        let got: Option<(String, String)> = redis::cmd("BLPOP").arg(&ready).arg(10).query_async(&mut conn).await?;
        anyhow::ensure!(got.is_some(), "burst not relayed within 10 s ({popped} of {burst})");
        popped += 1;
    }
    let relayed = started.elapsed().saturating_sub(committed);
    let burst_rate = burst as f64 / relayed.as_secs_f64();
    println!(
        "relay throughput: {burst} rows committed in one transaction ({:.0} ms), all in Redis {:.0} ms after the commit: {burst_rate:.0} rows/s",
        committed.as_secs_f64() * 1000.0,
        relayed.as_secs_f64() * 1000.0
    );
    let _ = stop.send(());
    running.await?;

    // 3. Repair throughput.
    let seed_db = tally_testkit::database().await;
    tally_store::migrate_url(&seed_db.url).await?;
    let seeded = Store::connect(&seed_db.url, 8).await?;
    let options = SeedOptions {
        users: env_num("USERS", 100_000) as u32,
        predictions: env_num("PREDICTIONS", 1_000_000),
        competitions: env_num("COMPETITIONS", 4) as u32,
        teams_per_competition: env_num("TEAMS", 20) as u32,
        played_fraction: 0.0,
        seed: 42,
    };
    let seeding = Instant::now();
    let summary = seeded.seed(&options, &|_| {}).await?;
    println!(
        "seeded {} users, {} matches, {} predictions in {:.1} s",
        summary.users,
        summary.matches,
        summary.predictions,
        seeding.elapsed().as_secs_f64()
    );
    let lost = seeded
        .pool()
        .get()
        .await?
        .execute(
            "UPDATE matches SET status = 'finished', home_score = 1, away_score = 0, finished_at = now()",
            &[],
        )
        .await?;
    let settings = RepairPipeline {
        grace_secs: 0,
        batch: env_num("BATCH", 200) as u32,
    };
    let unscored = repair_until_done(&seeded, &producer, &settings, "unscored").await?;
    let scoring = Instant::now();
    for id in 1..=i64::try_from(summary.matches)? {
        seeded.score_match(id).await?;
    }
    println!(
        "(scored every match directly in {:.1} s, no points calculated)",
        scoring.elapsed().as_secs_f64()
    );
    let points = repair_until_done(&seeded, &producer, &settings, "points missing").await?;
    println!(
        "{{\"bench\":\"safety_net\",\"relayIdleP50Ms\":{p50:.3},\"relayIdleP90Ms\":{p90:.3},\"relayIdleP99Ms\":{p99:.3},\"relayIdleMaxMs\":{max:.3},\"relayBurstRowsPerSec\":{burst_rate:.0},\"lostMatches\":{lost},\"predictions\":{},\"repairUnscoredMatchesPerSec\":{:.0},\"repairPointsMissingMatchesPerSec\":{:.0},\"batch\":{}}}",
        summary.predictions, unscored, points, settings.batch
    );
    Ok(())
}

/// Runs repair calls until every marked match was repaired once (no worker
/// runs here, so the markers stay; each call moves the ones it repaired to
/// the back of the line); returns the matches repaired per second.
async fn repair_until_done(
    store: &Store,
    producer: &Producer,
    settings: &RepairPipeline,
    what: &str,
) -> anyhow::Result<f64> {
    let marked: i64 = store
        .pool()
        .get()
        .await?
        .query_one("SELECT count(*) FROM match_pipeline_pending", &[])
        .await?
        .get(0);
    let marked = u64::try_from(marked)?;
    let mut total = 0;
    let mut calls = Vec::new();
    let started = Instant::now();
    while total < marked {
        let call = Instant::now();
        let report: RepairReport = repair(store, producer, settings).await?;
        calls.push(call.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(
            report.found() > 0,
            "a repair call found nothing with {} left",
            marked - total
        );
        total += report.found();
    }
    let elapsed = started.elapsed().as_secs_f64();
    calls.sort_by(f64::total_cmp);
    let rate = total as f64 / elapsed;
    println!(
        "repair, {what}: {marked} marked matches, {total} repaired in {} calls of at most {}: {rate:.0} matches/s; per call p50 {:.1} ms, max {:.1} ms",
        calls.len(),
        settings.batch,
        percentile(&calls, 50.0),
        calls.last().copied().unwrap_or(f64::NAN)
    );
    Ok(rate)
}
