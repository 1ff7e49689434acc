//! Property test: after any sequence of results and status changes, the
//! published leaderboards and league tables equal a brute-force
//! recomputation in Rust from the raw rows.
//!
//! Each seed builds a different world (sizes, odd team counts with byes,
//! custom rules, part of the season already played) and plays a random
//! sequence: results, postponements, cancellations, kick-offs,
//! reschedulings; pipeline steps are sometimes repeated, sometimes delayed
//! until later, and refreshes happen at random points.
//!
//! The recomputation is `tally_oracle`, the yardstick the end-to-end tests
//! and the demo use too; the last test shows it catches a wrong leaderboard
//! or league table.

use std::collections::{BTreeSet, HashMap};

use tally_store::seed::{SeedOptions, SeedRng};
use tally_store::{MatchStatus, Scope, Store, StoreError};
use tokio_postgres::Client;

use crate::common::seeded;

const SEEDS: u64 = 8;

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

        // Every board and table, row for row (order, ranks and names).
        let raw = tally_oracle::load(&client).await.expect("raw rows");
        let checked = tally_oracle::compare(&store, &raw).await.expect("compare");
        assert!(checked.is_ok(), "seed {seed}, options {options:?}: {checked:?}");
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

/// The yardstick is only worth something if it fails on a wrong answer: a
/// published leaderboard row or league table line changed behind the
/// pipeline's back must be named.
#[tokio::test]
async fn the_oracle_names_a_wrong_leaderboard_row_and_a_wrong_table_line() {
    let options = SeedOptions {
        users: 30,
        predictions: 300,
        competitions: 1,
        teams_per_competition: 4,
        played_fraction: 0.5,
        seed: 3,
    };
    let (_db, store, client, _) = seeded(&options).await;
    store.refresh_views(Scope::All).await.expect("refresh");
    let checked = tally_oracle::verify(&store)
        .await
        .expect("verify")
        .expect("exact after seeding");
    assert!(checked.rows > 0 && checked.tables == 1, "{checked:?}");

    let changed = client
        .execute(
            "UPDATE leaderboard_entries SET points = points + 1
              WHERE user_id = (SELECT min(user_id) FROM leaderboard_entries)",
            &[],
        )
        .await
        .expect("tamper");
    assert!(changed > 0);
    let diff = tally_oracle::verify(&store)
        .await
        .expect("verify")
        .expect_err("a wrong board");
    assert!(diff.contains("leaderboard"), "{diff}");
    client
        .execute("UPDATE leaderboard_entries SET points = points - 1 WHERE user_id = (SELECT min(user_id) FROM leaderboard_entries)", &[])
        .await
        .expect("undo");
    tally_oracle::verify(&store)
        .await
        .expect("verify")
        .expect("exact once undone");

    client
        .execute("UPDATE standings SET goals_for = goals_for + 1 WHERE position = 1", &[])
        .await
        .expect("tamper");
    let diff = tally_oracle::verify(&store)
        .await
        .expect("verify")
        .expect_err("a wrong table");
    assert!(diff.contains("league table"), "{diff}");
}
