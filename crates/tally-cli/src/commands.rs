//! The plain commands: each connects to what it needs, does one thing and
//! prints a table (or JSON with `--json`).

use std::{collections::HashSet, time::Duration};

use anyhow::Context as _;
use serde_json::json;
use tally_jobs::{Job as _, RefreshScope, RefreshViews, ScoreMatch};
use tally_queue::{DeadSelector, EnqueueOptions, Producer, QueueAdmin, QueueClient, QueueConfig};
use tally_store::{MatchStatus, Store, seed::SeedOptions};
use tally_worker::outbox::outbox_envelope;

use crate::cli::{Cli, Command, DeadCommand, EnqueueCommand, MAX_AGE_HOURS, MatchCommand, QueueCommand, SeedArgs};
use crate::output::{Progress, table};

/// The queues the services consume.
pub use tally_jobs::QUEUES;

/// Runs one command; a "not found" error says how to list what exists.
pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    run_command(cli).await.map_err(with_listing_hint)
}

/// `error` with, when a match or competition was not found, the command that
/// lists the existing ones.
fn with_listing_hint(error: anyhow::Error) -> anyhow::Error {
    let hint = error
        .chain()
        .find_map(|cause| match cause.downcast_ref::<tally_store::StoreError>() {
            Some(tally_store::StoreError::MatchNotFound { .. }) => Some("list the matches with `tally match list`"),
            Some(tally_store::StoreError::CompetitionNotFound { .. }) => {
                Some("list the competitions with `tally competitions`")
            }
            _ => None,
        });
    match hint {
        Some(hint) => anyhow::anyhow!("{}; {hint}", crate::error_line(&error)),
        None => error,
    }
}

async fn run_command(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Migrate => migrate(&cli).await,
        Command::Seed(args) => seed(&cli, args).await,
        Command::Competitions => competitions(&cli).await,
        Command::Match(cmd) => match_command(&cli, cmd).await,
        Command::Queue(QueueCommand::Stats { queues }) => queue_stats(&cli, queues).await,
        Command::Queue(QueueCommand::Dead(cmd)) => dead(&cli, cmd).await,
        Command::Queue(QueueCommand::Pause { queue }) => queue_control(&cli, queue, Control::Pause).await,
        Command::Queue(QueueCommand::Resume { queue }) => queue_control(&cli, queue, Control::Resume).await,
        Command::Queue(QueueCommand::Limit { queue, limit }) => {
            queue_control(&cli, queue, Control::Limit(limit.0)).await
        }
        Command::Queue(QueueCommand::Workers { queues }) => workers(&cli, queues).await,
        Command::Queue(QueueCommand::Partitions { queue, count }) => partitions(&cli, queue, *count).await,
        Command::Queue(QueueCommand::Jobs {
            queue,
            state,
            offset,
            limit,
        }) => jobs(&cli, queue, *state, *offset, *limit).await,
        Command::Queue(QueueCommand::Job { queue, id }) => job(&cli, queue, id).await,
        Command::Enqueue(cmd) => enqueue(&cli, cmd).await,
        Command::Leaderboard(args) => {
            let rows = connect_store(&cli)
                .await?
                .leaderboard(args.competition, args.top, args.offset)
                .await?;
            print_leaderboard(&rows, cli.json)
        }
        Command::Standings(args) => {
            let rows = connect_store(&cli).await?.standings(args.competition).await?;
            print_standings(&rows, cli.json)
        }
        Command::Demo(args) => crate::demo::run(&cli, args).await,
        Command::Bench(cmd) => crate::bench::run(&cli, cmd).await,
    }
}

/// The database, from `--database-url` / `DATABASE_URL`.
pub async fn connect_store(cli: &Cli) -> anyhow::Result<Store> {
    let url = cli
        .database_url
        .as_deref()
        .context("DATABASE_URL is not set (or pass --database-url)")?;
    if cli.verbose {
        eprintln!("database: {}", tally_service::redact_url(url));
    }
    Store::connect(url, 4)
        .await
        .with_context(|| format!("cannot connect to {}", tally_service::redact_url(url)))
}

/// The Redis URL from `--redis-url` / `REDIS_URL`; there is deliberately no
/// default (a usage error, exit 2, names the setting).
pub fn redis_url(cli: &Cli) -> anyhow::Result<&str> {
    cli.redis_url.as_deref().ok_or_else(|| {
        crate::UsageError(
            "REDIS_URL is not set (or pass --redis-url): tally does not assume a Redis on 127.0.0.1:6379".into(),
        )
        .into()
    })
}

/// The Redis a command uses, password hidden, for `--verbose` and `--json`.
pub fn shown_redis(cli: &Cli) -> Option<String> {
    cli.redis_url.as_deref().map(tally_service::redact_url)
}

/// The URL schemes the queue client takes.
const REDIS_SCHEMES: [&str; 4] = ["redis://", "rediss://", "redis+cluster://", "rediss+cluster://"];

/// A queue client for `--redis-url` / `REDIS_URL` under the configured prefix.
pub async fn connect_queue(cli: &Cli) -> anyhow::Result<QueueClient> {
    let url = redis_url(cli)?;
    if !REDIS_SCHEMES.iter().any(|s| url.starts_with(s)) {
        return Err(crate::UsageError(format!(
            "REDIS_URL={:?} does not parse: expected a URL starting with {}",
            tally_service::redact_url(url),
            REDIS_SCHEMES.join(" or ")
        ))
        .into());
    }
    if cli.verbose {
        eprintln!(
            "redis: {} (queue prefix {})",
            tally_service::redact_url(url),
            cli.queue_prefix
        );
    }
    QueueClient::connect(url, QueueConfig::with_prefix(&cli.queue_prefix))
        .await
        .with_context(|| format!("cannot reach Redis at {}", tally_service::redact_url(url)))
}

/// `value` (a JSON object) with a `"redis"` key naming the Redis used: an
/// extension of the documented shapes, which keep every key they had.
fn with_redis(cli: &Cli, value: impl serde::Serialize) -> anyhow::Result<serde_json::Value> {
    let mut value = serde_json::to_value(value)?;
    if let (Some(object), Some(shown)) = (value.as_object_mut(), shown_redis(cli)) {
        object.insert("redis".into(), shown.into());
    }
    Ok(value)
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn migrate(cli: &Cli) -> anyhow::Result<()> {
    let applied = connect_store(cli).await?.migrate().await?;
    if cli.json {
        return print_json(&json!({ "applied": applied.iter().map(|m| format!("{m:?}")).collect::<Vec<_>>() }));
    }
    if applied.is_empty() {
        println!("database is up to date");
    }
    for m in &applied {
        println!("applied {m:?}");
    }
    Ok(())
}

/// Seeds through `store` with a progress bar; used by `seed` and `demo`.
pub async fn seed_with_progress(store: &Store, args: &SeedArgs) -> anyhow::Result<tally_store::seed::SeedSummary> {
    let options = SeedOptions {
        users: args.users,
        predictions: args.predictions,
        competitions: args.competitions,
        teams_per_competition: args.teams,
        played_fraction: args.played,
        seed: args.seed,
    };
    let progress = Progress::new();
    Ok(store.seed(&options, &|p| progress.seed(p)).await?)
}

async fn seed(cli: &Cli, args: &SeedArgs) -> anyhow::Result<()> {
    let store = connect_store(cli).await?;
    store.migrate().await?;
    let summary = seed_with_progress(&store, args).await?;
    if cli.json {
        return print_json(&summary);
    }
    println!(
        "seeded {} users, {} competitions, {} teams, {} matches ({} finished), {} predictions in {:.1}s",
        summary.users,
        summary.competitions,
        summary.teams,
        summary.matches,
        summary.finished_matches,
        summary.predictions,
        summary.elapsed_ms as f64 / 1000.0
    );
    Ok(())
}

/// What `match finish`, `postpone` and `cancel` committed with the match:
/// the `ScoreMatch` job, as an outbox row the workers' relay enqueues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The outbox row.
    pub row: i64,
    /// The id the job runs under (`outbox-<row>`).
    pub job_id: String,
}

/// Records a result and its `ScoreMatch` in one transaction: the job is
/// written into the outbox with the result (`tally_store::outbox`), and the
/// workers' relay moves it to Redis. Either both are committed or neither
/// is, and Redis need not be reachable now. Recording the same result again
/// is a no-op for the match and writes the job again.
pub async fn finish_match(store: &Store, id: i64, home: i32, away: i32) -> anyhow::Result<Committed> {
    let job = outbox_envelope(&ScoreMatch { match_id: id }, tally_service::observe::current_trace());
    let outcome = store
        .record_result_with_job(id, home, away, &job)
        .await
        .with_context(|| format!("cannot record {home}-{away} for match {id}"))?;
    committed(outcome.job_row)
}

/// Changes a match's status (postponed, cancelled) and writes its
/// `ScoreMatch` (which voids the predictions) in the same transaction.
pub async fn change_status(store: &Store, id: i64, status: MatchStatus) -> anyhow::Result<Committed> {
    let job = outbox_envelope(&ScoreMatch { match_id: id }, tally_service::observe::current_trace());
    let outcome = store
        .set_match_status_with_job(id, status, &job)
        .await
        .with_context(|| format!("cannot mark match {id} {status}"))?;
    committed(outcome.job_row)
}

fn committed(row: Option<i64>) -> anyhow::Result<Committed> {
    let row = row.context("the store wrote no outbox row")?;
    Ok(Committed {
        row,
        job_id: tally_store::outbox::job_id(row),
    })
}

async fn enqueue_scoring(producer: &Producer, id: i64) -> anyhow::Result<tally_queue::Enqueued> {
    let options = EnqueueOptions {
        trace: tally_service::observe::current_trace(),
        ..EnqueueOptions::default()
    };
    producer
        .enqueue_with(&ScoreMatch { match_id: id }, options)
        .await
        .with_context(|| format!("ScoreMatch for match {id} could not be enqueued"))
}

/// How many running workers consume `queue`, when Redis is configured and
/// answers within 2 s: each worker's scheduler subscribes to the queue's
/// due-time channel, so its subscriber count is the live workers. `None`
/// when unknown (no REDIS_URL, Redis away, or a cluster, where the count is
/// per node).
async fn live_consumers(cli: &Cli, queue: &str) -> Option<i64> {
    let url = cli.redis_url.as_deref()?;
    if url.contains("+cluster://") {
        return None;
    }
    let channel = tally_queue::QueueKeys::new(&cli.queue_prefix, queue).due_channel();
    let ask = async {
        let mut conn = redis::Client::open(url)
            .ok()?
            .get_multiplexed_async_connection()
            .await
            .ok()?;
        let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(&channel)
            .query_async(&mut conn)
            .await
            .ok()?;
        counts.first().map(|(_, n)| *n)
    };
    tokio::time::timeout(Duration::from_secs(2), ask).await.ok().flatten()
}

/// `tally competitions`: ids, names and how many matches each has.
async fn competitions(cli: &Cli) -> anyhow::Result<()> {
    let store = connect_store(cli).await?;
    let rows = store
        .pool()
        .get()
        .await?
        .query(
            "SELECT c.id, c.name,
                    count(m.id) AS matches,
                    count(m.id) FILTER (WHERE m.status = 'scheduled') AS scheduled
             FROM competitions c LEFT JOIN matches m ON m.competition_id = c.id
             GROUP BY c.id, c.name ORDER BY c.id",
            &[],
        )
        .await?;
    let list: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            json!({
                "id": r.get::<_, i64>(0),
                "name": r.get::<_, String>(1),
                "matches": r.get::<_, i64>(2),
                "scheduled": r.get::<_, i64>(3),
            })
        })
        .collect();
    print_listing(
        cli,
        &list,
        "no competitions (fill a database with `tally seed`)",
        &[">id", "name", ">matches", ">scheduled"],
        |c| {
            ["id", "name", "matches", "scheduled"]
                .iter()
                .map(|k| c[*k].as_str().map_or_else(|| c[*k].to_string(), str::to_owned))
                .collect()
        },
    )
}

/// A list command's output: the JSON array with `--json`, else a table (or
/// `empty` when there is nothing to list).
fn print_listing(
    cli: &Cli,
    list: &[serde_json::Value],
    empty: &str,
    headers: &[&str],
    row: impl Fn(&serde_json::Value) -> Vec<String>,
) -> anyhow::Result<()> {
    if cli.json {
        return print_json(&list);
    }
    if list.is_empty() {
        println!("{empty}");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list.iter().map(row).collect();
    print!("{}", table(headers, &rows));
    Ok(())
}

/// `tally match list`: matches by kickoff, filtered by status and competition.
async fn match_list(cli: &Cli, args: &crate::cli::MatchListArgs) -> anyhow::Result<()> {
    let store = connect_store(cli).await?;
    let rows = store
        .pool()
        .get()
        .await?
        .query(
            "SELECT m.id, m.competition_id, h.name, a.name, m.kickoff_at, m.status, m.home_score, m.away_score
             FROM matches m
             JOIN teams h ON h.id = m.home_team_id
             JOIN teams a ON a.id = m.away_team_id
             WHERE ($1::text IS NULL OR m.status = $1)
               AND ($2::bigint IS NULL OR m.competition_id = $2)
             ORDER BY m.kickoff_at, m.id
             LIMIT $3",
            &[&args.status, &args.competition, &args.limit.max(0)],
        )
        .await?;
    let list: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            json!({
                "id": r.get::<_, i64>(0),
                "competitionId": r.get::<_, i64>(1),
                "home": r.get::<_, String>(2),
                "away": r.get::<_, String>(3),
                "kickoffAt": r.get::<_, chrono::DateTime<chrono::Utc>>(4).to_rfc3339(),
                "status": r.get::<_, String>(5),
                "homeScore": r.get::<_, Option<i32>>(6),
                "awayScore": r.get::<_, Option<i32>>(7),
            })
        })
        .collect();
    print_listing(
        cli,
        &list,
        "no matches (competitions: `tally competitions`)",
        &[">id", ">competition", "kickoff", "status", "match", ">score"],
        |m| {
            let score = match (m["homeScore"].as_i64(), m["awayScore"].as_i64()) {
                (Some(h), Some(a)) => format!("{h}-{a}"),
                _ => "-".into(),
            };
            vec![
                m["id"].to_string(),
                m["competitionId"].to_string(),
                m["kickoffAt"].as_str().unwrap_or_default().chars().take(16).collect(),
                m["status"].as_str().unwrap_or_default().to_owned(),
                format!(
                    "{} v {}",
                    m["home"].as_str().unwrap_or_default(),
                    m["away"].as_str().unwrap_or_default()
                ),
                score,
            ]
        },
    )
}

async fn match_command(cli: &Cli, cmd: &MatchCommand) -> anyhow::Result<()> {
    if let MatchCommand::List(args) = cmd {
        return match_list(cli, args).await;
    }
    let store = connect_store(cli).await?;
    let (id, what, job) = match *cmd {
        MatchCommand::Finish { id, home, away } => (
            id,
            format!("finished {home}-{away}"),
            finish_match(&store, id, home, away).await?,
        ),
        MatchCommand::Postpone { id } => (
            id,
            "postponed".to_owned(),
            change_status(&store, id, MatchStatus::Postponed).await?,
        ),
        MatchCommand::Cancel { id } => (
            id,
            "cancelled".to_owned(),
            change_status(&store, id, MatchStatus::Cancelled).await?,
        ),
        MatchCommand::List(ref args) => return match_list(cli, args).await,
    };
    // The job only moves on with a scoring-worker running (its relay takes
    // the job out of the outbox): say so when none listens on the queue.
    if live_consumers(cli, ScoreMatch::QUEUE).await == Some(0) {
        eprintln!(
            "warning: no scoring-worker is running on {} (queue {}): the job waits until one starts",
            shown_redis(cli).unwrap_or_default(),
            ScoreMatch::QUEUE
        );
    }
    if cli.json {
        // `deduplicated` stays for scripts written against the direct
        // enqueue: an outbox row is always a job of its own.
        return print_json(&json!({
            "matchId": id,
            "status": what,
            "jobId": job.job_id,
            "deduplicated": false,
            "outboxRow": job.row,
            "database": cli.database_url.as_deref().map(tally_service::redact_url),
        }));
    }
    println!(
        "match {id} {what}; ScoreMatch committed with it as job {} (outbox row {}; the workers' relay enqueues it)",
        job.job_id, job.row
    );
    Ok(())
}

/// A change to a queue's controls.
#[derive(Debug, Clone, Copy)]
enum Control {
    Pause,
    Resume,
    Limit(Option<u64>),
}

/// How a queue's controls read in a table.
fn control_text(paused: bool, limit: Option<u64>) -> String {
    match (paused, limit) {
        (false, None) => "running".into(),
        (true, None) => "paused".into(),
        (false, Some(n)) => format!("limit {n}"),
        (true, Some(n)) => format!("paused, limit {n}"),
    }
}

async fn queue_control(cli: &Cli, queue: &str, change: Control) -> anyhow::Result<()> {
    let admin = QueueAdmin::new(connect_queue(cli).await?);
    let control = match change {
        Control::Pause => admin.pause(queue).await?,
        Control::Resume => admin.resume(queue).await?,
        Control::Limit(limit) => admin.set_limit(queue, limit).await?,
    };
    if cli.json {
        let mut out = with_redis(cli, serde_json::to_value(control)?)?;
        out["queue"] = queue.into();
        return print_json(&out);
    }
    println!("{queue}: {}", control_text(control.paused, control.limit));
    if matches!(change, Control::Pause) {
        println!("workers stop claiming at their next claim; jobs already running finish");
    }
    Ok(())
}

async fn partitions(cli: &Cli, queue: &str, count: Option<u32>) -> anyhow::Result<()> {
    let client = connect_queue(cli).await?;
    let before = client.partitions(queue).await?;
    let refresh = client.config().partition_refresh;
    let now = match count {
        Some(count) => QueueAdmin::new(client).set_partitions(queue, count).await?,
        None => before,
    };
    let slots: Vec<u16> = (0..now)
        .map(|p| tally_queue::QueueKeys::partition(&cli.queue_prefix, queue, p).slot())
        .collect();
    if cli.json {
        let out = with_redis(
            cli,
            json!({ "queue": queue, "partitions": now, "before": before, "slots": slots }),
        )?;
        return print_json(&out);
    }
    if now == before {
        println!("{queue}: {now} partition{}", if now == 1 { "" } else { "s" });
    } else {
        println!("{queue}: {before} -> {now} partitions");
        println!("producers route to the new partitions, and workers serve them, within {refresh:.0?}");
    }
    if now > 1 {
        // Where each partition lives on a Redis Cluster: two on one slot
        // range share a master (`CLUSTER SHARDS` tells which serves which).
        for (p, slot) in slots.iter().enumerate() {
            println!(
                "  partition {p}: hash tag {{{}}}, cluster slot {slot}",
                tally_queue::QueueKeys::partition(&cli.queue_prefix, queue, p as u32).hash_tag()
            );
        }
    }
    Ok(())
}

/// A time in ms since the epoch as an age or a wait from now ("3.2s ago",
/// "in 12.0s").
fn relative(now: u64, at: u64) -> String {
    if at >= now {
        format!("in {:.1}s", (at - now) as f64 / 1000.0)
    } else {
        format!("{:.1}s ago", (now - at) as f64 / 1000.0)
    }
}

async fn jobs(cli: &Cli, queue: &str, state: tally_queue::JobState, offset: u64, limit: u64) -> anyhow::Result<()> {
    let admin = QueueAdmin::new(connect_queue(cli).await?);
    let page = admin.jobs(queue, state, offset, limit).await?;
    if cli.json {
        let mut out = with_redis(cli, serde_json::to_value(&page)?)?;
        out["queue"] = queue.into();
        return print_json(&out);
    }
    if page.jobs.is_empty() {
        println!("{queue}: no {state} jobs at offset {offset} ({} in all)", page.total);
        return Ok(());
    }
    let now = tally_queue::now_ms();
    let rows: Vec<Vec<String>> = page
        .jobs
        .iter()
        .map(|j| {
            vec![
                j.id.clone(),
                j.kind.clone().unwrap_or_else(|| "?".into()),
                j.priority
                    .map_or_else(|| "-".into(), |p| format!("{p:?}").to_lowercase()),
                j.attempts.to_string(),
                j.errors.to_string(),
                j.crashes.to_string(),
                j.created_at_ms.map_or_else(|| "-".into(), |at| relative(now, at)),
                j.at_ms.map_or_else(|| "-".into(), |at| relative(now, at)),
                j.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let at = match state {
        tally_queue::JobState::Ready => "when",
        tally_queue::JobState::Scheduled => "due",
        tally_queue::JobState::InFlight => "lease ends",
        tally_queue::JobState::Dead => "died",
    };
    print!(
        "{}",
        table(
            &[
                "id",
                "kind",
                "priority",
                ">attempts",
                ">errors",
                ">crashes",
                "created",
                at,
                "error"
            ],
            &rows
        )
    );
    let last = offset + page.jobs.len() as u64;
    println!("{}–{} of {} {state} jobs on {queue}", offset + 1, last, page.total);
    Ok(())
}

async fn job(cli: &Cli, queue: &str, id: &str) -> anyhow::Result<()> {
    let admin = QueueAdmin::new(connect_queue(cli).await?);
    let Some(job) = admin.job(queue, id).await? else {
        anyhow::bail!(
            "no job {id:?} on queue {queue}: it finished, or never existed (finished jobs leave nothing behind); `tally queue jobs {queue} --state …` lists what is there"
        );
    };
    if cli.json {
        let mut out = with_redis(cli, serde_json::to_value(&job)?)?;
        out["queue"] = queue.into();
        return print_json(&out);
    }
    let s = &job.summary;
    let now = tally_queue::now_ms();
    println!("job       {}", s.id);
    println!("queue     {queue}");
    println!("kind      {}", s.kind.as_deref().unwrap_or("? (unreadable envelope)"));
    println!("state     {}", s.state);
    if let Some(p) = s.priority {
        println!("priority  {}", format!("{p:?}").to_lowercase());
    }
    println!("attempts  {} ({} errors, {} crashes)", s.attempts, s.errors, s.crashes);
    if let Some(at) = s.created_at_ms {
        println!("created   {}", relative(now, at));
    }
    if let Some(at) = s.at_ms {
        println!(
            "{:<9} {}",
            match s.state {
                tally_queue::JobState::Scheduled => "due",
                tally_queue::JobState::InFlight => "lease",
                _ => "died",
            },
            relative(now, at)
        );
    }
    if let Some(e) = &s.error {
        println!("error     {e}");
    }
    if let Some(t) = &job.trace_id {
        println!("trace     {t}");
    }
    if let Some(d) = &job.dedup_key {
        println!("dedup key {d}");
    }
    if let Some(envelope) = &job.envelope {
        let pretty = serde_json::from_str::<serde_json::Value>(envelope)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| envelope.clone());
        println!("envelope\n{pretty}");
    }
    Ok(())
}

async fn workers(cli: &Cli, queues: &[String]) -> anyhow::Result<()> {
    let admin = QueueAdmin::new(connect_queue(cli).await?);
    let names: Vec<String> = if queues.is_empty() {
        QUEUES.map(String::from).to_vec()
    } else {
        queues.to_vec()
    };
    let mut all = Vec::new();
    for name in &names {
        all.extend(admin.workers(name).await?);
    }
    if cli.json {
        return print_json(&with_redis(cli, json!({ "workers": all }))?);
    }
    if all.is_empty() {
        println!("no live worker processes on {}", names.join(", "));
        return Ok(());
    }
    let now = tally_queue::now_ms();
    let age = |ms: u64| format!("{:.1}s", now.saturating_sub(ms) as f64 / 1000.0);
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|w| {
            vec![
                w.queue.clone(),
                w.host.clone(),
                w.pid.to_string(),
                w.program.clone(),
                w.version.clone(),
                w.concurrency.to_string(),
                w.in_flight.to_string(),
                age(w.started_at_ms),
                age(w.heartbeat_at_ms),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "queue",
                "host",
                ">pid",
                "program",
                "version",
                ">concurrency",
                ">in flight",
                ">up",
                ">last beat"
            ],
            &rows
        )
    );
    Ok(())
}

async fn queue_stats(cli: &Cli, queues: &[String]) -> anyhow::Result<()> {
    let admin = QueueAdmin::new(connect_queue(cli).await?);
    let names: Vec<String> = if queues.is_empty() {
        QUEUES.map(String::from).to_vec()
    } else {
        queues.to_vec()
    };
    let mut all = serde_json::Map::new();
    let mut rows = Vec::new();
    for name in &names {
        let s = admin.stats(name).await?;
        rows.push(vec![
            name.clone(),
            s.ready_by_priority.high.to_string(),
            s.ready_by_priority.normal.to_string(),
            s.ready_by_priority.low.to_string(),
            s.scheduled.to_string(),
            s.in_flight.to_string(),
            s.dead.to_string(),
            s.oldest_ready_age_ms
                .map_or_else(|| "-".into(), |ms| format!("{:.1}s", ms as f64 / 1000.0)),
            s.counters.completed.to_string(),
            s.counters.retried.to_string(),
            if s.partitions > 1 {
                format!("{}, {} partitions", control_text(s.paused, s.limit), s.partitions)
            } else {
                control_text(s.paused, s.limit)
            },
        ]);
        all.insert(name.clone(), serde_json::to_value(&s)?);
    }
    // The outbox (jobs committed in PostgreSQL, not yet in Redis), when the
    // database is known; a queue view without it is still useful.
    let outbox = match cli.database_url.as_deref() {
        None => None,
        Some(_) => match connect_store(cli).await {
            Ok(store) => match store.outbox_backlog().await {
                Ok(backlog) => Some(backlog),
                Err(e) => {
                    eprintln!("warning: cannot read the outbox backlog: {e:#}");
                    None
                }
            },
            Err(e) => {
                eprintln!("warning: cannot read the outbox backlog: {e:#}");
                None
            }
        },
    };
    if cli.json {
        let mut out = with_redis(cli, json!({ "queues": all }))?;
        if let Some(backlog) = outbox {
            out["outbox"] = serde_json::to_value(backlog)?;
            out["database"] = cli.database_url.as_deref().map(tally_service::redact_url).into();
        }
        return print_json(&out);
    }
    print!(
        "{}",
        table(
            &[
                "queue",
                ">high",
                ">normal",
                ">low",
                ">scheduled",
                ">in flight",
                ">dead",
                ">oldest",
                ">completed",
                ">retried",
                "control"
            ],
            &rows
        )
    );
    if let Some(b) = outbox {
        println!(
            "\noutbox: {} job(s) committed, not yet relayed{}; {} rejected{}",
            b.pending,
            b.oldest_pending_age_ms
                .map_or_else(String::new, |ms| format!(" (oldest {:.1}s)", ms as f64 / 1000.0)),
            b.rejected,
            if b.rejected > 0 {
                " (see job_outbox.rejection)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

async fn dead(cli: &Cli, cmd: &DeadCommand) -> anyhow::Result<()> {
    let admin = QueueAdmin::new(connect_queue(cli).await?);
    match cmd {
        DeadCommand::List {
            queue,
            limit,
            envelopes,
        } => {
            // Every queue unless one is named: a dead job must not hide on
            // the queue nobody asked about.
            let queues: Vec<&str> = match queue {
                Some(q) => vec![q.as_str()],
                None => QUEUES.to_vec(),
            };
            let mut listed = Vec::new();
            for q in &queues {
                for job in admin.dead_list(q, 0, *limit).await? {
                    listed.push((*q, job));
                }
            }
            if cli.json {
                // Each job as before, plus the queue it is dead on.
                let mut out = Vec::with_capacity(listed.len());
                for (q, job) in &listed {
                    let mut value = serde_json::to_value(job)?;
                    if let Some(object) = value.as_object_mut() {
                        object.insert("queue".into(), (*q).into());
                        object.insert("jobId".into(), job.id.clone().into());
                        // With --envelopes, the envelope as JSON too (the
                        // raw `envelope` string stays for existing readers;
                        // null when it does not parse).
                        if *envelopes {
                            let parsed = job
                                .envelope
                                .as_deref()
                                .and_then(|e| serde_json::from_str::<serde_json::Value>(e).ok());
                            object.insert("envelopeJson".into(), parsed.unwrap_or_default());
                        }
                    }
                    out.push(value);
                }
                return print_json(&out);
            }
            if listed.is_empty() {
                println!("no dead jobs in {}", queues.join(" or "));
                return Ok(());
            }
            let jobs: Vec<_> = listed.iter().map(|(_, j)| j).collect();
            let rows: Vec<Vec<String>> = listed
                .iter()
                .map(|(q, j)| {
                    let died = chrono::DateTime::from_timestamp_millis(j.died_at_ms as i64)
                        .map_or_else(String::new, |t| t.format("%Y-%m-%d %H:%M:%S").to_string());
                    vec![
                        (*q).to_owned(),
                        j.id.clone(),
                        j.kind.clone().unwrap_or_else(|| "?".into()),
                        j.attempts.to_string(),
                        died,
                        j.error.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(&["queue", "id", "kind", ">attempts", "died", "last error"], &rows)
            );
            if *envelopes {
                for j in &jobs {
                    println!("{}: {}", j.id, j.envelope.as_deref().unwrap_or("(unreadable)"));
                }
            }
        }
        DeadCommand::Retry { queue, ids, all } => {
            let (retried, skipped) = if *all {
                retry_all(&admin, queue).await?
            } else {
                anyhow::ensure!(!ids.is_empty(), "name the job ids, or pass --all");
                ensure_dead(&admin, queue, ids).await?;
                let retried = admin.dead_retry(queue, DeadSelector::Ids(ids.clone())).await?;
                (retried, (ids.len() as u64).saturating_sub(retried))
            };
            if cli.json {
                return print_json(&with_redis(
                    cli,
                    json!({ "queue": queue, "retried": retried, "skipped": skipped }),
                )?);
            }
            print!("{retried} dead job(s) of {queue} put back on the ready list");
            if skipped > 0 {
                print!(
                    "; {skipped} skipped (not dead, or no stored envelope to retry: see `tally queue dead list --envelopes`)"
                );
            }
            println!();
        }
        DeadCommand::Purge {
            queue,
            ids,
            all,
            older_than_hours,
        } => {
            let which = selector(ids, *all, *older_than_hours)?;
            if let DeadSelector::Ids(ids) = &which {
                ensure_dead(&admin, queue, ids).await?;
            }
            let n = admin.dead_purge(queue, which).await?;
            if cli.json {
                return print_json(&with_redis(cli, json!({ "queue": queue, "purged": n }))?);
            }
            println!("{n} dead job(s) of {queue} purged");
        }
    }
    Ok(())
}

/// Fails, naming them, when any of `ids` is not a dead job of `queue`, so
/// a mistyped id is an error rather than "0 put back", and nothing is
/// touched.
async fn ensure_dead(admin: &QueueAdmin, queue: &str, ids: &[String]) -> anyhow::Result<()> {
    let mut unknown = Vec::new();
    for id in ids {
        if admin.dead_get(queue, id).await?.is_none() {
            unknown.push(id.as_str());
        }
    }
    anyhow::ensure!(
        unknown.is_empty(),
        "no dead job {} on queue {queue}; nothing changed (see `tally queue dead list`)",
        unknown.join(", ")
    );
    Ok(())
}

/// Dead jobs read, and retried, per round trip by [`retry_all`].
const RETRY_PAGE: usize = 1000;

/// Retries every dead job of `queue` that has a stored envelope, oldest
/// first, and counts the others as skipped: `(retried, skipped)`.
///
/// The engine's `DeadSelector::All` retries the oldest page of the dead set
/// again and again and stops at the first page in which nothing could be
/// retried, so a thousand envelope-less jobs at the old end would hide every
/// job behind them. Here the whole set is listed first (a job dying
/// meanwhile shifts the pages, hence the de-duplication), then the jobs with
/// an envelope are retried by id.
async fn retry_all(admin: &QueueAdmin, queue: &str) -> anyhow::Result<(u64, u64)> {
    let mut seen = HashSet::new();
    let mut retryable = Vec::new();
    let mut skipped = 0_u64;
    let mut offset = 0;
    loop {
        let page = admin.dead_list(queue, offset, RETRY_PAGE).await?;
        offset += RETRY_PAGE;
        if page.is_empty() && offset >= admin.stats(queue).await?.dead as usize {
            break;
        }
        for job in page {
            if !seen.insert(job.id.clone()) {
                continue;
            }
            if job.envelope.is_some() {
                retryable.push(job.id);
            } else {
                skipped += 1;
            }
        }
    }
    // The list is newest first; retry in the order the jobs died.
    retryable.reverse();
    let mut retried = 0;
    for chunk in retryable.chunks(RETRY_PAGE) {
        let n = admin.dead_retry(queue, DeadSelector::Ids(chunk.to_vec())).await?;
        retried += n;
        // Gone since it was listed (retried or purged by someone else).
        skipped += chunk.len() as u64 - n;
    }
    Ok((retried, skipped))
}

fn selector(ids: &[String], all: bool, older_than_hours: Option<u64>) -> anyhow::Result<DeadSelector> {
    match (ids.is_empty(), all, older_than_hours) {
        (_, true, _) => Ok(DeadSelector::All),
        (_, _, Some(h)) => {
            // The parser refuses larger values; a `Cli` built in code is not parsed.
            anyhow::ensure!(h <= MAX_AGE_HOURS, "--older-than-hours: at most {MAX_AGE_HOURS} hours");
            Ok(DeadSelector::OlderThan(Duration::from_secs(h * 3600)))
        }
        (false, false, None) => Ok(DeadSelector::Ids(ids.to_vec())),
        (true, false, None) => anyhow::bail!("name the job ids, or pass --all"),
    }
}

async fn enqueue(cli: &Cli, cmd: &EnqueueCommand) -> anyhow::Result<()> {
    let producer = Producer::new(connect_queue(cli).await?);
    let job = match cmd {
        EnqueueCommand::ScoreMatch { id } => {
            // With a database at hand, a job for a match that does not
            // exist (bound for the dead set) is refused before it is sent.
            if cli.database_url.is_some() {
                let store = connect_store(cli).await?;
                let found = store
                    .pool()
                    .get()
                    .await?
                    .query_opt("SELECT 1 FROM matches WHERE id = $1", &[id])
                    .await?;
                anyhow::ensure!(
                    found.is_some(),
                    "no match {id} in the database; nothing enqueued (list the matches with `tally match list`)"
                );
            }
            enqueue_scoring(&producer, *id).await?
        }
        EnqueueCommand::RefreshViews { scope } => {
            let scope = RefreshScope::parse(scope)
                .with_context(|| format!("invalid scope {scope:?}: expected all, leaderboard or standings"))?;
            producer.enqueue(&RefreshViews { scope }).await?
        }
    };
    if cli.json {
        // `id` as before, and `jobId` as `match finish` names it.
        let mut out = with_redis(cli, &job)?;
        out["jobId"] = job.id.clone().into();
        return print_json(&out);
    }
    println!(
        "enqueued job {}{}",
        job.id,
        if job.deduplicated {
            " (coalesced into a waiting job)"
        } else {
            ""
        }
    );
    Ok(())
}

/// Prints leaderboard rows as a table or as a JSON list.
pub fn print_leaderboard(rows: &[tally_store::LeaderboardRow], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&rows);
    }
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.rank.to_string(),
                r.username.clone(),
                r.points.to_string(),
                r.exact_scores.to_string(),
                r.correct_outcomes.to_string(),
                r.predictions_scored.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&[">rank", "user", ">points", ">exact", ">outcome", ">scored"], &rows)
    );
    Ok(())
}

/// Prints a league table or its JSON.
pub fn print_standings(rows: &[tally_store::StandingRow], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&rows);
    }
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.position.to_string(),
                r.team.clone(),
                r.played.to_string(),
                r.won.to_string(),
                r.drawn.to_string(),
                r.lost.to_string(),
                format!("{}:{}", r.goals_for, r.goals_against),
                format!("{:+}", r.goal_difference),
                r.points.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&[">#", "team", ">P", ">W", ">D", ">L", ">goals", ">GD", ">pts"], &rows)
    );
    Ok(())
}
