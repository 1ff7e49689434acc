//! The football pipeline's jobs: score a match, recalculate points, refresh
//! the leaderboards and standings. Each is a step of one causal chain: the
//! handler of one enqueues the next only after its own work is committed.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{Job, JobPolicy, Priority};

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
