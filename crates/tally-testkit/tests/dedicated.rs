//! Dedicated servers for chaos tests: Redis restarts with and without AOF,
//! Postgres stops and starts again, and both clean up when dropped.

use std::path::Path;
use std::time::Duration;

use redis::AsyncCommands as _;
use tally_testkit::{PostgresServer, RedisOptions, RedisServer};
use tokio_postgres::NoTls;

async fn connection(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

fn process_is_gone(pid: u32) -> bool {
    // A zombie has exited; only its parent's bookkeeping remains.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit(") ").next().is_some_and(|s| s.starts_with('Z'))
    })
}

fn assert_cleaned_up(pid: u32, dir: &Path) {
    assert!(process_is_gone(pid), "server {pid} still runs");
    assert!(!dir.exists(), "{} still exists", dir.display());
}

#[tokio::test]
async fn redis_with_appendonly_keeps_its_data_across_restart() {
    let mut server = RedisServer::start(RedisOptions {
        appendonly: true,
        ..RedisOptions::default()
    })
    .await
    .expect("start redis");
    let port = server.port();
    let first_pid = server.pid().expect("running");
    let _: () = connection(&server).await.set("survivor", "yes").await.expect("SET");

    server.restart().await.expect("restart");
    assert_eq!(server.port(), port, "same port");
    assert_ne!(server.pid(), Some(first_pid), "a new process");
    let value: Option<String> = connection(&server).await.get("survivor").await.expect("GET");
    assert_eq!(value.as_deref(), Some("yes"));

    let (pid, dir) = (server.pid().expect("running"), server.dir().to_owned());
    drop(server);
    assert_cleaned_up(pid, &dir);
}

#[tokio::test]
async fn redis_without_persistence_forgets_on_restart() {
    let mut server = RedisServer::start(RedisOptions::default()).await.expect("start redis");
    let _: () = connection(&server).await.set("ephemeral", "1").await.expect("SET");
    server.stop().await;
    assert_eq!(server.pid(), None);
    assert!(
        redis::Client::open(server.url())
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .is_err(),
        "stopped server still answers"
    );
    server.restart().await.expect("restart");
    let value: Option<String> = connection(&server).await.get("ephemeral").await.expect("GET");
    assert_eq!(value, None);
}

#[tokio::test]
async fn redis_extra_args_are_applied() {
    let server = RedisServer::start(RedisOptions {
        extra_args: vec!["--hz".into(), "50".into()],
        ..RedisOptions::default()
    })
    .await
    .expect("start redis");
    let hz: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("hz")
        .query_async(&mut connection(&server).await)
        .await
        .expect("CONFIG GET");
    assert_eq!(hz, ["hz", "50"]);
}

#[tokio::test]
async fn postgres_stops_and_starts_again_with_its_data() {
    let mut server = PostgresServer::start().await.expect("start postgres");
    let port = server.port();
    let url = server.url("postgres");
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.expect("connect");
    let task = tokio::spawn(connection);
    client
        .batch_execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42);")
        .await
        .expect("write");

    server.stop().await;
    assert_eq!(server.pid(), None);
    // The open session was cut by the fast shutdown.
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("connection task ends")
        .expect("task joins")
        .expect_err("connection ends with an error");
    assert!(
        tokio_postgres::connect(&url, NoTls).await.is_err(),
        "stopped server accepts"
    );

    server.start_again().await.expect("start again");
    assert_eq!(server.port(), port, "same port");
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.expect("reconnect");
    tokio::spawn(connection);
    let x: i32 = client.query_one("SELECT x FROM kept", &[]).await.expect("read").get(0);
    assert_eq!(x, 42);

    let (pid, dir) = (server.pid().expect("running"), server.dir().to_owned());
    drop(client);
    drop(server);
    assert_cleaned_up(pid, &dir);
}
