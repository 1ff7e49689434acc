//! A writer that loses a race to a concurrent one is run again, a bounded
//! number of times, and the error is never a permanent failure.
//!
//! The race itself (two transactions inserting the same `user_totals` key)
//! is replayed with a trigger that raises `unique_violation` for the first
//! insert attempts, counted with a sequence (sequences ignore rollbacks).

use tally_store::StoreError;
use tally_store::store::RACE_ATTEMPTS;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use crate::common::{fresh, predict, small_world};

#[tokio::test]
async fn a_unique_violation_is_a_retryable_race_and_other_violations_are_not() {
    let (_db, _store, client) = fresh().await;
    let (_, _, _, match_id, user) = small_world(&client).await;
    predict(&client, user, match_id, 1, 0).await;

    let duplicate = client
        .batch_execute(&format!(
            "INSERT INTO predictions (user_id, match_id, home_score, away_score) VALUES ({user}, {match_id}, 2, 2)"
        ))
        .await
        .expect_err("duplicate key");
    assert_eq!(duplicate.code(), Some(&SqlState::UNIQUE_VIOLATION));
    let duplicate = StoreError::from(duplicate);
    assert!(duplicate.is_race(), "{duplicate}");
    assert!(
        duplicate.is_transient(),
        "a lost race is retried, not dead-lettered: {duplicate}"
    );
    assert!(!duplicate.is_unavailable(), "{duplicate}");

    let bad_score = client
        .batch_execute(&format!(
            "UPDATE predictions SET home_score = -1 WHERE user_id = {user} AND match_id = {match_id}"
        ))
        .await
        .expect_err("check violation");
    let bad_score = StoreError::from(bad_score);
    assert!(!bad_score.is_race() && !bad_score.is_transient(), "{bad_score}");
}

/// Makes the next `failures` inserts into `user_totals` fail as a lost race.
async fn lose_races(client: &Client, failures: i64) {
    client
        .batch_execute(&format!(
            "CREATE SEQUENCE insert_attempts;
             CREATE FUNCTION lose_race() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF nextval('insert_attempts') <= {failures} THEN
                     RAISE EXCEPTION 'duplicate key value violates unique constraint \"user_totals_pkey\"'
                         USING ERRCODE = 'unique_violation';
                 END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER lose_race BEFORE INSERT ON user_totals
                 FOR EACH ROW EXECUTE FUNCTION lose_race();"
        ))
        .await
        .expect("trigger");
}

async fn insert_attempts(client: &Client) -> i64 {
    client
        .query_one("SELECT last_value FROM insert_attempts", &[])
        .await
        .expect("sequence")
        .get(0)
}

#[tokio::test]
async fn points_run_again_after_losing_a_unique_race() {
    let (_db, store, client) = fresh().await;
    let (_, _, _, match_id, user) = small_world(&client).await;
    predict(&client, user, match_id, 1, 0).await;
    store.record_result(match_id, 1, 0).await.expect("result");
    store.score_match(match_id).await.expect("scored");
    lose_races(&client, 1).await;

    let outcome = store
        .calculate_points(match_id)
        .await
        .expect("the second run sees no race and commits");
    assert_eq!(outcome.changed, 2, "competition and overall rows");
    let points: i32 = client
        .query_one(
            "SELECT points FROM user_totals WHERE user_id = $1 AND board_id = 0",
            &[&user],
        )
        .await
        .expect("totals")
        .get(0);
    assert_eq!(points, 3);
}

#[tokio::test]
async fn a_race_lost_every_time_gives_up_after_a_few_runs_as_transient() {
    let (_db, store, client) = fresh().await;
    let (_, _, _, match_id, user) = small_world(&client).await;
    predict(&client, user, match_id, 1, 0).await;
    store.record_result(match_id, 1, 0).await.expect("result");
    store.score_match(match_id).await.expect("scored");
    lose_races(&client, i64::MAX).await;

    let error = store.calculate_points(match_id).await.expect_err("always loses");
    assert!(error.is_race() && error.is_transient(), "{error}");
    // One failing insert (the first row) per run.
    assert_eq!(insert_attempts(&client).await, i64::from(RACE_ATTEMPTS));
    let totals: i64 = client
        .query_one("SELECT count(*) FROM user_totals", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(totals, 0, "every run rolled back");
}
