//! The schema refuses impossible data, whoever writes it.

use tally_store::StoreError;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use crate::common::{fixture, fresh, predict, small_world, team};

async fn refused(client: &Client, sql: &str, expected: &SqlState) {
    let error = client
        .batch_execute(sql)
        .await
        .expect_err(&format!("should be refused: {sql}"));
    assert_eq!(error.code(), Some(expected), "{sql}: {error}");
}

#[tokio::test]
async fn bad_rows_are_rejected() {
    let (_db, _store, client) = fresh().await;
    let (comp, home, away, match_id, user) = small_world(&client).await;
    predict(&client, user, match_id, 1, 0).await;

    let cases: Vec<(String, SqlState)> = vec![
        (
            format!(
                "INSERT INTO predictions (user_id, match_id, home_score, away_score) VALUES ({user}, {match_id}, 2, 2)"
            ),
            SqlState::UNIQUE_VIOLATION,
        ),
        (
            format!(
                "INSERT INTO predictions (user_id, match_id, home_score, away_score) VALUES ({user}, 987654, 1, 0)"
            ),
            SqlState::FOREIGN_KEY_VIOLATION,
        ),
        (
            format!(
                "INSERT INTO predictions (user_id, match_id, home_score, away_score) VALUES (987654, {match_id}, 1, 0)"
            ),
            SqlState::FOREIGN_KEY_VIOLATION,
        ),
        (
            format!("UPDATE predictions SET home_score = -1 WHERE match_id = {match_id}"),
            SqlState::CHECK_VIOLATION,
        ),
        (
            format!("UPDATE predictions SET points = -3 WHERE match_id = {match_id}"),
            SqlState::CHECK_VIOLATION,
        ),
        (
            format!("UPDATE predictions SET voided = true, points = 3 WHERE match_id = {match_id}"),
            SqlState::CHECK_VIOLATION,
        ),
        (
            format!(
                "UPDATE predictions SET exact = true, correct_outcome = true, points = 3 WHERE match_id = {match_id}"
            ),
            SqlState::CHECK_VIOLATION,
        ),
        (
            format!("UPDATE matches SET status = 'finished' WHERE id = {match_id}"),
            SqlState::CHECK_VIOLATION,
        ),
        (
            format!("UPDATE matches SET home_score = 1 WHERE id = {match_id}"),
            SqlState::CHECK_VIOLATION,
        ),
        (
            format!("UPDATE matches SET home_score = -1, away_score = 0 WHERE id = {match_id}"),
            SqlState::CHECK_VIOLATION,
        ),
        (
            format!("UPDATE matches SET status = 'abandoned' WHERE id = {match_id}"),
            SqlState::CHECK_VIOLATION,
        ),
        (
            format!(
                "INSERT INTO matches (competition_id, home_team_id, away_team_id, kickoff_at) VALUES ({comp}, {home}, {home}, now())"
            ),
            SqlState::CHECK_VIOLATION,
        ),
        (
            format!(
                "INSERT INTO matches (competition_id, home_team_id, away_team_id, kickoff_at) VALUES (987654, {home}, {away}, now())"
            ),
            SqlState::FOREIGN_KEY_VIOLATION,
        ),
        (
            "INSERT INTO competitions (name, points_exact, points_outcome) VALUES ('Upside down', 1, 3)".to_owned(),
            SqlState::CHECK_VIOLATION,
        ),
        (
            "INSERT INTO competitions (name, points_exact, points_outcome) VALUES ('Negative', 3, -1)".to_owned(),
            SqlState::CHECK_VIOLATION,
        ),
        (
            format!("DELETE FROM matches WHERE id = {match_id}"),
            SqlState::FOREIGN_KEY_VIOLATION,
        ),
    ];
    for (sql, code) in &cases {
        refused(&client, sql, code).await;
    }

    // The good version of the same data is accepted.
    client
        .batch_execute(&format!(
            "UPDATE matches SET status = 'finished', home_score = 0, away_score = 0 WHERE id = {match_id}"
        ))
        .await
        .expect("a finished match with a score is fine");
}

#[tokio::test]
async fn bad_results_are_refused_before_the_database() {
    let (_db, store, client) = fresh().await;
    let (_, _, _, match_id, _) = small_world(&client).await;
    for (home, away) in [(-1, 0), (0, -2), (100, 0), (i32::MIN, i32::MAX)] {
        let error = store
            .record_result(match_id, home, away)
            .await
            .expect_err("invalid score");
        assert!(matches!(error, StoreError::InvalidScore { .. }), "{error}");
    }
    // A team can play in many competitions and many matches.
    let other = team(&client, "Third FC").await;
    let comp: i64 = client
        .query_one("SELECT competition_id FROM matches WHERE id = $1", &[&match_id])
        .await
        .expect("competition")
        .get(0);
    let home: i64 = client
        .query_one("SELECT home_team_id FROM matches WHERE id = $1", &[&match_id])
        .await
        .expect("home")
        .get(0);
    fixture(&client, comp, home, other).await;
}

#[tokio::test]
async fn a_seeded_database_keeps_its_foreign_keys() {
    // The seed drops the predictions' foreign keys for its COPY and re-adds
    // them; they must be back, validated, and enforcing.
    let options = tally_store::seed::SeedOptions {
        users: 30,
        predictions: 300,
        competitions: 1,
        teams_per_competition: 4,
        played_fraction: 0.5,
        seed: 5,
    };
    let (_db, _store, client, _) = crate::common::seeded(&options).await;
    let validated: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_constraint
             WHERE conrelid = 'predictions'::regclass AND contype = 'f' AND convalidated",
            &[],
        )
        .await
        .expect("constraints")
        .get(0);
    assert_eq!(validated, 2);
    refused(
        &client,
        "INSERT INTO predictions (user_id, match_id, home_score, away_score) VALUES (1, 987654, 1, 0)",
        &SqlState::FOREIGN_KEY_VIOLATION,
    )
    .await;
    refused(
        &client,
        "INSERT INTO predictions (user_id, match_id, home_score, away_score) VALUES (987654, 1, 1, 0)",
        &SqlState::FOREIGN_KEY_VIOLATION,
    )
    .await;
}
