//! Scoring rules as a table of cases, and how scoring treats match statuses.

use tally_store::scoring::{ScoringRules, verdict};
use tally_store::{MatchStatus, Scope, StoreError};

use crate::common::{competition, fixture, fresh, predict, small_world, team, user};

/// (rules exact, rules outcome, result, prediction, points, exact, outcome)
type Case = (i32, i32, (i32, i32), (i32, i32), i32, bool, bool);

const CASES: &[Case] = &[
    // Default rules, home win.
    (3, 1, (2, 1), (2, 1), 3, true, false),
    (3, 1, (2, 1), (1, 0), 1, false, true),
    (3, 1, (2, 1), (3, 0), 1, false, true),
    (3, 1, (2, 1), (1, 1), 0, false, false),
    (3, 1, (2, 1), (0, 2), 0, false, false),
    // Draws.
    (3, 1, (1, 1), (1, 1), 3, true, false),
    (3, 1, (1, 1), (0, 0), 1, false, true),
    (3, 1, (1, 1), (2, 2), 1, false, true),
    (3, 1, (0, 0), (0, 0), 3, true, false),
    (3, 1, (0, 0), (1, 0), 0, false, false),
    (3, 1, (2, 2), (2, 1), 0, false, false),
    // Away wins.
    (3, 1, (0, 3), (0, 3), 3, true, false),
    (3, 1, (0, 3), (1, 2), 1, false, true),
    (3, 1, (0, 3), (3, 0), 0, false, false),
    // High scores.
    (3, 1, (7, 5), (7, 5), 3, true, false),
    (3, 1, (7, 5), (9, 0), 1, false, true),
    (3, 1, (12, 11), (11, 12), 0, false, false),
    (3, 1, (99, 99), (99, 99), 3, true, false),
    (3, 1, (10, 0), (0, 10), 0, false, false),
    // Custom rules: riskier competition.
    (5, 2, (2, 1), (2, 1), 5, true, false),
    (5, 2, (2, 1), (4, 0), 2, false, true),
    (5, 2, (1, 1), (3, 3), 2, false, true),
    (5, 2, (1, 1), (1, 0), 0, false, false),
    // Custom rules: only exact scores count.
    (10, 0, (3, 2), (3, 2), 10, true, false),
    (10, 0, (3, 2), (2, 1), 0, false, true),
    // Custom rules: exact earns no more than outcome (allowed, flags still differ).
    (2, 2, (0, 1), (0, 1), 2, true, false),
    (2, 2, (0, 1), (0, 2), 2, false, true),
];

#[test]
fn verdict_matches_the_table() {
    for &(exact_pts, outcome_pts, result, predicted, points, exact, outcome) in CASES {
        let rules = ScoringRules {
            points_exact: exact_pts,
            points_outcome: outcome_pts,
        };
        let v = verdict(predicted, result, rules);
        assert_eq!(
            (v.points, v.exact, v.correct_outcome),
            (points, exact, outcome),
            "rules {rules:?}, result {result:?}, prediction {predicted:?}"
        );
    }
}

#[tokio::test]
async fn database_scoring_matches_the_table() {
    let (_db, store, client) = fresh().await;
    let home = team(&client, "Home FC").await;
    let away = team(&client, "Away FC").await;
    let mut checks = Vec::new();
    for (i, &(exact_pts, outcome_pts, result, predicted, points, exact, outcome)) in CASES.iter().enumerate() {
        let comp = competition(&client, &format!("Case {i}"), exact_pts, outcome_pts).await;
        let match_id = fixture(&client, comp, home, away).await;
        let player = user(&client, &format!("player{i}")).await;
        predict(&client, player, match_id, predicted.0, predicted.1).await;
        store
            .record_result(match_id, result.0, result.1)
            .await
            .expect("result recorded");
        let outcome_row = store.score_match(match_id).await.expect("scored");
        assert_eq!(outcome_row.predictions, 1);
        assert_eq!(outcome_row.changed, 1);
        checks.push((i, match_id, player, points, exact, outcome));
    }
    for (i, match_id, player, points, exact, outcome) in checks {
        let row = client
            .query_one(
                "SELECT points, exact, correct_outcome, voided FROM predictions
                 WHERE match_id = $1 AND user_id = $2",
                &[&match_id, &player],
            )
            .await
            .expect("prediction read");
        let got: (Option<i32>, bool, bool, bool) = (row.get(0), row.get(1), row.get(2), row.get(3));
        assert_eq!(got, (Some(points), exact, outcome, false), "case {i}: {:?}", CASES[i]);
    }
}

#[tokio::test]
async fn unknown_and_unfinished_matches_are_refused_with_typed_errors() {
    let (_db, store, client) = fresh().await;
    let (_, _, _, match_id, alice) = small_world(&client).await;
    predict(&client, alice, match_id, 1, 0).await;

    let missing = store.score_match(999_999).await.expect_err("missing match");
    assert!(matches!(missing, StoreError::MatchNotFound { match_id: 999_999 }));
    assert!(!missing.is_transient());

    let scheduled = store.score_match(match_id).await.expect_err("scheduled");
    assert!(matches!(
        scheduled,
        StoreError::MatchNotFinished {
            status: MatchStatus::Scheduled,
            ..
        }
    ));
    assert!(scheduled.is_transient(), "a scheduled match is retried later");

    store
        .set_match_status(match_id, MatchStatus::Live)
        .await
        .expect("kick-off");
    let live = store.calculate_points(match_id).await.expect_err("live");
    assert!(matches!(
        live,
        StoreError::MatchNotFinished {
            status: MatchStatus::Live,
            ..
        }
    ));

    // Finished but not scored yet: points refuse, transiently.
    store.record_result(match_id, 1, 0).await.expect("result");
    let unscored = store.calculate_points(match_id).await.expect_err("unscored");
    assert!(matches!(unscored, StoreError::MatchNotScored { pending: 1, .. }));
    assert!(unscored.is_transient());

    store.score_match(match_id).await.expect("scored");
    let points = store.calculate_points(match_id).await.expect("points");
    assert_eq!(points.users, 1);
}

#[tokio::test]
async fn postponed_and_cancelled_matches_void_predictions() {
    let (_db, store, client) = fresh().await;
    let (comp, home, away, postponed, alice) = small_world(&client).await;
    let cancelled = fixture(&client, comp, away, home).await;
    let played = fixture(&client, comp, home, away).await;
    let bob = user(&client, "bob").await;
    for (m, h, a) in [(postponed, 2, 1), (cancelled, 0, 0), (played, 1, 1)] {
        predict(&client, alice, m, h, a).await;
        predict(&client, bob, m, a, h).await;
    }
    crate::common::play(&store, played, 1, 1).await;

    store.postpone_match(postponed).await.expect("postponed");
    store.cancel_match(cancelled).await.expect("cancelled");
    for m in [postponed, cancelled] {
        let outcome = store.score_match(m).await.expect("voided");
        assert_eq!((outcome.predictions, outcome.voided, outcome.changed), (2, 2, 2));
        // Void is idempotent too.
        assert_eq!(store.score_match(m).await.expect("again").changed, 0);
        store.calculate_points(m).await.expect("points of a void match");
    }
    store.refresh_views(Scope::All).await.expect("refresh");
    let voided: i64 = client
        .query_one(
            "SELECT count(*) FROM predictions
             WHERE voided AND points IS NULL AND NOT exact AND NOT correct_outcome",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(voided, 4);
    // Voided predictions count nowhere: alice has exactly the drawn match.
    let board = store.leaderboard(None, 10, 0).await.expect("leaderboard");
    let alice_row = board.iter().find(|r| r.user_id == alice).expect("alice listed");
    assert_eq!((alice_row.points, alice_row.predictions_scored), (3, 1));

    // A cancelled match stays cancelled; a postponed one can be rescheduled,
    // making its predictions pending again, and then played.
    let err = store.record_result(cancelled, 1, 0).await.expect_err("cancelled");
    assert!(matches!(err, StoreError::InvalidTransition { .. }));
    store
        .set_match_status(postponed, MatchStatus::Scheduled)
        .await
        .expect("rescheduled");
    let pending: i64 = client
        .query_one(
            "SELECT count(*) FROM predictions WHERE match_id = $1 AND NOT voided AND points IS NULL",
            &[&postponed],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(pending, 2);
    crate::common::play(&store, postponed, 2, 1).await;
    let board = store.leaderboard(None, 10, 0).await.expect("leaderboard");
    let alice_row = board.iter().find(|r| r.user_id == alice).expect("alice listed");
    assert_eq!((alice_row.points, alice_row.predictions_scored), (6, 2));
}

#[tokio::test]
async fn record_result_is_idempotent_and_final() {
    let (_db, store, client) = fresh().await;
    let (_, _, _, match_id, _) = small_world(&client).await;

    let first = store.record_result(match_id, 2, 0).await.expect("recorded");
    assert!(first.changed);
    let again = store.record_result(match_id, 2, 0).await.expect("same again");
    assert!(!again.changed);
    let conflict = store.record_result(match_id, 2, 1).await.expect_err("conflict");
    assert!(matches!(
        conflict,
        StoreError::ResultConflict {
            recorded_home: 2,
            recorded_away: 0,
            home: 2,
            away: 1,
            ..
        }
    ));
    assert!(!conflict.is_transient());
    let unfinish = store
        .set_match_status(match_id, MatchStatus::Postponed)
        .await
        .expect_err("finished is final");
    assert!(matches!(unfinish, StoreError::InvalidTransition { .. }));

    let missing = store.record_result(424_242, 1, 0).await.expect_err("missing");
    assert!(matches!(missing, StoreError::MatchNotFound { .. }));
}

#[tokio::test]
async fn ties_share_a_rank_and_the_next_rank_skips() {
    let (_db, store, client) = fresh().await;
    let (comp, home, away, match_id, _) = small_world(&client).await;
    // alice already exists: exact (3); bob and carol outcome (1); dave wrong (0).
    let alice: i64 = client
        .query_one("SELECT id FROM users WHERE username = 'alice'", &[])
        .await
        .expect("alice")
        .get(0);
    let bob = user(&client, "bob").await;
    let carol = user(&client, "carol").await;
    let dave = user(&client, "dave").await;
    predict(&client, alice, match_id, 2, 1).await;
    predict(&client, bob, match_id, 1, 0).await;
    predict(&client, carol, match_id, 3, 1).await;
    predict(&client, dave, match_id, 0, 0).await;
    crate::common::play(&store, match_id, 2, 1).await;

    for board in [None, Some(comp)] {
        let rows = store.leaderboard(board, 10, 0).await.expect("leaderboard");
        let got: Vec<(i64, i64, i64)> = rows.iter().map(|r| (r.user_id, r.points, r.rank)).collect();
        assert_eq!(
            got,
            vec![(alice, 3, 1), (bob, 1, 2), (carol, 1, 2), (dave, 0, 4)],
            "board {board:?}"
        );
    }
    // Paging keeps the ranks.
    let page = store.leaderboard(None, 2, 2).await.expect("page");
    let got: Vec<(i64, i64)> = page.iter().map(|r| (r.user_id, r.rank)).collect();
    assert_eq!(got, vec![(carol, 2), (dave, 4)]);
    // JSON shape used by the CLI.
    let json = serde_json::to_value(&page[0]).expect("json");
    assert_eq!(json["userId"], carol);
    assert_eq!(json["rank"], 2);
    assert_eq!(json["points"], 1);

    let standings = store.standings(comp).await.expect("standings");
    let got: Vec<(i64, i64, i64, i64)> = standings
        .iter()
        .map(|r| (r.position, r.team_id, r.points, r.goal_difference))
        .collect();
    assert_eq!(got, vec![(1, home, 3, 1), (2, away, 0, -1)]);

    let missing = store
        .leaderboard(Some(987), 10, 0)
        .await
        .expect_err("no such competition");
    assert!(matches!(
        missing,
        StoreError::CompetitionNotFound { competition_id: 987 }
    ));
    let missing = store.standings(987).await.expect_err("no such competition");
    assert!(matches!(
        missing,
        StoreError::CompetitionNotFound { competition_id: 987 }
    ));
}

#[tokio::test]
async fn standings_break_ties_by_goal_difference_then_goals_then_name() {
    let (_db, store, client) = fresh().await;
    let comp = competition(&client, "Tie League", 3, 1).await;
    let names = ["Delta", "Alpha", "Charlie", "Bravo", "Echo"];
    let mut ids = Vec::new();
    for name in names {
        ids.push(team(&client, name).await);
    }
    let [delta, alpha, charlie, bravo, echo] = ids[..] else {
        unreachable!("five teams")
    };
    // Everyone but Echo wins once and loses once (3 points each):
    // Alpha +2 (3-0 win, 0-1 loss), Bravo +2 with more goals (5-2, 1-2),
    // Charlie and Delta +1 with equal goals (2-0 / 0-1 each), so by name.
    let results = [
        (alpha, echo, 3, 0),
        (echo, alpha, 1, 0),
        (bravo, echo, 5, 2),
        (echo, bravo, 2, 1),
        (charlie, echo, 2, 0),
        (echo, charlie, 1, 0),
        (delta, echo, 2, 0),
        (echo, delta, 1, 0),
    ];
    for (h, a, hs, aws) in results {
        let m = fixture(&client, comp, h, a).await;
        store.record_result(m, hs, aws).await.expect("recorded");
    }
    // A scheduled fixture between two others changes nothing but exists.
    fixture(&client, comp, alpha, bravo).await;
    store.refresh_views(Scope::Standings).await.expect("refresh");
    let table = store.standings(comp).await.expect("standings");
    let order: Vec<(i64, i64)> = table.iter().map(|r| (r.team_id, r.points)).collect();
    assert_eq!(
        order,
        vec![(echo, 12), (bravo, 3), (alpha, 3), (charlie, 3), (delta, 3)]
    );
    let bravo_row = &table[1];
    assert_eq!(
        (bravo_row.played, bravo_row.won, bravo_row.drawn, bravo_row.lost),
        (2, 1, 0, 1)
    );
    assert_eq!(
        (bravo_row.goals_for, bravo_row.goals_against, bravo_row.goal_difference),
        (6, 4, 2)
    );
}
