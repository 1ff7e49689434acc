//! The command-line arguments. Connection settings come from the same
//! environment variables the services read (`REDIS_URL`, `DATABASE_URL`,
//! `TALLY_QUEUE_PREFIX`), or from flags.

use clap::{Args, Parser, Subcommand};

/// tally: the football prediction pipeline's command line.
#[derive(Debug, Parser)]
#[command(name = "tally", version, about, long_about = None)]
pub struct Cli {
    /// PostgreSQL URL.
    #[arg(long, global = true, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Redis URL of the queues. Required by every command that reads or
    /// writes the queues (enqueue, queue stats, queue dead …): there is no
    /// default, so a forgotten setting never reads or writes an unrelated
    /// Redis on 127.0.0.1:6379.
    #[arg(long, global = true, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Key prefix of every queue key.
    #[arg(
        long,
        global = true,
        env = "TALLY_QUEUE_PREFIX",
        default_value = "tally",
        hide_env_values = true
    )]
    pub queue_prefix: String,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Say on stderr which Redis and database (passwords hidden) a command uses.
    #[arg(long, short = 'v', global = true)]
    pub verbose: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Parses a match or competition id. Ids start at 1 (the job schemas say
/// `minimum: 1`, and the database's identity columns agree), so 0 is a usage
/// error here rather than a job bound for the dead set.
fn id(value: &str) -> Result<i64, String> {
    let id: i64 = value.parse().map_err(|e| format!("{e}"))?;
    if id < 1 {
        return Err("ids start at 1".into());
    }
    Ok(id)
}

/// Parses a number of goals: a whole number from 0 to the store's maximum,
/// so `-1` is a usage error naming what a score is (not "invalid score -1-2").
fn score(value: &str) -> Result<i32, String> {
    let max = tally_store::scoring::MAX_SCORE;
    match value.parse::<i32>() {
        Ok(goals) if (0..=max).contains(&goals) => Ok(goals),
        _ => Err(format!("a score is a whole number from 0 to {max}")),
    }
}

/// The largest `--older-than-hours`: the engine takes the age in
/// milliseconds as a `u64`, and beyond this the multiplication would
/// overflow (or, in a release build, wrap around to a short age and purge
/// far more than asked).
pub const MAX_AGE_HOURS: u64 = u64::MAX / 3_600_000;

/// Parses `--older-than-hours`, refusing ages that do not fit.
fn age_hours(value: &str) -> Result<u64, String> {
    let hours: u64 = value.parse().map_err(|e| format!("{e}"))?;
    if hours > MAX_AGE_HOURS {
        return Err(format!("at most {MAX_AGE_HOURS} hours"));
    }
    Ok(hours)
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending database migrations.
    Migrate,
    /// Fill an empty database with deterministic demo data.
    Seed(SeedArgs),
    /// Record match results and status changes.
    #[command(subcommand)]
    Match(MatchCommand),
    /// Inspect and repair queues.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Enqueue a job by hand.
    #[command(subcommand)]
    Enqueue(EnqueueCommand),
    /// List the competitions (ids for --competition).
    Competitions,
    /// Print a leaderboard (overall unless --competition).
    Leaderboard(LeaderboardArgs),
    /// Print a competition's league table.
    Standings(StandingsArgs),
    /// Play a whole matchday through the real services (needs REDIS_URL and DATABASE_URL).
    Demo(DemoArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

impl Command {
    /// The command's name, for spans and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Migrate => "migrate",
            Command::Seed(_) => "seed",
            Command::Match(MatchCommand::Finish { .. }) => "match finish",
            Command::Match(MatchCommand::Postpone { .. }) => "match postpone",
            Command::Match(MatchCommand::Cancel { .. }) => "match cancel",
            Command::Match(MatchCommand::List(_)) => "match list",
            Command::Competitions => "competitions",
            Command::Queue(_) => "queue",
            Command::Enqueue(_) => "enqueue",
            Command::Leaderboard(_) => "leaderboard",
            Command::Standings(_) => "standings",
            Command::Demo(_) => "demo",
            Command::Bench(_) => "bench",
        }
    }
}

/// Sizes of the generated data.
#[derive(Debug, Clone, Args)]
pub struct SeedArgs {
    /// Users.
    #[arg(long, default_value_t = 1_000)]
    pub users: u32,
    /// Predictions in total.
    #[arg(long, default_value_t = 10_000)]
    pub predictions: u64,
    /// Competitions.
    #[arg(long, default_value_t = 2)]
    pub competitions: u32,
    /// Teams per competition.
    #[arg(long, default_value_t = 10)]
    pub teams: u32,
    /// Fraction of each season already played (0 to 1).
    #[arg(long, default_value_t = 0.5)]
    pub played: f64,
    /// Random seed: the same seed gives the same data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// `tally match list`
#[derive(Debug, Clone, Args)]
pub struct MatchListArgs {
    /// Only matches with this status.
    #[arg(long, value_parser = ["scheduled", "live", "finished", "postponed", "cancelled"])]
    pub status: Option<String>,
    /// Only this competition's matches (ids: `tally competitions`).
    #[arg(long, value_parser = id)]
    pub competition: Option<i64>,
    /// At most this many, by kickoff (earliest first).
    #[arg(long, default_value_t = 20)]
    pub limit: i64,
}

/// `tally match …`
#[derive(Debug, Subcommand)]
pub enum MatchCommand {
    /// List matches (ids for finish, postpone, cancel), filtered by status and competition.
    List(MatchListArgs),
    /// Record a final score and its ScoreMatch job, in one transaction (the job
    /// goes through the outbox: the workers' relay enqueues it).
    #[command(allow_negative_numbers = true)]
    Finish {
        /// Match id.
        #[arg(value_parser = id)]
        id: i64,
        /// Home goals.
        #[arg(value_parser = score)]
        home: i32,
        /// Away goals.
        #[arg(value_parser = score)]
        away: i32,
    },
    /// Mark a match postponed and commit its ScoreMatch (which voids the predictions) with it.
    Postpone {
        /// Match id.
        #[arg(value_parser = id)]
        id: i64,
    },
    /// Mark a match cancelled and commit its ScoreMatch (which voids the predictions) with it.
    Cancel {
        /// Match id.
        #[arg(value_parser = id)]
        id: i64,
    },
}

/// `tally queue …`
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Ready, scheduled, in-flight and dead jobs, and counters, per queue (and the
    /// outbox backlog when DATABASE_URL is set).
    Stats {
        /// Queues to show (default: scoring and stats).
        #[arg(long = "queue", value_parser = crate::commands::QUEUES)]
        queues: Vec<String>,
    },
    /// The dead-letter set.
    #[command(subcommand)]
    Dead(DeadCommand),
    /// Stop workers from claiming jobs of a queue (producers keep enqueuing,
    /// running jobs finish); kept in Redis until `tally queue resume`.
    Pause {
        /// Queue.
        #[arg(value_parser = crate::commands::QUEUES)]
        queue: String,
    },
    /// Let workers claim from a paused queue again.
    Resume {
        /// Queue.
        #[arg(value_parser = crate::commands::QUEUES)]
        queue: String,
    },
    /// Cap the jobs of a queue in flight across every worker process, or
    /// lift the cap with `none`.
    Limit {
        /// Queue.
        #[arg(value_parser = crate::commands::QUEUES)]
        queue: String,
        /// Most jobs in flight (at least 1), or `none`.
        #[arg(value_parser = limit_value)]
        limit: LimitValue,
    },
    /// Show a queue's partition count, or grow it: each partition is a hash
    /// slot of its own, so on a Redis Cluster one busy queue spreads over
    /// several masters. Partitions can be added, never removed.
    Partitions {
        /// Queue.
        #[arg(value_parser = crate::commands::QUEUES)]
        queue: String,
        /// The new count (1 to 64, not below the current one); omit to show it.
        #[arg(value_parser = clap::value_parser!(u32).range(1..=i64::from(tally_queue::MAX_PARTITIONS)))]
        count: Option<u32>,
    },
    /// Jobs of a queue in one state, a page at a time (ready ones in claim
    /// order, scheduled ones by due time, in-flight ones by lease expiry,
    /// dead ones newest first).
    Jobs {
        /// Queue.
        #[arg(value_parser = crate::commands::QUEUES)]
        queue: String,
        /// ready, scheduled, inFlight or dead.
        #[arg(long, default_value = "ready", value_parser = job_state)]
        state: tally_queue::JobState,
        /// Skip this many.
        #[arg(long, default_value_t = 0)]
        offset: u64,
        /// At most this many (up to 500).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=500))]
        limit: u64,
    },
    /// One job in full: state, attempts, errors, crashes, trace id, envelope.
    Job {
        /// Queue.
        #[arg(value_parser = crate::commands::QUEUES)]
        queue: String,
        /// Job id.
        id: String,
    },
    /// Live worker processes: host, pid, concurrency, jobs held, last heartbeat.
    Workers {
        /// Queues to show (default: scoring and stats).
        #[arg(long = "queue", value_parser = crate::commands::QUEUES)]
        queues: Vec<String>,
    },
}

fn job_state(s: &str) -> Result<tally_queue::JobState, String> {
    s.parse().map_err(|e: tally_queue::QueueError| e.to_string())
}

/// The value of `tally queue limit`: a number of jobs, or no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitValue(pub Option<u64>);

fn limit_value(s: &str) -> Result<LimitValue, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(LimitValue(None));
    }
    match s.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(LimitValue(Some(n))),
        _ => Err(format!(
            "{s:?} is not a limit: give a whole number of jobs (at least 1), or `none` to lift the limit"
        )),
    }
}

/// `tally queue dead …`
#[derive(Debug, Subcommand)]
pub enum DeadCommand {
    /// List dead jobs with their last error.
    List {
        /// Queue (default: every queue).
        #[arg(long, value_parser = crate::commands::QUEUES)]
        queue: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Include each job's envelope.
        #[arg(long)]
        envelopes: bool,
    },
    /// Put dead jobs back on their ready list with fresh attempts.
    Retry {
        /// Queue.
        #[arg(long, default_value = "stats", value_parser = crate::commands::QUEUES)]
        queue: String,
        /// Job ids (or --all).
        ids: Vec<String>,
        /// Every dead job of the queue.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
    /// Delete dead jobs.
    Purge {
        /// Queue.
        #[arg(long, default_value = "stats", value_parser = crate::commands::QUEUES)]
        queue: String,
        /// Job ids (or --all / --older-than).
        ids: Vec<String>,
        /// Every dead job of the queue.
        #[arg(long, conflicts_with_all = ["ids", "older_than_hours"])]
        all: bool,
        /// Dead jobs that died more than this many hours ago.
        #[arg(long = "older-than-hours", value_name = "HOURS", conflicts_with = "ids", value_parser = age_hours)]
        older_than_hours: Option<u64>,
    },
}

/// `tally enqueue …`
#[derive(Debug, Subcommand)]
pub enum EnqueueCommand {
    /// Enqueue ScoreMatch for a match.
    ScoreMatch {
        /// Match id.
        #[arg(value_parser = id)]
        id: i64,
    },
    /// Enqueue a (deduplicated) RefreshViews.
    RefreshViews {
        /// all, leaderboard or standings.
        #[arg(long, default_value = "all")]
        scope: String,
    },
}

/// `tally leaderboard`
#[derive(Debug, Clone, Args)]
pub struct LeaderboardArgs {
    /// Competition id (default: the overall leaderboard).
    #[arg(long, value_parser = id)]
    pub competition: Option<i64>,
    /// Rows to show.
    #[arg(long, default_value_t = 10)]
    pub top: i64,
    /// Rows to skip.
    #[arg(long, default_value_t = 0)]
    pub offset: i64,
}

/// `tally standings`
#[derive(Debug, Clone, Args)]
pub struct StandingsArgs {
    /// Competition id.
    #[arg(long, value_parser = id)]
    pub competition: i64,
}

/// `tally demo`
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Users in the demo season.
    #[arg(long, default_value_t = 2_000)]
    pub users: u32,
    /// Predictions in the demo season.
    #[arg(long, default_value_t = 40_000)]
    pub predictions: u64,
    /// stats-worker processes (it scales horizontally).
    #[arg(long, default_value_t = 2)]
    pub stats_workers: usize,
    /// Directory for the services' logs.
    #[arg(long, default_value = ".state/logs")]
    pub log_dir: std::path::PathBuf,
    /// Seconds to wait for the leaderboard to reflect every result.
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,
}

/// `tally bench …`
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The queue engine through the phases of BullMQ's bench.mjs (settings as its
    /// environment variables: N, CONCURRENCY, PHASES, …). Starts a private
    /// redis-server unless --use-redis-url.
    Queue {
        /// Measure the Redis at REDIS_URL instead of a private one.
        #[arg(long)]
        use_redis_url: bool,
    },
    /// Result-to-fresh-leaderboard pipeline on PostgreSQL (DATABASE_URL must be an empty database).
    Pipeline(PipelineArgs),
}

/// `tally bench pipeline`
#[derive(Debug, Clone, Args)]
pub struct PipelineArgs {
    /// Users.
    #[arg(long, default_value_t = 100_000)]
    pub users: u32,
    /// Predictions.
    #[arg(long, default_value_t = 1_000_000)]
    pub predictions: u64,
    /// Matches to play through the pipeline.
    #[arg(long, default_value_t = 30)]
    pub matches: usize,
    /// Reuse data already in the database.
    #[arg(long)]
    pub reuse: bool,
    /// Competitions to seed (default: the seed's).
    #[arg(long)]
    pub competitions: Option<u32>,
    /// Teams per competition (default: the seed's).
    #[arg(long)]
    pub teams: Option<u32>,
    /// Fraction of the season already played, 0 to 1 (default: the seed's).
    #[arg(long)]
    pub played: Option<f64>,
    /// Seed of the generated data.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Reader connections reading the leaderboard during the run.
    #[arg(long, default_value_t = 4)]
    pub readers: usize,
    /// Pause between a reader's reads, in milliseconds.
    #[arg(long, default_value_t = 2)]
    pub read_pause_ms: u64,
    /// Runs of the naive full-recompute refresh it is compared with.
    #[arg(long, default_value_t = 3)]
    pub naive_runs: usize,
}
