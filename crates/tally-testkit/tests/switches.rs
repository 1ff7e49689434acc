//! `TEST_REDIS_URL` and `TEST_DATABASE_URL` (the README's switches for
//! running the tests against servers of one's own): with them set, the kit
//! starts no server and uses the given ones. The child is this test binary
//! run again with the variables set, since the kit's servers are
//! process-wide.

use std::process::Command;

use tally_testkit::{PostgresServer, RedisOptions, RedisServer};

const CHILD: &str = "TALLY_TESTKIT_SWITCHES_CHILD";

/// Runs only in the child: uses the kit as any test would and leaves a mark
/// in each server it was handed.
#[tokio::test]
async fn switches_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let redis = tally_testkit::redis().await;
    assert_eq!(
        Some(redis.url.as_str()),
        std::env::var("TEST_REDIS_URL").ok().as_deref()
    );
    let mut conn = redis.connection().await;
    let _: () = redis::cmd("SET")
        .arg("switches:mark")
        .arg(std::process::id())
        .query_async(&mut conn)
        .await
        .expect("mark redis");
    let db = tally_testkit::database().await;
    let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(connection);
    client
        .batch_execute("CREATE TABLE mark (pid int)")
        .await
        .expect("use the test database");
    // The database lives on the server named by TEST_DATABASE_URL.
    let admin = std::env::var("TEST_DATABASE_URL").expect("set");
    let (admin_client, admin_conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .expect("connect to the given server");
    tokio::spawn(admin_conn);
    let found = admin_client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db.name])
        .await
        .expect("query");
    assert!(found.is_some(), "the test database {} is on the given server", db.name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_redis_url_and_test_database_url_are_used_instead_of_own_servers() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let redis = RedisServer::start(RedisOptions::default()).await.expect("redis");
    let postgres = PostgresServer::start().await.expect("postgres");
    let status = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "switches_child", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env("TEST_REDIS_URL", redis.url())
        .env("TEST_DATABASE_URL", postgres.url("postgres"))
        .status()
        .expect("run the child");
    assert!(status.success(), "the child failed: {status:?}");
    let mut conn = redis::Client::open(redis.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let mark: Option<u32> = redis::cmd("GET")
        .arg("switches:mark")
        .query_async(&mut conn)
        .await
        .expect("get");
    assert!(mark.is_some(), "the child used the Redis named by TEST_REDIS_URL");
}
