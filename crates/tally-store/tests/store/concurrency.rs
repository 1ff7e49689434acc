//! Idempotency and concurrency of scoring and points.
//!
//! Concurrent runs use separate pooled connections. A deadlock would surface
//! as an error (Postgres detects it and aborts a victim), failing the test.

use futures::future::join_all;
use tally_store::seed::SeedOptions;
use tokio_postgres::Client;

use crate::common::seeded;

fn options(seed: u64) -> SeedOptions {
    SeedOptions {
        users: 150,
        predictions: 150 * 20,
        competitions: 2,
        teams_per_competition: 6,
        played_fraction: 0.4,
        seed,
    }
}

async fn prediction_rows(client: &Client, match_id: i64) -> Vec<String> {
    client
        .query(
            "SELECT p::text FROM predictions AS p WHERE match_id = $1 ORDER BY user_id",
            &[&match_id],
        )
        .await
        .expect("predictions")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn totals_rows(client: &Client) -> Vec<String> {
    client
        .query(
            "SELECT (board_id, user_id, points, exact_scores, correct_outcomes, predictions_scored)::text
             FROM user_totals ORDER BY board_id, user_id",
            &[],
        )
        .await
        .expect("totals")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Totals recomputed from scratch by a plain GROUP BY, in the same text shape.
async fn expected_totals(client: &Client) -> Vec<String> {
    client
        .query(
            "WITH per AS (
                 SELECT m.competition_id AS board_id, p.user_id,
                        coalesce(sum(p.points), 0)::int AS points,
                        (count(*) FILTER (WHERE p.exact))::int AS exact_scores,
                        (count(*) FILTER (WHERE p.correct_outcome))::int AS correct_outcomes,
                        count(p.points)::int AS scored
                 FROM predictions p JOIN matches m ON m.id = p.match_id
                 GROUP BY 1, 2
             ), boards AS (
                 SELECT * FROM per
                 UNION ALL
                 SELECT 0, user_id, sum(points)::int, sum(exact_scores)::int,
                        sum(correct_outcomes)::int, sum(scored)::int
                 FROM per GROUP BY user_id
             )
             SELECT (board_id, user_id, points, exact_scores, correct_outcomes, scored)::text
             FROM boards ORDER BY board_id, user_id",
            &[],
        )
        .await
        .expect("expected totals")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoring_twice_and_concurrently_gives_identical_rows() {
    let (_db, store, client, summary) = seeded(&options(7)).await;
    let match_id = summary.open_match_ids[0];
    store.record_result(match_id, 2, 1).await.expect("recorded");

    let (a, b) = tokio::join!(store.score_match(match_id), store.score_match(match_id));
    let (a, b) = (a.expect("run a"), b.expect("run b"));
    assert!(a.predictions > 0);
    assert_eq!(a.predictions, b.predictions);
    // Together they scored each prediction exactly once.
    assert_eq!(a.changed + b.changed, a.predictions);
    let after_concurrent = prediction_rows(&client, match_id).await;

    let again = store.score_match(match_id).await.expect("third run");
    assert_eq!(again.changed, 0);
    assert_eq!(prediction_rows(&client, match_id).await, after_concurrent);
    assert_eq!((again.exact, again.correct_outcome), (a.exact, a.correct_outcome));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_twice_and_concurrently_give_identical_rows() {
    let (_db, store, client, summary) = seeded(&options(8)).await;
    let match_id = summary.open_match_ids[0];
    store.record_result(match_id, 0, 0).await.expect("recorded");
    store.score_match(match_id).await.expect("scored");

    let (a, b) = tokio::join!(store.calculate_points(match_id), store.calculate_points(match_id));
    let (a, b) = (a.expect("run a"), b.expect("run b"));
    assert_eq!(a.users, b.users);
    assert!(a.changed + b.changed > 0);
    let after_concurrent = totals_rows(&client).await;
    assert_eq!(after_concurrent, expected_totals(&client).await);

    let again = store.calculate_points(match_id).await.expect("third run");
    assert_eq!(again.changed, 0, "a repeat changes nothing");
    assert_eq!(totals_rows(&client).await, after_concurrent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_points_for_different_matches_of_the_same_users() {
    // Every user predicts every match, so all runs share all users.
    let options = SeedOptions {
        users: 60,
        predictions: 60 * 60,
        competitions: 2,
        teams_per_competition: 6,
        played_fraction: 0.0,
        seed: 9,
    };
    let (_db, store, client, summary) = seeded(&options).await;
    assert_eq!(summary.matches, 60);
    let mut played = 0usize;
    for batch in summary.open_match_ids.chunks(8).take(4) {
        // Each task is one match's chain (result, scoring, points), all
        // running at once: every points run overlaps the scoring of other
        // matches of the same users, the interleaving that would lose
        // points if totals were computed before taking the users' locks.
        let chains = batch.iter().enumerate().map(|(i, &m)| {
            let store = store.clone();
            tokio::spawn(async move {
                store.record_result(m, (i % 4) as i32, (i % 3) as i32).await?;
                store.score_match(m).await?;
                store.calculate_points(m).await
            })
        });
        for outcome in join_all(chains).await {
            let outcome = outcome.expect("task").expect("no deadlock, no error");
            assert_eq!(outcome.users, 60);
        }
        // Duplicate deliveries, in reverse order, all at once.
        let repeats = batch.iter().rev().map(|&m| store.calculate_points(m));
        for outcome in join_all(repeats).await {
            outcome.expect("no deadlock, no error");
        }
        played += batch.len();
        assert_eq!(
            totals_rows(&client).await,
            expected_totals(&client).await,
            "after {played} matches"
        );
    }
    // And the published boards follow.
    store.refresh_views(tally_store::Scope::All).await.expect("refresh");
    let board = store.leaderboard(None, 1000, 0).await.expect("board");
    assert_eq!(board.len(), 60);
    let expected: i64 = client
        .query_one("SELECT coalesce(sum(points), 0)::bigint FROM predictions", &[])
        .await
        .expect("sum")
        .get(0);
    assert_eq!(board.iter().map(|r| r.points).sum::<i64>(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_and_points_publish_the_final_totals() {
    let (_db, store, client, summary) = seeded(&options(10)).await;
    let matches: Vec<i64> = summary.open_match_ids.iter().copied().take(6).collect();
    for &m in &matches {
        store.record_result(m, 1, 2).await.expect("recorded");
        store.score_match(m).await.expect("scored");
    }
    // Points and refreshes interleaved from several connections.
    let points = matches.iter().map(|&m| {
        let store = store.clone();
        tokio::spawn(async move { store.calculate_points(m).await.map(|_| ()) })
    });
    let refreshes = (0..4).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.refresh_views(tally_store::Scope::All).await.map(|_| ()) })
    });
    for task in join_all(points.chain(refreshes)).await {
        task.expect("task").expect("no error");
    }
    // The job that committed points enqueues one more refresh afterwards.
    store
        .refresh_views(tally_store::Scope::All)
        .await
        .expect("final refresh");
    let published: Vec<String> = client
        .query(
            "SELECT (board_id, user_id, points, exact_scores, correct_outcomes, predictions_scored)::text
             FROM leaderboard_entries ORDER BY board_id, user_id",
            &[],
        )
        .await
        .expect("entries")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let expected: Vec<String> = client
        .query(
            "SELECT (board_id, user_id, points, exact_scores, correct_outcomes, predictions_scored)::text
             FROM user_totals WHERE predictions_scored > 0 ORDER BY board_id, user_id",
            &[],
        )
        .await
        .expect("totals")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(published, expected);
    assert_eq!(totals_rows(&client).await, expected_totals(&client).await);
    let dirty: i64 = client
        .query_one("SELECT count(*) FROM leaderboard_changes", &[])
        .await
        .expect("dirty")
        .get(0);
    assert_eq!(dirty, 0);
}

#[tokio::test]
async fn rebuild_totals_repairs_drift_and_is_idempotent() {
    let (_db, store, client, summary) = seeded(&options(12)).await;
    crate::common::play(&store, summary.open_match_ids[0], 1, 0).await;
    assert_eq!(store.rebuild_totals().await.expect("rebuild"), 0, "consistent already");

    client
        .batch_execute("UPDATE user_totals SET points = points + 5 WHERE user_id IN (1, 2)")
        .await
        .expect("drift");
    let repaired = store.rebuild_totals().await.expect("rebuild");
    assert!(repaired >= 2, "the drifted rows are rewritten: {repaired}");
    assert_eq!(totals_rows(&client).await, expected_totals(&client).await);
    assert_eq!(store.rebuild_totals().await.expect("again"), 0);
    // The repair is listed for the next refresh like any points change.
    let refreshed = store
        .refresh_views(tally_store::Scope::Leaderboard)
        .await
        .expect("refresh");
    assert_eq!(refreshed.leaderboard_claimed, repaired);
}
