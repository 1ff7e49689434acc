//! A job attempt's database work ends with the attempt.
//!
//! Each test parks a store call behind a row lock that another connection
//! holds, as a slow or stuck concurrent writer would, then checks from
//! `pg_stat_activity` that nothing of the attempt is left running on the
//! server, and that the pool (a single connection, so a busy one would be
//! noticed) still serves the next call while the lock is still held.

use std::time::{Duration, Instant};

use tally_store::{Budget, Store};
use tokio_postgres::Client;

use crate::common::{fresh, predict, small_world};

/// A match with one prediction and a result, ready to score.
async fn finished_match(client: &Client) -> i64 {
    let (_, _, _, match_id, user) = small_world(client).await;
    predict(client, user, match_id, 2, 1).await;
    client
        .execute(
            "UPDATE matches SET status = 'finished', home_score = 2, away_score = 1, finished_at = now()
             WHERE id = $1",
            &[&match_id],
        )
        .await
        .expect("result recorded");
    match_id
}

/// Another connection holding the match row's lock in an open transaction.
async fn lock_match(db: &tally_testkit::TestDatabase, match_id: i64) -> Client {
    let holder = db.client().await;
    holder.batch_execute("BEGIN").await.expect("begin");
    holder
        .execute("SELECT 1 FROM matches WHERE id = $1 FOR UPDATE", &[&match_id])
        .await
        .expect("row locked");
    holder
}

/// Statements running in this database other than the observer's own
/// (the lock holder is `idle in transaction`, not active).
async fn running(observer: &Client) -> Vec<String> {
    observer
        .query(
            "SELECT coalesce(wait_event_type, '-') || ' ' || query FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'active'",
            &[],
        )
        .await
        .expect("pg_stat_activity")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Waits up to `within` for `running` to come back empty; returns what is
/// still running at the end.
async fn settles(observer: &Client, within: Duration) -> Vec<String> {
    let until = Instant::now() + within;
    loop {
        let left = running(observer).await;
        if left.is_empty() || Instant::now() >= until {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The backend pid of the pool's (single) connection.
async fn pooled_pid(store: &Store) -> i32 {
    let client = store.pool().get().await.expect("pooled connection");
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_wait_is_cut_off_within_the_attempt_budget_and_the_connection_is_reused() {
    let (db, _, client) = fresh().await;
    let match_id = finished_match(&client).await;
    let store = Store::connect(&db.url, 1).await.expect("store of one connection");
    let pid = pooled_pid(&store).await;
    let holder = lock_match(&db, match_id).await;

    let budget = Duration::from_millis(600);
    let started = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        store.with_budget(Budget::within(budget)).score_match(match_id),
    )
    .await
    .expect("the database must stop the lock wait; it was still waiting after 10 s");
    let took = started.elapsed();
    let error = result.expect_err("the lock is held for longer than the budget");
    assert!(error.is_timeout(), "lock_timeout / statement_timeout: {error}");
    assert!(error.is_transient(), "a timed-out attempt is retried: {error}");
    assert!(!error.is_unavailable(), "not an outage: {error}");
    assert!(took <= budget + Duration::from_millis(300), "cut off after {took:?}");

    // A moment is allowed for the aborted transaction's ROLLBACK.
    let left = settles(&client, Duration::from_secs(2)).await;
    assert!(left.is_empty(), "nothing of the attempt keeps running: {left:?}");
    // The same connection came back to the pool, idle and without the
    // attempt's timeouts, while the lock is still held.
    let pooled = store.pool().get().await.expect("pooled connection");
    let row = pooled
        .query_one(
            "SELECT pg_backend_pid(), current_setting('statement_timeout'), current_setting('lock_timeout')",
            &[],
        )
        .await
        .expect("the connection answers");
    assert_eq!(row.get::<_, i32>(0), pid, "the connection was reused, not replaced");
    assert_eq!(
        (row.get::<_, String>(1), row.get::<_, String>(2)),
        ("0".to_owned(), "0".to_owned()),
        "SET LOCAL did not leak into the session"
    );
    drop(pooled);

    holder.batch_execute("COMMIT").await.expect("lock released");
    let scored = store
        .with_budget(Budget::within(Duration::from_secs(10)))
        .score_match(match_id)
        .await
        .expect("scores once the lock is free");
    assert_eq!(scored.predictions, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_attempt_cancels_its_statement_and_the_pool_keeps_working() {
    let (db, _, client) = fresh().await;
    let match_id = finished_match(&client).await;
    // Unbounded: only the drop can stop the statement.
    let store = Store::connect(&db.url, 1).await.expect("store of one connection");
    let holder = lock_match(&db, match_id).await;

    let attempt = tokio::time::timeout(Duration::from_millis(300), store.score_match(match_id)).await;
    assert!(
        attempt.is_err(),
        "the call waits on the lock until dropped: {attempt:?}"
    );

    let left = settles(&client, Duration::from_secs(3)).await;
    assert!(left.is_empty(), "the abandoned statement was cancelled: {left:?}");

    // The lock is still held: a connection busy with the abandoned
    // statement would make this wait behind it.
    tokio::time::timeout(Duration::from_secs(3), store.ping())
        .await
        .expect("the pool hands out a usable connection")
        .expect("ping");
    let locked_out = tokio::time::timeout(
        Duration::from_secs(5),
        store
            .with_budget(Budget::within(Duration::from_millis(300)))
            .score_match(match_id),
    )
    .await
    .expect("bounded");
    assert!(locked_out.is_err_and(|e| e.is_timeout()), "still locked, still bounded");

    holder.batch_execute("ROLLBACK").await.expect("lock released");
    let scored = store.score_match(match_id).await.expect("scores once the lock is free");
    assert_eq!(scored.predictions, 1);
    assert!(settles(&client, Duration::from_secs(1)).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_transaction_stops_a_long_statement() {
    // A statement that waits on no lock (pg_sleep) is stopped by the
    // statement_timeout of a transaction started by the store's helper.
    let (db, store, client) = fresh().await;
    let mut conn = db.client().await;
    let tx = tally_store::tx::begin(
        &mut conn,
        tokio_postgres::IsolationLevel::ReadCommitted,
        Budget::within(Duration::from_millis(400)),
    )
    .await
    .expect("begin");
    let started = Instant::now();
    let error = tx
        .batch_execute("SELECT pg_sleep(30)")
        .await
        .expect_err("statement_timeout stops the sleep");
    assert!(tally_store::StoreError::from(error).is_timeout());
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    drop(tx);
    assert!(settles(&client, Duration::from_secs(1)).await.is_empty());
    store.ping().await.expect("pool unaffected");
}
