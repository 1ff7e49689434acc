//! The `tally` command as an operator types it: the real binary, run as a
//! process against a throwaway Redis, checked by exit code, output and what
//! it left in the queues. Usage errors exit 2 (as clap's own do) and touch
//! nothing.

use std::process::{Command, Output};

use tally_queue::{QueueAdmin, QueueClient, QueueConfig, QueueKeys};
use tally_testkit::TestRedis;

/// Runs `tally args…` with only the queue settings in its environment.
fn tally(redis: &TestRedis, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tally"))
        .env_clear()
        .env("REDIS_URL", &redis.url)
        .env("TALLY_QUEUE_PREFIX", &redis.namespace)
        .args(args)
        .output()
        .expect("tally runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn client(redis: &TestRedis) -> QueueClient {
    QueueClient::new(&redis.url, QueueConfig::with_prefix(&redis.namespace)).expect("client")
}

/// Puts dead-set entries with no stored envelope, as the engine leaves a job
/// whose envelope was already gone when it died: `(id, died at ms)`.
async fn bury_without_envelope(redis: &TestRedis, keys: &QueueKeys, dead: &[(String, u64)]) {
    let mut conn = redis.connection().await;
    for chunk in dead.chunks(500) {
        let mut pipe = redis::pipe();
        for (id, died_at_ms) in chunk {
            let info = serde_json::json!({
                "id": id,
                "error": "envelope missing",
                "attempts": 1,
                "crashes": 0,
                "errors": 1,
                "diedAtMs": died_at_ms,
            });
            pipe.zadd(keys.dead(), id, *died_at_ms)
                .hset(keys.dead_info(), id, info.to_string());
        }
        let () = pipe.query_async(&mut conn).await.expect("bury");
    }
}

#[tokio::test]
async fn purge_older_than_an_age_that_overflows_is_a_usage_error() {
    let redis = tally_testkit::redis().await;
    let client = client(&redis);
    let admin = QueueAdmin::new(client.clone());
    let queue = "stats";
    // One job that died an hour ago.
    let now = tally_queue::now_ms();
    bury_without_envelope(&redis, &client.keys(queue), &[("old".to_owned(), now - 3_600_000)]).await;

    // 3007844103129863 hours fits in seconds but its milliseconds wrap
    // around to 1.4 s, which would purge every job dead for longer than that;
    // u64::MAX hours overflows the seconds; 5124095576031 is the first value
    // whose milliseconds do not fit.
    for hours in ["3007844103129863", "18446744073709551615", "5124095576031"] {
        let out = tally(
            &redis,
            &["queue", "dead", "purge", "--queue", queue, "--older-than-hours", hours],
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{hours}: {err}{}", stdout(&out));
        assert!(
            err.contains("--older-than-hours") && err.contains("at most 5124095576030 hours"),
            "{hours}: {err}"
        );
        assert!(!err.contains("panicked"), "{hours}: {err}");
        assert_eq!(
            admin.stats(queue).await.expect("stats").dead,
            1,
            "{hours}: nothing purged"
        );
    }
    // Not even a u64.
    let out = tally(
        &redis,
        &[
            "queue",
            "dead",
            "purge",
            "--older-than-hours",
            "99999999999999999999999",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // The largest age accepted works, and purges nothing younger.
    let out = tally(
        &redis,
        &[
            "queue",
            "dead",
            "purge",
            "--queue",
            queue,
            "--older-than-hours",
            "5124095576030",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "0 dead job(s) of stats purged");
    // And an ordinary one still purges what it should.
    let out = tally(
        &redis,
        &["queue", "dead", "purge", "--queue", queue, "--older-than-hours", "0"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "1 dead job(s) of stats purged");
}
