//! The football pipeline's jobs: score a match, recalculate points, refresh
//! the leaderboards and standings. Each is a step of one causal chain: the
//! handler of one enqueues the next only after its own work is committed.
//! Beside the chain, [`RepairPipeline`] is its periodic maintenance: it finds
//! the matches whose chain broke and enqueues the missing step.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{Backoff, BackoffKind, Job, JobPolicy, Priority};

/// Score every prediction of a completed match, then enqueue [`CalculatePoints`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScoreMatch {
    /// The match whose result was recorded.
    pub match_id: i64,
}

impl Job for ScoreMatch {
    const KIND: &'static str = "score_match";
    const QUEUE: &'static str = "scoring";

    fn payload_schema() -> serde_json::Value {
        json!({
            "type": "object",
            "properties": { "matchId": { "type": "integer", "minimum": 1 } },
            "required": ["matchId"],
            "additionalProperties": false
        })
    }

    fn example() -> Self {
        ScoreMatch { match_id: 42 }
    }
}

/// Recalculate the points of every user who predicted a scored match, then
/// enqueue a deduplicated [`RefreshViews`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CalculatePoints {
    /// The scored match.
    pub match_id: i64,
    /// Queue priority, so a live matchday can overtake a backfill.
    #[serde(default)]
    pub priority: Priority,
}

impl Job for CalculatePoints {
    const KIND: &'static str = "calculate_points";
    const QUEUE: &'static str = "stats";

    fn policy(&self) -> JobPolicy {
        JobPolicy::DEFAULT.with_priority(self.priority)
    }

    fn payload_schema() -> serde_json::Value {
        json!({
            "type": "object",
            "properties": {
                "matchId": { "type": "integer", "minimum": 1 },
                "priority": { "type": "string", "enum": ["high", "normal", "low"], "default": "normal" }
            },
            "required": ["matchId"],
            "additionalProperties": false
        })
    }

    fn example() -> Self {
        CalculatePoints {
            match_id: 42,
            priority: Priority::High,
        }
    }
}

/// Which cached views a [`RefreshViews`] job refreshes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RefreshScope {
    /// Leaderboards and standings.
    #[default]
    All,
    /// Leaderboards only.
    Leaderboard,
    /// League tables only.
    Standings,
}

impl RefreshScope {
    /// Every scope, in wire order.
    pub const ALL: [RefreshScope; 3] = [RefreshScope::All, RefreshScope::Leaderboard, RefreshScope::Standings];

    /// The wire name (`all`, `leaderboard`, `standings`).
    pub const fn as_str(self) -> &'static str {
        match self {
            RefreshScope::All => "all",
            RefreshScope::Leaderboard => "leaderboard",
            RefreshScope::Standings => "standings",
        }
    }

    /// Parses a wire name, as the gateway's `?scope=` does.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scope| scope.as_str() == s)
    }
}

impl std::fmt::Display for RefreshScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Refresh the leaderboards and/or standings without blocking readers.
///
/// Deduplicated per scope: while one refresh of a scope waits, further
/// requests for it coalesce into that one, so a burst of results yields one
/// or two refreshes. A request made after the waiting one was claimed starts
/// a new job, so no committed result is left unrefreshed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RefreshViews {
    /// The views to refresh.
    #[serde(default)]
    pub scope: RefreshScope,
}

impl Job for RefreshViews {
    const KIND: &'static str = "refresh_views";
    const QUEUE: &'static str = "stats";

    fn dedup_key(&self) -> Option<String> {
        Some(format!("refresh_views:{}", self.scope))
    }

    fn payload_schema() -> serde_json::Value {
        json!({
            "type": "object",
            "properties": {
                "scope": { "type": "string", "enum": ["all", "leaderboard", "standings"], "default": "all" }
            },
            "required": [],
            "additionalProperties": false
        })
    }

    fn example() -> Self {
        RefreshViews {
            scope: RefreshScope::All,
        }
    }
}

/// Repair the pipeline: find the matches whose result never reached the
/// totals and enqueue what each misses (`ScoreMatch` or `CalculatePoints`,
/// under stable ids), at most `batch` matches, oldest first.
///
/// The cron gateway asks for one on every cron call; scoring-worker runs it
/// (`scoring_worker::repair`). Deduplicated: while one repair waits, further
/// requests coalesce into it. Running it twice is harmless: the jobs it
/// enqueues have stable ids, and every handler is idempotent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RepairPipeline {
    /// A match marked more recently than this many seconds is work in
    /// flight, not lost, and is left alone (at most
    /// [`RepairPipeline::MAX_GRACE_SECS`]).
    #[serde(default = "RepairPipeline::default_grace_secs")]
    pub grace_secs: u64,
    /// At most this many matches are repaired by one run (1 to
    /// [`RepairPipeline::MAX_BATCH`]); a larger backlog is worked off by the
    /// next runs.
    #[serde(default = "RepairPipeline::default_batch")]
    pub batch: u32,
}

impl RepairPipeline {
    /// The largest grace period a repair accepts: a day.
    pub const MAX_GRACE_SECS: u64 = 86_400;
    /// The largest batch a repair accepts.
    pub const MAX_BATCH: u32 = 10_000;

    /// The policy of every repair: a run is a bounded scan (a few hundred
    /// milliseconds for a batch of 200), so a minute is plenty; five attempts
    /// from 5 s ride out a short outage, and the next cron call asks again
    /// after a longer one.
    pub const POLICY: JobPolicy = JobPolicy {
        max_attempts: 5,
        backoff: Backoff {
            kind: BackoffKind::Exponential,
            base_ms: 5_000,
            max_ms: 60_000,
            jitter: false,
        },
        timeout_ms: 60_000,
        priority: Priority::Normal,
    };

    /// The dedup key every repair shares.
    pub const DEDUP_KEY: &'static str = "repair_pipeline";

    const fn default_grace_secs() -> u64 {
        120
    }

    const fn default_batch() -> u32 {
        200
    }

    /// Why this repair cannot run, if its bounds are out of range (a
    /// producer other than tally's can write anything the schema allows).
    pub fn out_of_bounds(&self) -> Option<String> {
        if self.grace_secs > Self::MAX_GRACE_SECS {
            return Some(format!(
                "graceSecs {} is above the maximum {}",
                self.grace_secs,
                Self::MAX_GRACE_SECS
            ));
        }
        if self.batch == 0 || self.batch > Self::MAX_BATCH {
            return Some(format!("batch {} is not within 1..={}", self.batch, Self::MAX_BATCH));
        }
        None
    }
}

impl Default for RepairPipeline {
    fn default() -> Self {
        Self {
            grace_secs: Self::default_grace_secs(),
            batch: Self::default_batch(),
        }
    }
}

impl Job for RepairPipeline {
    const KIND: &'static str = "repair_pipeline";
    const QUEUE: &'static str = "scoring";

    fn policy(&self) -> JobPolicy {
        Self::POLICY
    }

    fn dedup_key(&self) -> Option<String> {
        Some(Self::DEDUP_KEY.to_owned())
    }

    fn payload_schema() -> serde_json::Value {
        json!({
            "type": "object",
            "properties": {
                "graceSecs": { "type": "integer", "minimum": 0, "default": Self::default_grace_secs() },
                "batch": { "type": "integer", "minimum": 1, "default": Self::default_batch() }
            },
            "required": [],
            "additionalProperties": false
        })
    }

    fn example() -> Self {
        RepairPipeline {
            grace_secs: 120,
            batch: 200,
        }
    }
}
