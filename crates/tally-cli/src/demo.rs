//! `tally demo`: a whole matchday through the real services.
//!
//! Migrates, seeds a small season, starts cron-gateway, scoring-worker and
//! several stats-workers as separate processes, records a matchday of
//! results (each committed with its `ScoreMatch` in the outbox, which the
//! workers relay, exactly as `tally match finish` does), calls the cron
//! endpoint over HTTP with the secret,
//! waits until every queue is idle and the published leaderboards and league
//! tables equal a brute-force recomputation, prints them, and stops the
//! services with SIGTERM, checking each exits 0. Any failure stops the demo
//! with the reason and the end of the relevant service log.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use rand::{Rng as _, SeedableRng as _};
use tally_queue::QueueAdmin;
use tally_testkit::http;

use crate::cli::{Cli, DemoArgs, SeedArgs};
use crate::commands::{
    QUEUES, connect_queue, connect_store, finish_match, print_leaderboard, print_standings, seed_with_progress,
};
use crate::services::Service;

fn step(n: usize, text: &str) {
    eprintln!("\n{}", crate::output::styled("1", &format!("[{n}/8] {text}")));
}

/// Runs the demo.
pub async fn run(cli: &Cli, args: &DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let database_url = cli
        .database_url
        .clone()
        .context("DATABASE_URL is not set: run `make demo`, which starts a private PostgreSQL")?;
    crate::commands::redis_url(cli)?;

    step(1, "migrating the database");
    let store = connect_store(cli).await?;
    let applied = store.migrate().await?;
    eprintln!("  {} migration(s) applied", applied.len());

    step(2, "seeding a small season");
    let seed = SeedArgs {
        users: args.users,
        predictions: args.predictions,
        competitions: 2,
        teams: 10,
        played: 0.5,
        seed: 42,
    };
    match seed_with_progress(&store, &seed).await {
        Ok(summary) => eprintln!(
            "  {} users, {} matches ({} already played), {} predictions",
            summary.users, summary.matches, summary.finished_matches, summary.predictions
        ),
        Err(e)
            if e.downcast_ref::<tally_store::StoreError>()
                .is_some_and(|e| matches!(e, tally_store::StoreError::Seed(_))) =>
        {
            eprintln!("  the database already has a season ({e:#}); playing its next matchday");
        }
        Err(e) => return Err(e),
    }
    let matchday = next_matchday(&store).await?;
    anyhow::ensure!(!matchday.is_empty(), "no scheduled matches left to play");

    step(3, "starting the services (separate processes)");
    let client = connect_queue(cli).await?;
    let admin = QueueAdmin::new(client);
    let secret = format!("demo-{:032x}", rand::rng().random::<u128>());
    let env = vec![
        ("REDIS_URL".to_owned(), crate::commands::redis_url(cli)?.to_owned()),
        ("DATABASE_URL".to_owned(), database_url),
        ("TALLY_QUEUE_PREFIX".to_owned(), cli.queue_prefix.clone()),
        ("CRON_SECRET".to_owned(), secret.clone()),
        (
            "RUST_LOG".to_owned(),
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        ),
        ("SHUTDOWN_TIMEOUT_SECS".to_owned(), "10".into()),
    ];
    // The gateway needs Redis only (the repair it asks for runs in
    // scoring-worker).
    let gateway_env: Vec<(String, String)> = env.iter().filter(|(k, _)| k != "DATABASE_URL").cloned().collect();
    let mut services = vec![
        Service::start("cron-gateway", "cron-gateway", &gateway_env, "BIND_ADDR", &args.log_dir)?,
        Service::start("scoring-worker", "scoring-worker", &env, "HEALTH_ADDR", &args.log_dir)?,
    ];
    for i in 1..=args.stats_workers.max(1) {
        services.push(Service::start(
            "stats-worker",
            &format!("stats-worker-{i}"),
            &env,
            "HEALTH_ADDR",
            &args.log_dir,
        )?);
    }
    let result = play(&store, &admin, &mut services, &matchday, &secret, args).await;

    step(8, "stopping the services (SIGTERM, drain)");
    let mut clean = true;
    for s in &mut services {
        match s.terminate(Duration::from_secs(20)).await {
            Ok(status) if status.success() => eprintln!("  {} exited 0", s.name),
            Ok(status) => {
                clean = false;
                eprintln!("  {} exited with {status}:\n{}", s.name, s.log_tail(10));
            }
            Err(e) => {
                clean = false;
                eprintln!("  {e:#}");
            }
        }
    }
    let fresh_after = result?;
    anyhow::ensure!(
        clean,
        "a service did not shut down cleanly (logs in {})",
        args.log_dir.display()
    );
    eprintln!(
        "\n{}: {} results → leaderboards and tables verified fresh {:.0} ms after the first result; {:.1} s in all; logs in {}",
        crate::output::styled("32", "demo passed"),
        matchday.len(),
        fresh_after.as_secs_f64() * 1000.0,
        started.elapsed().as_secs_f64(),
        args.log_dir.display()
    );
    Ok(())
}

/// A match to play: id, competition, team names.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// Match id.
    pub id: i64,
    /// Competition id.
    pub competition: i64,
    /// Home team.
    pub home: String,
    /// Away team.
    pub away: String,
}

/// The next round of each competition: its earliest scheduled matches, as
/// many as half its teams.
pub async fn next_matchday(store: &tally_store::Store) -> anyhow::Result<Vec<Fixture>> {
    let client = store.pool().get().await?;
    let rows = client
        .query(
            "WITH sizes AS (
                 SELECT competition_id, count(DISTINCT team) / 2 AS per_round
                   FROM matches, LATERAL (VALUES (home_team_id), (away_team_id)) AS t(team)
                  GROUP BY competition_id),
             open AS (
                 SELECT m.*, row_number() OVER (PARTITION BY m.competition_id ORDER BY m.kickoff_at, m.id) AS n
                   FROM matches m WHERE m.status = 'scheduled')
             SELECT o.id, o.competition_id, h.name, a.name
               FROM open o JOIN sizes s USING (competition_id)
               JOIN teams h ON h.id = o.home_team_id JOIN teams a ON a.id = o.away_team_id
              WHERE o.n <= s.per_round
              ORDER BY o.competition_id, o.kickoff_at, o.id",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Fixture {
            id: r.get(0),
            competition: r.get(1),
            home: r.get(2),
            away: r.get(3),
        })
        .collect())
}

async fn play(
    store: &tally_store::Store,
    admin: &QueueAdmin,
    services: &mut [Service],
    matchday: &[Fixture],
    secret: &str,
    args: &DemoArgs,
) -> anyhow::Result<Duration> {
    for s in services.iter_mut() {
        s.wait_ready(Duration::from_secs(30)).await?;
        eprintln!("  {} ready on {} (pid {})", s.name, s.addr, s.pid().unwrap_or(0));
    }

    step(4, &format!("recording a matchday: {} results", matchday.len()));
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let first_result = Instant::now();
    for f in matchday {
        let (home, away) = (goals(&mut rng), goals(&mut rng));
        let job = finish_match(store, f.id, home, away).await?;
        eprintln!(
            "  match {:>4}  {:>22} {home}-{away} {:<22}  → ScoreMatch {} (committed with the result)",
            f.id, f.home, f.away, job.job_id
        );
    }

    step(5, "calling the cron endpoint with the secret");
    let gateway = services
        .iter()
        .find(|s| s.name == "cron-gateway")
        .context("gateway not started")?;
    let auth = format!("Bearer {secret}");
    let response = http::request(
        gateway.addr,
        "POST",
        "/api/cron/update-stats?scope=all",
        &[("Authorization", &auth)],
        b"",
    )
    .await?;
    eprintln!("  POST /api/cron/update-stats → {} {}", response.status, response.body);
    anyhow::ensure!(response.status == 200, "the gateway refused the cron call");
    let wrong = http::request(
        gateway.addr,
        "POST",
        "/api/cron/update-stats",
        &[("Authorization", "Bearer wrong")],
        b"",
    )
    .await?;
    eprintln!("  (with a wrong secret → {} {})", wrong.status, wrong.body);

    step(6, "waiting until the leaderboard reflects every result");
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let mut last_report = Instant::now();
    let fresh_after = loop {
        let mut busy = 0;
        for q in QUEUES {
            let s = admin.stats(q).await?;
            anyhow::ensure!(
                s.dead == 0,
                "queue {q} has {} dead job(s): see `tally queue dead list --queue {q}`",
                s.dead
            );
            busy += s.ready + s.scheduled + s.in_flight;
        }
        // Committed with their results, not yet relayed to Redis.
        busy += u64::try_from(store.outbox_backlog().await?.pending).unwrap_or(0);
        if busy == 0 {
            match tally_oracle::verify(store).await? {
                Ok(checked) => {
                    let elapsed = first_result.elapsed();
                    eprintln!(
                        "  queues idle; {} leaderboards ({} rows) and {} league tables equal a brute-force recomputation",
                        checked.boards, checked.rows, checked.tables
                    );
                    break elapsed;
                }
                Err(diff) if Instant::now() > deadline => anyhow::bail!("leaderboard still differs: {diff}"),
                Err(_) => {}
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!("queues still busy ({busy} jobs) after {}s", args.timeout_secs);
        }
        if last_report.elapsed() > Duration::from_secs(2) {
            eprintln!("  … {busy} job(s) still queued or running");
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    step(7, "the results");
    eprintln!("\noverall leaderboard (top 10):");
    print_leaderboard(&store.leaderboard(None, 10, 0).await?, false)?;
    if let Some(first) = matchday.first() {
        eprintln!("\nleague table of competition {}:", first.competition);
        print_standings(&store.standings(first.competition).await?, false)?;
    }
    Ok(fresh_after)
}

/// A plausible number of goals (mostly 0-3).
fn goals(rng: &mut impl rand::Rng) -> i32 {
    const WEIGHTS: [u32; 6] = [25, 35, 22, 11, 5, 2];
    let mut pick = rng.random_range(0..WEIGHTS.iter().sum::<u32>());
    for (g, w) in WEIGHTS.iter().enumerate() {
        if pick < *w {
            return g as i32;
        }
        pick -= w;
    }
    0
}
