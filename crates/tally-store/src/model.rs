//! Plain data types shared by the store's operations and their callers.
//!
//! Row types derive `Serialize` with camelCase names because the CLI prints
//! them as JSON (`{"userId":…,"points":…,"rank":…}`) and that shape is a
//! contract (docs/CONTRACTS.md).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// The life cycle of a match, stored as text in `matches.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchStatus {
    /// Not started; predictions pending.
    Scheduled,
    /// Being played; predictions pending.
    Live,
    /// Over, with a final score; predictions are scored.
    Finished,
    /// Will not be played on its date; predictions are void (until it is
    /// rescheduled, when they become pending again).
    Postponed,
    /// Will never be played; predictions are void for good.
    Cancelled,
}

impl MatchStatus {
    /// Every status, in life-cycle order.
    pub const ALL: [Self; 5] = [
        Self::Scheduled,
        Self::Live,
        Self::Finished,
        Self::Postponed,
        Self::Cancelled,
    ];

    /// The text stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Live => "live",
            Self::Finished => "finished",
            Self::Postponed => "postponed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether predictions of a match in this status are void.
    pub fn voids_predictions(self) -> bool {
        matches!(self, Self::Postponed | Self::Cancelled)
    }
}

impl fmt::Display for MatchStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MatchStatus {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| StoreError::UnknownStatus(s.to_owned()))
    }
}

/// What a view refresh covers (the `RefreshViews` job's scope).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Leaderboards and standings.
    All,
    /// Leaderboards only.
    Leaderboard,
    /// Standings only.
    Standings,
}

impl Scope {
    /// The wire name (`all`, `leaderboard`, `standings`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Leaderboard => "leaderboard",
            Self::Standings => "standings",
        }
    }

    /// Whether leaderboards are refreshed.
    pub fn includes_leaderboard(self) -> bool {
        matches!(self, Self::All | Self::Leaderboard)
    }

    /// Whether standings are refreshed.
    pub fn includes_standings(self) -> bool {
        matches!(self, Self::All | Self::Standings)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all" => Ok(Self::All),
            "leaderboard" => Ok(Self::Leaderboard),
            "standings" => Ok(Self::Standings),
            other => Err(format!(
                "unknown scope {other:?} (expected all, leaderboard or standings)"
            )),
        }
    }
}

/// One line of a leaderboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaderboardRow {
    /// The user.
    pub user_id: i64,
    /// Their display name.
    pub username: String,
    /// Points earned on this board.
    pub points: i64,
    /// Predictions with the exact score.
    pub exact_scores: i64,
    /// Predictions with the right outcome but not the exact score.
    pub correct_outcomes: i64,
    /// Scored predictions (voided and pending ones excluded).
    pub predictions_scored: i64,
    /// 1 + users with more points: ties share a rank (1, 2, 2, 4).
    pub rank: i64,
}

/// One line of a league table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StandingRow {
    /// 1-based place: points, goal difference, goals for, then team name.
    pub position: i64,
    /// The team.
    pub team_id: i64,
    /// Its name.
    pub team: String,
    /// Finished matches played.
    pub played: i64,
    /// Wins (3 points each).
    pub won: i64,
    /// Draws (1 point each).
    pub drawn: i64,
    /// Losses.
    pub lost: i64,
    /// Goals scored.
    pub goals_for: i64,
    /// Goals conceded.
    pub goals_against: i64,
    /// `goals_for - goals_against`.
    pub goal_difference: i64,
    /// League points.
    pub points: i64,
}

/// What [`crate::Store::record_result`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordOutcome {
    /// The match.
    pub match_id: i64,
    /// Its competition (handy for enqueueing follow-up work).
    pub competition_id: i64,
    /// False when the same result was already recorded (an idempotent repeat).
    pub changed: bool,
    /// The outbox row of the job written in the same transaction, if one
    /// was asked for (`record_result_with_job`, `set_match_status_with_job`).
    pub job_row: Option<i64>,
}

/// What [`crate::Store::score_match`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScoreOutcome {
    /// The match.
    pub match_id: i64,
    /// Its competition.
    pub competition_id: i64,
    /// Its status when scored: finished, or postponed / cancelled (voided).
    pub status: MatchStatus,
    /// Predictions of the match.
    pub predictions: i64,
    /// Rows this call changed (0 on a repeat).
    pub changed: i64,
    /// Predictions with the exact score.
    pub exact: i64,
    /// Predictions with the right outcome only.
    pub correct_outcome: i64,
    /// Predictions voided (postponed or cancelled match).
    pub voided: i64,
}

/// What [`crate::Store::calculate_points`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PointsOutcome {
    /// The match.
    pub match_id: i64,
    /// Its competition.
    pub competition_id: i64,
    /// Users who predicted it (whose totals were recomputed).
    pub users: i64,
    /// Total rows (user × board) whose values changed (0 on a repeat).
    pub changed: i64,
}

/// What [`crate::Store::refresh_views`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RefreshOutcome {
    /// Changed (board, user) pairs taken from the work list.
    pub leaderboard_claimed: i64,
    /// Leaderboard entries inserted or updated.
    pub leaderboard_upserted: i64,
    /// Leaderboard entries removed (no scored prediction left).
    pub leaderboard_removed: i64,
    /// Boards whose ranks were recomputed (0 = overall).
    pub boards_reranked: Vec<i64>,
    /// Competitions whose league table was recomputed.
    pub standings_refreshed: Vec<i64>,
}
