//! Property test: after any sequence of results and status changes, the
//! published leaderboards and league tables equal a brute-force
//! recomputation in Rust from the raw rows.
//!
//! Each seed builds a different world (sizes, odd team counts with byes,
//! custom rules, part of the season already played) and plays a random
//! sequence: results, postponements, cancellations, kick-offs,
//! reschedulings; pipeline steps are sometimes repeated, sometimes delayed
//! until later, and refreshes happen at random points.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use tally_store::seed::{SeedOptions, SeedRng};
use tally_store::{LeaderboardRow, MatchStatus, Scope, StandingRow, Store, StoreError};
use tokio_postgres::Client;

use crate::common::seeded;

const SEEDS: u64 = 8;

#[derive(Debug, Clone)]
struct RawMatch {
    id: i64,
    competition: i64,
    home: i64,
    away: i64,
    status: String,
    score: Option<(i32, i32)>,
}

struct Raw {
    usernames: HashMap<i64, String>,
    rules: HashMap<i64, (i32, i32)>,
    teams: HashMap<i64, String>,
    matches: HashMap<i64, RawMatch>,
    predictions: Vec<(i64, i64, i32, i32)>,
}

async fn load(client: &Client) -> Raw {
    let q = |sql: &'static str| async move { client.query(sql, &[]).await.expect(sql) };
    let usernames = q("SELECT id, username FROM users")
        .await
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let rules = q("SELECT id, points_exact, points_outcome FROM competitions")
        .await
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let teams = q("SELECT id, name FROM teams")
        .await
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let matches =
        q("SELECT id, competition_id, home_team_id, away_team_id, status, home_score, away_score FROM matches")
            .await
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
    let predictions = q("SELECT user_id, match_id, home_score, away_score FROM predictions")
        .await
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    Raw {
        usernames,
        rules,
        teams,
        matches,
        predictions,
    }
}

/// Brute-force leaderboards: board id → rows in display order.
fn expected_leaderboards(raw: &Raw) -> BTreeMap<i64, Vec<LeaderboardRow>> {
    // (board, user) → (points, exact, outcome, scored)
    let mut totals: BTreeMap<(i64, i64), (i64, i64, i64, i64)> = BTreeMap::new();
    for &(user, match_id, ph, pa) in &raw.predictions {
        let m = &raw.matches[&match_id];
        if m.status != "finished" {
            continue;
        }
        let (rh, ra) = m.score.expect("finished matches have scores");
        let (exact_points, outcome_points) = raw.rules[&m.competition];
        let exact = ph == rh && pa == ra;
        let outcome = !exact && (ph - pa).signum() == (rh - ra).signum();
        let points = if exact {
            exact_points
        } else if outcome {
            outcome_points
        } else {
            0
        };
        for board in [0, m.competition] {
            let t = totals.entry((board, user)).or_default();
            t.0 += i64::from(points);
            t.1 += i64::from(exact);
            t.2 += i64::from(outcome);
            t.3 += 1;
        }
    }
    let mut boards: BTreeMap<i64, Vec<LeaderboardRow>> = BTreeMap::new();
    boards.insert(0, Vec::new());
    for &competition in raw.rules.keys() {
        boards.insert(competition, Vec::new());
    }
    for (&(board, user), &(points, exact, outcome, scored)) in &totals {
        boards.get_mut(&board).expect("known board").push(LeaderboardRow {
            user_id: user,
            username: raw.usernames[&user].clone(),
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

/// Brute-force league tables: competition id → rows in order.
fn expected_standings(raw: &Raw) -> BTreeMap<i64, Vec<StandingRow>> {
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
                    team: raw.teams[&team].clone(),
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
        let (h, a) = m.score.expect("score");
        let table = tables.get_mut(&m.competition).expect("table");
        for (team, scored, conceded) in [(m.home, h, a), (m.away, a, h)] {
            let row = table.get_mut(&team).expect("team row");
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

/// Scores `match_id` the way the worker would, checking refusals.
async fn score(store: &Store, match_id: i64, status: MatchStatus) {
    match store.score_match(match_id).await {
        Ok(_) => assert!(matches!(
            status,
            MatchStatus::Finished | MatchStatus::Postponed | MatchStatus::Cancelled
        )),
        Err(StoreError::MatchNotFinished { status: got, .. }) => {
            assert_eq!(got, status);
            assert!(matches!(status, MatchStatus::Scheduled | MatchStatus::Live));
        }
        Err(other) => panic!("unexpected scoring error: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_views_equal_a_brute_force_recomputation() {
    for seed in 0..SEEDS {
        let mut rng = SeedRng::new(1000 + seed);
        let competitions = 1 + rng.below(3) as u32;
        let teams = 3 + rng.below(5) as u32;
        let users = 20 + rng.below(40) as u32;
        // A double round-robin of n teams has n (n - 1) matches, byes or not.
        let matches = u64::from(teams * (teams - 1) * competitions);
        let per_user = 1 + rng.below(matches.min(12));
        let options = SeedOptions {
            users,
            predictions: u64::from(users) * per_user,
            competitions,
            teams_per_competition: teams,
            played_fraction: rng.unit() * 0.6,
            seed,
        };
        let (_db, store, client, summary) = seeded(&options).await;
        assert_eq!(summary.matches, matches, "{options:?}");
        let mut status: HashMap<i64, MatchStatus> = summary
            .open_match_ids
            .iter()
            .map(|&m| (m, MatchStatus::Scheduled))
            .collect();
        let mut delayed: BTreeSet<i64> = BTreeSet::new();

        let steps = 6 + rng.below(10);
        for _ in 0..steps {
            let candidates: Vec<i64> = status
                .iter()
                .filter(|(_, s)| !matches!(s, MatchStatus::Finished | MatchStatus::Cancelled))
                .map(|(&m, _)| m)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            if candidates.is_empty() {
                break;
            }
            let m = candidates[rng.below(candidates.len() as u64) as usize];
            let current = status[&m];
            let roll = rng.below(100);
            let next = if roll < 55 {
                let (h, a) = (rng.goals(1.5), rng.goals(1.2));
                store.record_result(m, h, a).await.expect("result");
                MatchStatus::Finished
            } else if roll < 65 {
                store.postpone_match(m).await.expect("postpone");
                MatchStatus::Postponed
            } else if roll < 75 {
                store.cancel_match(m).await.expect("cancel");
                MatchStatus::Cancelled
            } else if roll < 85 {
                store.set_match_status(m, MatchStatus::Live).await.expect("live");
                MatchStatus::Live
            } else if current == MatchStatus::Postponed {
                store
                    .set_match_status(m, MatchStatus::Scheduled)
                    .await
                    .expect("reschedule");
                delayed.remove(&m);
                MatchStatus::Scheduled
            } else {
                store.record_result(m, 1, 1).await.expect("result");
                MatchStatus::Finished
            };
            status.insert(m, next);
            score(&store, m, next).await;
            if rng.below(4) == 0 {
                // Duplicate delivery of the scoring job.
                score(&store, m, next).await;
            }
            let settled = matches!(
                next,
                MatchStatus::Finished | MatchStatus::Postponed | MatchStatus::Cancelled
            );
            if settled {
                if rng.below(3) == 0 {
                    delayed.insert(m);
                } else {
                    store.calculate_points(m).await.expect("points");
                    if rng.below(4) == 0 {
                        store.calculate_points(m).await.expect("points again");
                    }
                }
            }
            if rng.below(2) == 0 {
                let scope = [Scope::All, Scope::Leaderboard, Scope::Standings][rng.below(3) as usize];
                store.refresh_views(scope).await.expect("refresh");
            }
        }
        // Late jobs arrive, then the safety-net refresh.
        for &m in &delayed {
            store.calculate_points(m).await.expect("late points");
        }
        store.refresh_views(Scope::All).await.expect("final refresh");

        let raw = load(&client).await;
        for (board, expected) in expected_leaderboards(&raw) {
            let competition = (board != 0).then_some(board);
            let got = store.leaderboard(competition, 1_000_000, 0).await.expect("leaderboard");
            assert_eq!(got, expected, "seed {seed}, board {board}, options {options:?}");
        }
        for (competition, expected) in expected_standings(&raw) {
            let got = store.standings(competition).await.expect("standings");
            assert_eq!(got, expected, "seed {seed}, competition {competition}");
        }
        // Stored scoring agrees too: void exactly for postponed / cancelled.
        let bad: i64 = client
            .query_one(
                "SELECT count(*) FROM predictions p JOIN matches m ON m.id = p.match_id
                 WHERE (m.status IN ('postponed', 'cancelled')) <> p.voided
                    OR (m.status = 'finished') <> (p.points IS NOT NULL)",
                &[],
            )
            .await
            .expect("count")
            .get(0);
        assert_eq!(bad, 0, "seed {seed}");
    }
}

#[tokio::test]
async fn seeding_is_deterministic() {
    let options = SeedOptions {
        users: 40,
        predictions: 400,
        competitions: 3,
        teams_per_competition: 5,
        played_fraction: 0.5,
        seed: 77,
    };
    let fingerprint = |client: Client| async move {
        client
            .query_one(
                "SELECT (SELECT md5(string_agg(
                             (user_id, match_id, home_score, away_score, points, exact,
                              correct_outcome, scored_at)::text, ',' ORDER BY match_id, user_id))
                         FROM predictions)
                     || (SELECT md5(string_agg(
                             (id, competition_id, home_team_id, away_team_id, kickoff_at,
                              status, home_score, away_score)::text, ',' ORDER BY id))
                         FROM matches)",
                &[],
            )
            .await
            .expect("fingerprint")
            .get::<_, String>(0)
    };
    let (_a, _, client_a, summary_a) = seeded(&options).await;
    let (_b, _, client_b, summary_b) = seeded(&options).await;
    assert_eq!(summary_a.open_match_ids, summary_b.open_match_ids);
    assert_eq!(summary_a.scored_predictions, summary_b.scored_predictions);
    assert_eq!(summary_a.matches, 3 * 20);
    let (fa, fb) = (fingerprint(client_a).await, fingerprint(client_b).await);
    assert_eq!(fa, fb);
    let other = SeedOptions { seed: 78, ..options };
    let (_c, _, client_c, _) = seeded(&other).await;
    assert_ne!(fingerprint(client_c).await, fa, "another seed gives other data");
}
