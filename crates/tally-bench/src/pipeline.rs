//! The pipeline benchmark: how soon a result reaches the leaderboard, what a
//! refresh costs next to the naive full refresh, and whether readers notice.
//!
//! One run: migrate, seed (or reuse), publish, then for a sequence of open
//! matches in kickoff order: record a result, score, calculate points,
//! refresh, read the leaderboard back. The time from recording to that read
//! is the freshness of one match (in production the same steps are chained
//! by jobs through Redis, adding the queue's hop latency, about a
//! millisecond each). Meanwhile reader tasks on their own connections read
//! leaderboard pages in a loop; reads overlapping a refresh are reported
//! separately. Then the naive design (materialized views aggregating all
//! predictions, `REFRESH MATERIALIZED VIEW`) is refreshed several times in
//! the same run and database, with the readers switched to the naive view,
//! so both costs and both reader experiences are measured side by side.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Mutex;

use tally_store::model::Scope;
use tally_store::seed::{self, SeedOptions, SeedProgress, SeedRng, SeedSummary};
use tally_store::{Store, StoreError, migrate_url};

const NAIVE_VIEWS_SQL: &str = include_str!("../sql/naive_views.sql");
const NAIVE_LEADERBOARD_PAGE_SQL: &str = "SELECT n.user_id, u.username, n.points, n.rank
     FROM naive_leaderboard AS n JOIN users AS u ON u.id = n.user_id
     WHERE n.board_id = $1 ORDER BY n.points DESC, n.user_id LIMIT $2";

/// What to run.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// The database to use (created and dropped by the caller).
    pub database_url: String,
    /// Data to seed into an empty database.
    pub seed: SeedOptions,
    /// Use the data already there instead of refusing a non-empty database.
    pub reuse: bool,
    /// Matches to play through the pipeline, in kickoff order.
    pub matches: usize,
    /// Concurrent reader connections.
    pub readers: usize,
    /// Pause between two reads of one reader, so readers load the server
    /// like traffic rather than saturating the two cores.
    pub read_pause: Duration,
    /// Rows per leaderboard page read.
    pub read_top: i64,
    /// Naive full refreshes to time.
    pub naive_runs: usize,
    /// Matches whose points are committed before one single refresh, to
    /// show a refresh covering several matches (as queue deduplication
    /// produces). 0 skips it.
    pub batch_matches: usize,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            database_url: String::new(),
            seed: SeedOptions::default(),
            reuse: false,
            matches: 30,
            readers: 4,
            read_pause: Duration::from_millis(2),
            read_top: 50,
            naive_runs: 3,
            batch_matches: 10,
        }
    }
}

/// Latency summary in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Latency {
    /// Measurements.
    pub samples: usize,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile (nearest rank).
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Latency {
    /// Summarises durations.
    pub fn from_durations(durations: &[Duration]) -> Self {
        let mut ms: Vec<f64> = durations.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let pick = |q: f64| -> f64 {
            if ms.is_empty() {
                return 0.0;
            }
            let rank = (q * ms.len() as f64).ceil() as usize;
            round3(ms[rank.clamp(1, ms.len()) - 1])
        };
        Self {
            samples: ms.len(),
            p50_ms: pick(0.50),
            p99_ms: pick(0.99),
            max_ms: pick(1.0),
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Time per pipeline stage.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stages {
    /// `record_result`.
    pub record_result: Latency,
    /// `score_match`.
    pub score: Latency,
    /// `calculate_points`.
    pub points: Latency,
    /// `refresh_views(All)`.
    pub refresh: Latency,
    /// The leaderboard read that shows the result.
    pub read_back: Latency,
}

/// The benchmark's result; printed as one JSON line.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineReport {
    /// Always `"pipeline"`.
    pub bench: &'static str,
    /// Users in the database.
    pub users: i64,
    /// Predictions in the database.
    pub predictions: i64,
    /// Matches played through the pipeline.
    pub matches: usize,
    /// Mean predictions per played match (users whose totals changed).
    pub predictions_per_match: f64,
    /// Seed summary when this run seeded (None when reusing).
    pub seed_ms: Option<u64>,
    /// Result recorded → leaderboard read shows it.
    pub freshness: Latency,
    /// tally's refresh (`refresh_views(All)` after one match).
    pub refresh: Latency,
    /// The naive full refresh of both materialized views.
    pub naive_refresh: Latency,
    /// naive p50 / tally p50.
    pub refresh_speedup: f64,
    /// Leaderboard reads that overlapped a tally refresh.
    pub read_during_refresh: Latency,
    /// All leaderboard reads during the pipeline phase.
    pub read_all: Latency,
    /// Reads of the naive view that overlapped a naive refresh.
    pub read_during_naive_refresh: Latency,
    /// One refresh publishing `batch_matches` matches at once.
    pub batch_refresh: BatchRefresh,
    /// Per-stage times.
    pub stages: Stages,
    /// Reader connections.
    pub readers: usize,
}

/// A refresh covering several matches.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchRefresh {
    /// Matches whose points it published.
    pub matches: usize,
    /// (board, user) pairs it published.
    pub pairs: i64,
    /// Its duration.
    pub ms: f64,
}

/// Reader phases: what the reader tasks read and how samples are filed.
const PHASE_TALLY: u8 = 0;
const PHASE_NAIVE: u8 = 1;
const PHASE_STOP: u8 = 2;

#[derive(Debug, Default)]
struct ReadSamples {
    all: Vec<Duration>,
    during_refresh: Vec<Duration>,
    during_naive_refresh: Vec<Duration>,
}

/// Runs the benchmark. `progress` receives seed progress and a line per
/// phase (for a progress bar or a log).
pub async fn pipeline(
    options: &PipelineOptions,
    seed_progress: &(dyn Fn(SeedProgress) + Send + Sync),
    log: &(dyn Fn(&str) + Send + Sync),
) -> Result<PipelineReport, StoreError> {
    migrate_url(&options.database_url).await?;
    let store = Store::connect(&options.database_url, 4).await?;

    let has_data: bool = store
        .pool()
        .get()
        .await?
        .query_one("SELECT EXISTS (SELECT 1 FROM predictions)", &[])
        .await?
        .get(0);
    let seed_ms = if has_data {
        if !options.reuse {
            return Err(StoreError::Seed(
                "the database already has data; reuse it explicitly".into(),
            ));
        }
        log("reusing existing data");
        None
    } else {
        log("seeding");
        let mut client = store.pool().get().await?;
        let summary: SeedSummary = seed::seed(&mut client, &options.seed, seed_progress).await?;
        log(&format!(
            "seeded {} users, {} predictions in {} ms",
            summary.users, summary.predictions, summary.elapsed_ms
        ));
        Some(summary.elapsed_ms)
    };
    // Start from an empty work list, whatever happened before.
    store.refresh_views(Scope::All).await?;

    let (users, predictions, open, competitions) = {
        let client = store.pool().get().await?;
        let counts = client
            .query_one(
                "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM predictions)",
                &[],
            )
            .await?;
        let open: Vec<i64> = client
            .query(
                "SELECT id FROM matches WHERE status IN ('scheduled', 'live')
                 ORDER BY kickoff_at, id LIMIT $1",
                &[&((options.matches + options.batch_matches) as i64)],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let competitions: Vec<i64> = client
            .query("SELECT id FROM competitions ORDER BY id", &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        (counts.get::<_, i64>(0), counts.get::<_, i64>(1), open, competitions)
    };
    if open.len() <= options.batch_matches {
        return Err(StoreError::Bench("not enough open matches left to play".into()));
    }
    let (open, batch) = open.split_at(open.len().min(options.matches));

    log("creating the naive materialized views");
    {
        let client = store.pool().get().await?;
        client.batch_execute(NAIVE_VIEWS_SQL).await?;
        // Populate once so readers of the naive phase have data and the
        // timed runs start warm, like tally's.
        client
            .batch_execute("REFRESH MATERIALIZED VIEW naive_leaderboard; REFRESH MATERIALIZED VIEW naive_standings")
            .await?;
    }

    // Readers.
    let phase = Arc::new(AtomicU8::new(PHASE_TALLY));
    let refreshing = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(ReadSamples::default()));
    let mut reader_tasks = Vec::new();
    for reader in 0..options.readers {
        let reader_store = Store::connect(&options.database_url, 1).await?;
        let phase = Arc::clone(&phase);
        let refreshing = Arc::clone(&refreshing);
        let samples = Arc::clone(&samples);
        let boards: Vec<Option<i64>> = std::iter::once(None)
            .chain(competitions.iter().copied().map(Some))
            .collect();
        let pause = options.read_pause;
        let top = options.read_top;
        reader_tasks.push(tokio::spawn(async move {
            read_loop(
                reader_store,
                reader as u64,
                boards,
                top,
                pause,
                phase,
                refreshing,
                samples,
            )
            .await
        }));
    }

    log(&format!("playing {} matches", open.len()));
    let mut rng = SeedRng::new(options.seed.seed ^ 0x5eed_beef);
    let mut freshness = Vec::new();
    let (mut t_record, mut t_score, mut t_points, mut t_refresh, mut t_read) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut affected = 0i64;
    for &match_id in open {
        let (home, away) = (rng.goals(1.5), rng.goals(1.15));
        let start = Instant::now();
        store.record_result(match_id, home, away).await?;
        let recorded = Instant::now();
        store.score_match(match_id).await?;
        let scored = Instant::now();
        let points = store.calculate_points(match_id).await?;
        let pointed = Instant::now();
        refreshing.store(true, Ordering::SeqCst);
        let refreshed_result = store.refresh_views(Scope::All).await;
        refreshing.store(false, Ordering::SeqCst);
        refreshed_result?;
        let refreshed = Instant::now();
        store.leaderboard(None, 10, 0).await?;
        let read = Instant::now();
        affected += points.users;
        t_record.push(recorded - start);
        t_score.push(scored - recorded);
        t_points.push(pointed - scored);
        t_refresh.push(refreshed - pointed);
        t_read.push(read - refreshed);
        freshness.push(read - start);
    }

    let mut batch_refresh = BatchRefresh::default();
    if !batch.is_empty() {
        log(&format!("one refresh for {} matches", batch.len()));
        for &match_id in batch {
            let (home, away) = (rng.goals(1.5), rng.goals(1.15));
            store.record_result(match_id, home, away).await?;
            store.score_match(match_id).await?;
            store.calculate_points(match_id).await?;
        }
        let start = Instant::now();
        refreshing.store(true, Ordering::SeqCst);
        let outcome = store.refresh_views(Scope::All).await;
        refreshing.store(false, Ordering::SeqCst);
        batch_refresh = BatchRefresh {
            matches: batch.len(),
            pairs: outcome?.leaderboard_claimed,
            ms: round3(start.elapsed().as_secs_f64() * 1e3),
        };
    }

    log("timing the naive refresh");
    phase.store(PHASE_NAIVE, Ordering::SeqCst);
    let mut naive = Vec::new();
    {
        let client = store.pool().get().await?;
        for _ in 0..options.naive_runs.max(1) {
            let start = Instant::now();
            refreshing.store(true, Ordering::SeqCst);
            let result = client
                .batch_execute("REFRESH MATERIALIZED VIEW naive_leaderboard; REFRESH MATERIALIZED VIEW naive_standings")
                .await;
            refreshing.store(false, Ordering::SeqCst);
            result?;
            naive.push(start.elapsed());
        }
    }
    phase.store(PHASE_STOP, Ordering::SeqCst);
    for task in reader_tasks {
        match task.await {
            Ok(result) => result?,
            Err(join) => return Err(StoreError::Bench(format!("reader task failed: {join}"))),
        }
    }
    let samples = samples.lock().await;

    let refresh = Latency::from_durations(&t_refresh);
    let naive_refresh = Latency::from_durations(&naive);
    let refresh_speedup = if refresh.p50_ms > 0.0 {
        round3(naive_refresh.p50_ms / refresh.p50_ms)
    } else {
        0.0
    };
    Ok(PipelineReport {
        bench: "pipeline",
        users,
        predictions,
        matches: open.len(),
        predictions_per_match: round3(affected as f64 / open.len() as f64),
        seed_ms,
        freshness: Latency::from_durations(&freshness),
        refresh,
        naive_refresh,
        refresh_speedup,
        read_during_refresh: Latency::from_durations(&samples.during_refresh),
        read_all: Latency::from_durations(&samples.all),
        read_during_naive_refresh: Latency::from_durations(&samples.during_naive_refresh),
        batch_refresh,
        stages: Stages {
            record_result: Latency::from_durations(&t_record),
            score: Latency::from_durations(&t_score),
            points: Latency::from_durations(&t_points),
            refresh: Latency::from_durations(&t_refresh),
            read_back: Latency::from_durations(&t_read),
        },
        readers: options.readers,
    })
}

#[expect(
    clippy::too_many_arguments,
    reason = "a private task body; a struct would only rename the same values"
)]
async fn read_loop(
    store: Store,
    reader: u64,
    boards: Vec<Option<i64>>,
    top: i64,
    pause: Duration,
    phase: Arc<AtomicU8>,
    refreshing: Arc<AtomicBool>,
    samples: Arc<Mutex<ReadSamples>>,
) -> Result<(), StoreError> {
    let mut rng = SeedRng::new(reader);
    let mut local = ReadSamples::default();
    loop {
        let current = phase.load(Ordering::SeqCst);
        if current == PHASE_STOP {
            break;
        }
        let board = boards[rng.below(boards.len() as u64) as usize];
        let overlapped_before = refreshing.load(Ordering::SeqCst);
        let start = Instant::now();
        if current == PHASE_TALLY {
            store.leaderboard(board, top, 0).await?;
        } else {
            let client = store.pool().get().await?;
            let statement = client.prepare_cached(NAIVE_LEADERBOARD_PAGE_SQL).await?;
            client.query(&statement, &[&board.unwrap_or(0), &top]).await?;
        }
        let took = start.elapsed();
        let overlapped = overlapped_before || refreshing.load(Ordering::SeqCst);
        if current == PHASE_TALLY {
            local.all.push(took);
            if overlapped {
                local.during_refresh.push(took);
            }
        } else if overlapped {
            local.during_naive_refresh.push(took);
        }
        tokio::time::sleep(pause).await;
    }
    let mut shared = samples.lock().await;
    shared.all.extend(local.all);
    shared.during_refresh.extend(local.during_refresh);
    shared.during_naive_refresh.extend(local.during_naive_refresh);
    Ok(())
}
