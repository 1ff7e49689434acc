//! Tests sharing one Redis and one Postgres stay isolated: two halves run
//! at the same time, write the same key name and the same table rows, and
//! each sees only its own.

use std::sync::Arc;

use redis::AsyncCommands as _;
use tokio::sync::Barrier;

/// One test's worth of work; `barrier` makes both halves write before either
/// reads, so a shared key or table would show the other's value.
async fn half(tag: &'static str, barrier: Arc<Barrier>) -> (String, String) {
    let redis = tally_testkit::redis().await;
    let db = tally_testkit::database().await;
    let mut conn = redis.connection().await;
    let client = db.client().await;

    let _: () = conn.set(redis.key("same-name"), tag).await.expect("SET");
    client
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY, owner text NOT NULL)")
        .await
        .expect("create table");
    client
        .execute("INSERT INTO items VALUES (1, $1)", &[&tag])
        .await
        .expect("insert");

    barrier.wait().await;

    let seen: String = conn.get(redis.key("same-name")).await.expect("GET");
    assert_eq!(seen, tag, "Redis value of namespace {}", redis.namespace);
    let owners: Vec<String> = client
        .query("SELECT owner FROM items ORDER BY id", &[])
        .await
        .expect("select")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(owners, [tag], "rows of database {}", db.name);

    // Keep both handles alive until both halves have read.
    barrier.wait().await;
    (redis.namespace, db.name.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_tests_see_only_their_own_data() {
    let barrier = Arc::new(Barrier::new(2));
    let a = tokio::spawn(half("a", Arc::clone(&barrier)));
    let b = tokio::spawn(half("b", barrier));
    let (a, b) = (a.await.expect("half a"), b.await.expect("half b"));
    assert_ne!(a.0, b.0, "namespaces differ");
    assert_ne!(a.1, b.1, "databases differ");
}

#[tokio::test]
async fn handles_have_the_documented_shape() {
    let redis = tally_testkit::redis().await;
    assert!(redis.namespace.starts_with("t-") && redis.namespace.len() == 10);
    assert_eq!(redis.key("jobs"), format!("{}:jobs", redis.namespace));
    if std::env::var_os("TEST_REDIS_URL").is_none() {
        // Our own server, never the machine's Redis on 6379.
        assert!(!redis.url.contains(":6379"), "{}", redis.url);
    }
    let db = tally_testkit::database().await;
    assert!(db.url.contains(&format!("/{}", db.name)), "{}", db.url);
    if std::env::var_os("TEST_DATABASE_URL").is_none() {
        assert!(!db.url.contains(":5432/"), "{}", db.url);
    }
}

#[tokio::test]
async fn dropping_a_test_database_drops_the_database() {
    let keep = tally_testkit::database().await;
    let dropped = tally_testkit::database().await;
    let name = dropped.name.clone();
    // An open connection must not stop the drop (WITH (FORCE)).
    let _open = dropped.client().await;
    drop(dropped);

    let client = keep.client().await;
    let count: i64 = client
        .query_one("SELECT count(*) FROM pg_database WHERE datname = $1", &[&name])
        .await
        .expect("query pg_database")
        .get(0);
    assert_eq!(count, 0, "database {name} still exists");
}
