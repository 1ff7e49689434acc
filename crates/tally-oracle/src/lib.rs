//! tally-oracle: the brute-force yardstick. Every leaderboard and league
//! table is recomputed from the raw rows (users, predictions, matches,
//! competitions' rules, teams) in plain Rust, deliberately naive and
//! independent of the store's SQL, and compared row for row (order, ranks
//! and names included) with what the pipeline published.
//!
//! One copy serves everything that checks the pipeline: the store's
//! property test, the end-to-end tests, `make demo` and `tally verify`. A
//! change to the scoring rules is made here and in the store's SQL, and the
//! two must agree.
//!
//! The rules it encodes: a prediction of the exact score earns the
//! competition's `points_exact`, the right outcome (home win, draw, away
//! win) its `points_outcome`, anything else 0; only finished matches count;
//! a board lists every user with at least one scored prediction, by points
//! (ties share a rank: 1 + the number of users with more points), then user
//! id. A league table lists every team with a match in the competition: 3
//! points a win, 1 a draw, ordered by points, goal difference, goals
//! scored, name, then team id.

use std::collections::{BTreeMap, HashMap};

use tally_store::{LeaderboardRow, StandingRow, Store};

/// The overall board's key in [`leaderboards`] (competition boards use the
/// competition's id).
pub const OVERALL: i64 = 0;

/// One match as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMatch {
    /// Match id.
    pub id: i64,
    /// Its competition.
    pub competition: i64,
    /// Home team id.
    pub home: i64,
    /// Away team id.
    pub away: i64,
    /// `scheduled`, `live`, `finished`, `postponed` or `cancelled`.
    pub status: String,
    /// The result, when recorded.
    pub score: Option<(i32, i32)>,
}

/// A prediction as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawPrediction {
    /// Who predicted.
    pub user: i64,
    /// Which match.
    pub match_id: i64,
    /// Predicted home goals.
    pub home: i32,
    /// Predicted away goals.
    pub away: i32,
}

/// The raw rows the yardstick is computed from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Raw {
    /// User id → username.
    pub usernames: HashMap<i64, String>,
    /// Competition id → (points for an exact score, points for the outcome).
    pub rules: HashMap<i64, (i32, i32)>,
    /// Team id → name.
    pub teams: HashMap<i64, String>,
    /// Match id → match.
    pub matches: HashMap<i64, RawMatch>,
    /// Every prediction.
    pub predictions: Vec<RawPrediction>,
}

/// What [`verify`] compared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checked {
    /// Leaderboards compared (the overall one included).
    pub boards: usize,
    /// Leaderboard rows compared.
    pub rows: usize,
    /// League tables compared.
    pub tables: usize,
    /// Finished matches the yardstick counted.
    pub finished_matches: usize,
}

/// Reads the raw rows (one plain `SELECT` per table).
pub async fn load(client: &tokio_postgres::Client) -> Result<Raw, tokio_postgres::Error> {
    let usernames = client
        .query("SELECT id, username FROM users", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let rules = client
        .query("SELECT id, points_exact, points_outcome FROM competitions", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let teams = client
        .query("SELECT id, name FROM teams", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let matches = client
        .query(
            "SELECT id, competition_id, home_team_id, away_team_id, status, home_score, away_score FROM matches",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            let home_score: Option<i32> = r.get(5);
            let away_score: Option<i32> = r.get(6);
            let m = RawMatch {
                id: r.get(0),
                competition: r.get(1),
                home: r.get(2),
                away: r.get(3),
                status: r.get(4),
                score: home_score.zip(away_score),
            };
            (m.id, m)
        })
        .collect();
    let predictions = client
        .query("SELECT user_id, match_id, home_score, away_score FROM predictions", &[])
        .await?
        .iter()
        .map(|r| RawPrediction {
            user: r.get(0),
            match_id: r.get(1),
            home: r.get(2),
            away: r.get(3),
        })
        .collect();
    Ok(Raw {
        usernames,
        rules,
        teams,
        matches,
        predictions,
    })
}

/// Every leaderboard: board ([`OVERALL`] or a competition id) → rows in
/// display order. Every competition has a board, empty or not.
pub fn leaderboards(raw: &Raw) -> BTreeMap<i64, Vec<LeaderboardRow>> {
    // (board, user) → (points, exact, outcome, scored)
    let mut totals: BTreeMap<(i64, i64), (i64, i64, i64, i64)> = BTreeMap::new();
    for p in &raw.predictions {
        let Some(m) = raw.matches.get(&p.match_id) else {
            continue;
        };
        let Some((rh, ra)) = m.score.filter(|_| m.status == "finished") else {
            continue;
        };
        let (exact_points, outcome_points) = raw.rules.get(&m.competition).copied().unwrap_or_default();
        let exact = p.home == rh && p.away == ra;
        let outcome = !exact && (p.home - p.away).signum() == (rh - ra).signum();
        let points = if exact {
            exact_points
        } else if outcome {
            outcome_points
        } else {
            0
        };
        for board in [OVERALL, m.competition] {
            let t = totals.entry((board, p.user)).or_default();
            t.0 += i64::from(points);
            t.1 += i64::from(exact);
            t.2 += i64::from(outcome);
            t.3 += 1;
        }
    }
    let mut boards: BTreeMap<i64, Vec<LeaderboardRow>> = BTreeMap::new();
    boards.insert(OVERALL, Vec::new());
    for &competition in raw.rules.keys() {
        boards.insert(competition, Vec::new());
    }
    for (&(board, user), &(points, exact, outcome, scored)) in &totals {
        boards.entry(board).or_default().push(LeaderboardRow {
            user_id: user,
            username: raw.usernames.get(&user).cloned().unwrap_or_default(),
            points,
            exact_scores: exact,
            correct_outcomes: outcome,
            predictions_scored: scored,
            rank: 0,
        });
    }
    for rows in boards.values_mut() {
        rows.sort_by(|a, b| b.points.cmp(&a.points).then(a.user_id.cmp(&b.user_id)));
        let points: Vec<i64> = rows.iter().map(|r| r.points).collect();
        for row in rows.iter_mut() {
            row.rank = 1 + points.iter().filter(|&&p| p > row.points).count() as i64;
        }
    }
    boards
}

/// Every league table: competition id → rows in order.
pub fn standings(raw: &Raw) -> BTreeMap<i64, Vec<StandingRow>> {
    let mut tables: BTreeMap<i64, BTreeMap<i64, StandingRow>> = BTreeMap::new();
    for m in raw.matches.values() {
        for team in [m.home, m.away] {
            tables
                .entry(m.competition)
                .or_default()
                .entry(team)
                .or_insert_with(|| StandingRow {
                    position: 0,
                    team_id: team,
                    team: raw.teams.get(&team).cloned().unwrap_or_default(),
                    played: 0,
                    won: 0,
                    drawn: 0,
                    lost: 0,
                    goals_for: 0,
                    goals_against: 0,
                    goal_difference: 0,
                    points: 0,
                });
        }
    }
    for m in raw.matches.values().filter(|m| m.status == "finished") {
        let (Some((h, a)), Some(table)) = (m.score, tables.get_mut(&m.competition)) else {
            continue;
        };
        for (team, scored, conceded) in [(m.home, h, a), (m.away, a, h)] {
            let Some(row) = table.get_mut(&team) else { continue };
            row.played += 1;
            row.goals_for += i64::from(scored);
            row.goals_against += i64::from(conceded);
            match scored.cmp(&conceded) {
                std::cmp::Ordering::Greater => row.won += 1,
                std::cmp::Ordering::Equal => row.drawn += 1,
                std::cmp::Ordering::Less => row.lost += 1,
            }
        }
    }
    let mut result = BTreeMap::new();
    for (competition, table) in tables {
        let mut rows: Vec<StandingRow> = table.into_values().collect();
        for row in &mut rows {
            row.points = 3 * row.won + row.drawn;
            row.goal_difference = row.goals_for - row.goals_against;
        }
        rows.sort_by(|a, b| {
            b.points
                .cmp(&a.points)
                .then(b.goal_difference.cmp(&a.goal_difference))
                .then(b.goals_for.cmp(&a.goals_for))
                .then(a.team.cmp(&b.team))
                .then(a.team_id.cmp(&b.team_id))
        });
        for (i, row) in rows.iter_mut().enumerate() {
            row.position = i as i64 + 1;
        }
        result.insert(competition, rows);
    }
    result
}

/// The first difference between published and expected rows, if any.
fn first_difference<T: PartialEq + std::fmt::Debug>(what: &str, published: &[T], expected: &[T]) -> Option<String> {
    if let Some(i) = (0..published.len().min(expected.len())).find(|&i| published[i] != expected[i]) {
        return Some(format!(
            "{what}, row {}: published {:?}, expected {:?}",
            i + 1,
            published[i],
            expected[i]
        ));
    }
    (published.len() != expected.len()).then(|| {
        format!(
            "{what}: {} rows published, {} expected",
            published.len(),
            expected.len()
        )
    })
}

/// Compares what `store` publishes with [`leaderboards`] and [`standings`]
/// of its raw rows. `Ok(Err(..))` names the first difference.
pub async fn compare(store: &Store, raw: &Raw) -> anyhow::Result<Result<Checked, String>> {
    let mut checked = Checked {
        finished_matches: raw.matches.values().filter(|m| m.status == "finished").count(),
        ..Checked::default()
    };
    for (board, expected) in leaderboards(raw) {
        let competition = (board != OVERALL).then_some(board);
        let published = store.leaderboard(competition, 10_000_000, 0).await?;
        let what = match competition {
            None => "overall leaderboard".to_owned(),
            Some(c) => format!("leaderboard of competition {c}"),
        };
        if let Some(diff) = first_difference(&what, &published, &expected) {
            return Ok(Err(diff));
        }
        checked.boards += 1;
        checked.rows += published.len();
    }
    for (competition, expected) in standings(raw) {
        let published = store.standings(competition).await?;
        let what = format!("league table of competition {competition}");
        if let Some(diff) = first_difference(&what, &published, &expected) {
            return Ok(Err(diff));
        }
        checked.tables += 1;
    }
    Ok(Ok(checked))
}

/// Loads the raw rows of `store`'s database and [`compare`]s.
pub async fn verify(store: &Store) -> anyhow::Result<Result<Checked, String>> {
    let raw = load(&*store.pool().get().await?).await?;
    compare(store, &raw).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One competition (3 for an exact score, 1 for the outcome), three
    /// teams, one match finished 2-1, one still scheduled.
    fn world() -> Raw {
        let m = |id, home, away, status: &str, score| RawMatch {
            id,
            competition: 7,
            home,
            away,
            status: status.to_owned(),
            score,
        };
        let p = |user, match_id, home, away| RawPrediction {
            user,
            match_id,
            home,
            away,
        };
        Raw {
            usernames: [(1, "ana"), (2, "bo"), (3, "cy"), (4, "di")]
                .into_iter()
                .map(|(id, n)| (id, n.to_owned()))
                .collect(),
            rules: [(7, (3, 1))].into_iter().collect(),
            teams: [(10, "Ajax"), (11, "Boca"), (12, "Celta")]
                .into_iter()
                .map(|(id, n)| (id, n.to_owned()))
                .collect(),
            matches: [
                (100, m(100, 10, 11, "finished", Some((2, 1)))),
                (101, m(101, 11, 12, "scheduled", None)),
            ]
            .into_iter()
            .collect(),
            predictions: vec![
                p(1, 100, 2, 1), // exact: 3
                p(2, 100, 1, 0), // outcome: 1
                p(3, 100, 0, 2), // wrong: 0
                p(4, 100, 3, 2), // outcome: 1, ties with bo
                p(1, 101, 1, 1), // not finished: not counted
            ],
        }
    }

    fn row(user_id: i64, username: &str, points: i64, exact: i64, outcome: i64, rank: i64) -> LeaderboardRow {
        LeaderboardRow {
            user_id,
            username: username.to_owned(),
            points,
            exact_scores: exact,
            correct_outcomes: outcome,
            predictions_scored: 1,
            rank,
        }
    }

    #[test]
    fn points_ranks_and_ties_follow_the_rules() {
        let boards = leaderboards(&world());
        let expected = vec![
            row(1, "ana", 3, 1, 0, 1),
            row(2, "bo", 1, 0, 1, 2),
            row(4, "di", 1, 0, 1, 2),
            row(3, "cy", 0, 0, 0, 4),
        ];
        assert_eq!(boards[&OVERALL], expected);
        assert_eq!(boards[&7], expected, "the competition's board holds the same match");
        assert_eq!(boards.len(), 2);
    }

    #[test]
    fn league_tables_count_finished_matches_only() {
        let tables = standings(&world());
        let t = &tables[&7];
        let line = |r: &StandingRow| {
            (
                r.position,
                r.team.clone(),
                r.played,
                r.won,
                r.lost,
                r.goal_difference,
                r.points,
            )
        };
        assert_eq!(
            t.iter().map(line).collect::<Vec<_>>(),
            [
                (1, "Ajax".to_owned(), 1, 1, 0, 1, 3),
                (2, "Celta".to_owned(), 0, 0, 0, 0, 0),
                (3, "Boca".to_owned(), 1, 0, 1, -1, 0),
            ]
        );
    }

    #[test]
    fn a_changed_result_or_rule_changes_the_yardstick() {
        let base = leaderboards(&world());
        let mut other = world();
        other.rules.insert(7, (5, 2));
        assert_ne!(leaderboards(&other), base, "the competition's rules count");
        let mut other = world();
        other.matches.get_mut(&100).expect("match").score = Some((1, 0));
        let boards = leaderboards(&other);
        assert_eq!(boards[&OVERALL][0], row(2, "bo", 3, 1, 0, 1), "bo now exact");
        let mut other = world();
        other.matches.get_mut(&100).expect("match").status = "postponed".to_owned();
        assert!(
            leaderboards(&other)[&OVERALL].is_empty(),
            "a postponed match scores nothing"
        );
    }

    #[test]
    fn the_first_difference_is_named() {
        let a = [1, 2, 3];
        assert_eq!(first_difference("t", &a, &a), None);
        assert_eq!(
            first_difference("t", &[1, 5, 3], &a).as_deref(),
            Some("t, row 2: published 5, expected 2")
        );
        assert_eq!(
            first_difference("t", &[1, 2], &a).as_deref(),
            Some("t: 2 rows published, 3 expected")
        );
    }
}
