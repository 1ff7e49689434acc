//! The `tally` command as an operator types it: the real binary, run as a
//! process against a throwaway Redis, checked by exit code, output and what
//! it left in the queues. Usage errors exit 2 (as clap's own do) and touch
//! nothing.

use std::{
    process::{Command, Output},
    time::Duration,
};

use tally_jobs::{CalculatePoints, Job as _, Priority, ScoreMatch};
use tally_queue::{JobContext, JobError, Producer, QueueAdmin, QueueClient, QueueConfig, QueueKeys, Worker};
use tally_testkit::TestRedis;
use tokio::sync::oneshot;

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

/// Runs `tally args…` with only `env` in its environment.
fn tally_env(env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tally"))
        .env_clear()
        .envs(env.iter().copied())
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

/// Enqueues `n` `CalculatePoints` jobs and lets a worker give each up, so
/// they land in the dead set with their envelopes, the way real jobs do.
async fn bury_real_jobs(client: &QueueClient, n: i64) -> Vec<String> {
    let producer = Producer::new(client.clone());
    let mut ids = Vec::new();
    for match_id in 1..=n {
        let job = CalculatePoints {
            match_id,
            priority: Priority::Normal,
        };
        ids.push(producer.enqueue(&job).await.expect("enqueue").id);
    }
    let worker = Worker::builder(client.clone(), CalculatePoints::QUEUE)
        .handle(|_job: CalculatePoints, _ctx: JobContext| async {
            Err::<(), _>(JobError::GiveUp("broken on purpose".into()))
        })
        .build()
        .expect("worker");
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
    }));
    let admin = QueueAdmin::new(client.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while admin.stats(CalculatePoints::QUEUE).await.expect("stats").dead < n as u64 {
        assert!(tokio::time::Instant::now() < deadline, "jobs did not die");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    running.await.expect("joined").expect("worker stops");
    ids
}

#[tokio::test]
async fn dead_retry_all_goes_past_pages_of_jobs_without_envelopes() {
    let redis = tally_testkit::redis().await;
    let client = client(&redis);
    let admin = QueueAdmin::new(client.clone());
    let queue = CalculatePoints::QUEUE;
    let real = bury_real_jobs(&client, 20).await;
    // More envelope-less jobs than one page of the engine's retry, all
    // older than the real ones, so they fill the first pages.
    let now = tally_queue::now_ms();
    let ghosts: Vec<(String, u64)> = (0..1500_u64)
        .map(|i| (format!("ghost-{i}"), now - 3_600_000 - i))
        .collect();
    bury_without_envelope(&redis, &client.keys(queue), &ghosts).await;
    assert_eq!(admin.stats(queue).await.expect("stats").dead, 1520);

    let out = tally(&redis, &["queue", "dead", "retry", "--queue", queue, "--all"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("20 dead job(s) of stats put back on the ready list"),
        "{text}"
    );
    assert!(text.contains("1500 skipped"), "{text}");
    let stats = admin.stats(queue).await.expect("stats");
    assert_eq!(stats.ready, 20, "every job with an envelope is back: {stats:?}");
    assert_eq!(
        stats.dead, 1500,
        "the envelope-less ones stay for inspection: {stats:?}"
    );
    for id in &real {
        assert!(
            admin.dead_get(queue, id).await.expect("get").is_none(),
            "{id} still dead"
        );
    }

    // Nothing left to retry: a second run says so and changes nothing.
    let again = tally(&redis, &["--json", "queue", "dead", "retry", "--queue", queue, "--all"]);
    assert!(again.status.success(), "{}", stderr(&again));
    let summary: serde_json::Value = serde_json::from_slice(&again.stdout).expect("JSON");
    assert_eq!(summary["retried"], 0, "{summary}");
    assert_eq!(summary["skipped"], 1500, "{summary}");
    assert_eq!(admin.stats(queue).await.expect("stats").ready, 20);
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

#[tokio::test]
async fn ids_below_one_are_refused_and_nothing_is_enqueued() {
    let redis = tally_testkit::redis().await;
    let admin = QueueAdmin::new(client(&redis));
    let refused: [&[&str]; 6] = [
        &["enqueue", "score-match", "0"],
        &["match", "finish", "0", "2", "1"],
        &["match", "postpone", "0"],
        &["match", "cancel", "0"],
        &["leaderboard", "--competition", "0"],
        &["standings", "--competition", "0"],
    ];
    for args in refused {
        let out = tally(&redis, args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}{}", stdout(&out));
        assert!(err.contains("'0'") && err.contains("ids start at 1"), "{args:?}: {err}");
    }
    // A negative id is not even an argument.
    let out = tally(&redis, &["enqueue", "score-match", "--", "-5"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("ids start at 1"), "{}", stderr(&out));
    assert_eq!(
        admin.stats(ScoreMatch::QUEUE).await.expect("stats").ready,
        0,
        "nothing enqueued"
    );

    // Id 1 is fine.
    let out = tally(&redis, &["enqueue", "score-match", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(admin.stats(ScoreMatch::QUEUE).await.expect("stats").ready, 1);
}

#[tokio::test]
async fn match_finish_commits_the_result_and_its_job_together_even_with_redis_away() {
    let db = tally_testkit::database().await;
    tally_store::migrate_url(&db.url).await.expect("migrated");
    let store = tally_store::Store::connect(&db.url, 2).await.expect("store");
    let summary = store
        .seed(
            &tally_store::seed::SeedOptions {
                users: 20,
                predictions: 200,
                competitions: 1,
                teams_per_competition: 4,
                played_fraction: 0.5,
                seed: 5,
            },
            &|_| {},
        )
        .await
        .expect("seeded");
    let open = summary.open_match_ids[0];
    // Nothing listens on port 1: the job must not need Redis now.
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tally"))
            .env_clear()
            .env("DATABASE_URL", &db.url)
            .env("REDIS_URL", "redis://127.0.0.1:1")
            .args(args)
            .output()
            .expect("tally runs")
    };
    let out = run(&["--json", "match", "finish", &open.to_string(), "2", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let row = answer["outboxRow"].as_i64().expect("outbox row");
    assert_eq!(answer["jobId"], format!("outbox-{row}"), "{answer}");
    assert_eq!(
        answer["database"],
        tally_service::redact_url(&db.url),
        "the database used: {answer}"
    );
    assert_eq!(
        (answer["matchId"].as_i64(), answer["deduplicated"].as_bool()),
        (Some(open), Some(false))
    );
    let client = db.client().await;
    let (status, kind, match_id): (String, String, i64) = {
        let r = client
            .query_one(
                "SELECT m.status, o.envelope ->> 'kind', (o.envelope -> 'payload' ->> 'matchId')::bigint
                 FROM matches m, job_outbox o WHERE m.id = $1 AND o.id = $2",
                &[&open, &row],
            )
            .await
            .expect("both committed");
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(
        (status.as_str(), kind.as_str(), match_id),
        ("finished", "score_match", open)
    );

    // A conflicting result is refused with a clear error, and writes no job.
    let out = run(&["match", "finish", &open.to_string(), "0", "0"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("already finished 2-1, refusing 0-0"),
        "{}",
        stderr(&out)
    );
    let rows: i64 = client
        .query_one("SELECT count(*) FROM job_outbox", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 1);

    // `queue stats` shows the job waiting in the outbox (the queues
    // themselves need Redis: a private one here).
    let redis = tally_testkit::redis().await;
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .env("REDIS_URL", &redis.url)
        .env("TALLY_QUEUE_PREFIX", &redis.namespace)
        .args(["--json", "queue", "stats"])
        .output()
        .expect("tally runs");
    assert!(out.status.success(), "{}", stderr(&out));
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(stats["outbox"]["pending"], 1, "{stats}");
    assert_eq!(stats["database"], tally_service::redact_url(&db.url), "{stats}");
    assert_eq!(stats["redis"], redis.url.as_str(), "{stats}");
    assert_eq!(stats["outbox"]["rejected"], 0, "{stats}");
    assert!(stats["outbox"]["oldestPendingAgeMs"].is_u64(), "{stats}");
    assert!(stats["queues"]["scoring"].is_object(), "{stats}");
}

/// Runs `tally args…` with an empty environment (no REDIS_URL).
fn tally_bare(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tally"))
        .env_clear()
        .args(args)
        .output()
        .expect("tally runs")
}

#[tokio::test]
async fn without_redis_url_no_command_falls_back_to_a_default_redis() {
    // Writing and reading alike: a default Redis could be an unrelated one.
    for args in [
        &["enqueue", "refresh-views"][..],
        &["enqueue", "score-match", "7"],
        &["queue", "dead", "retry", "--all"],
        &["queue", "dead", "purge", "--all"],
        &["queue", "dead", "list"],
        &["--json", "queue", "stats"],
    ] {
        let out = tally_bare(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "tally {args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "tally {args:?}: one line, got {err}");
        assert!(
            err.contains("REDIS_URL is not set") && err.contains("--redis-url"),
            "tally {args:?}: {err}"
        );
        assert!(out.stdout.is_empty(), "tally {args:?}: {}", stdout(&out));
    }

    // The flag is enough, and the output says which Redis was used.
    let redis = tally_testkit::redis().await;
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .env_clear()
        .env("TALLY_QUEUE_PREFIX", &redis.namespace)
        .args([
            "--redis-url",
            &redis.url,
            "--verbose",
            "--json",
            "enqueue",
            "refresh-views",
        ])
        .output()
        .expect("tally runs");
    assert!(out.status.success(), "{}", stderr(&out));
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(job["redis"], redis.url.as_str(), "{job}");
    assert!(job["id"].is_string(), "the job's own fields stay: {job}");
    assert_eq!(job["jobId"], job["id"], "named as match finish names it: {job}");
    assert!(
        stderr(&out).contains(&format!("redis: {}", redis.url)),
        "--verbose names the Redis: {}",
        stderr(&out)
    );
    let stats = tally(&redis, &["--json", "queue", "stats"]);
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).expect("JSON");
    assert_eq!(stats["redis"], redis.url.as_str(), "{stats}");
    assert_eq!(stats["queues"]["stats"]["ready"], 1, "{stats}");

    // A password never shows.
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .env_clear()
        .env("REDIS_URL", "redis://:s3cret@127.0.0.1:1")
        .args(["--verbose", "queue", "stats"])
        .output()
        .expect("tally runs");
    let err = stderr(&out);
    assert!(err.contains("redis: redis://:***@127.0.0.1:1"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
}

#[test]
fn help_does_not_show_unset_settings_as_empty() {
    let out = tally_bare(&["--help"]);
    assert!(out.status.success());
    let help = stdout(&out);
    assert!(help.contains("[env: TALLY_QUEUE_PREFIX]"), "{help}");
    assert!(!help.contains("TALLY_QUEUE_PREFIX=]"), "{help}");
}

#[test]
fn verbose_shows_a_url_without_password_as_it_is() {
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .env_clear()
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none")
        .args(["--verbose", "standings", "--competition", "1"])
        .output()
        .expect("tally runs");
    let err = stderr(&out);
    assert!(err.contains("database: postgres://postgres@127.0.0.1:1/none"), "{err}");
    assert!(!err.contains("***"), "no password to hide: {err}");
}

#[tokio::test]
async fn dead_jobs_are_listed_on_every_queue_and_unknown_ids_or_queues_are_errors() {
    let redis = tally_testkit::redis().await;
    let client = client(&redis);
    let admin = QueueAdmin::new(client.clone());
    let now = tally_queue::now_ms();
    bury_without_envelope(&redis, &client.keys(ScoreMatch::QUEUE), &[("lost-1".to_owned(), now)]).await;

    // The dead job on `scoring` shows without naming the queue.
    let out = tally(&redis, &["queue", "dead", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("lost-1"), "{}", stdout(&out));
    let out = tally(&redis, &["--json", "queue", "dead", "list"]);
    let jobs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(jobs[0]["id"], "lost-1", "{jobs}");
    assert_eq!(jobs[0]["queue"], "scoring", "{jobs}");

    // An id that is not dead is an error, and nothing is touched.
    for verb in ["retry", "purge"] {
        let out = tally(
            &redis,
            &["queue", "dead", verb, "--queue", "scoring", "not-an-id", "lost-1"],
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{verb}: {err}");
        assert!(
            err.contains("not-an-id") && err.contains("tally queue dead list"),
            "{verb}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{verb}: {err}");
        assert_eq!(admin.stats(ScoreMatch::QUEUE).await.expect("stats").dead, 1, "{verb}");
    }

    // An unknown queue is a usage error everywhere.
    for args in [
        &["queue", "stats", "--queue", "nosuch"][..],
        &["queue", "dead", "list", "--queue", "nosuch"],
        &["queue", "dead", "retry", "--queue", "nosuch", "--all"],
        &["queue", "dead", "purge", "--queue", "nosuch", "--all"],
    ] {
        let out = tally(&redis, args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("nosuch") && err.contains("scoring"), "{args:?}: {err}");
    }

    // A known id is purged, with a JSON answer.
    let out = tally(
        &redis,
        &["--json", "queue", "dead", "purge", "--queue", "scoring", "lost-1"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(answer["purged"], 1, "{answer}");
    assert_eq!(admin.stats(ScoreMatch::QUEUE).await.expect("stats").dead, 0);
}

#[tokio::test]
async fn enqueue_score_match_of_a_match_that_does_not_exist_is_refused_when_the_database_is_known() {
    let db = tally_testkit::database().await;
    tally_store::migrate_url(&db.url).await.expect("migrated");
    let redis = tally_testkit::redis().await;
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("REDIS_URL", redis.url.as_str()),
        ("TALLY_QUEUE_PREFIX", redis.namespace.as_str()),
    ];
    let run = |args: &[&str]| tally_env(&env, args);
    let out = run(&["enqueue", "score-match", "99999"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no match 99999"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let stats = QueueAdmin::new(client(&redis))
        .stats(ScoreMatch::QUEUE)
        .await
        .expect("stats");
    assert_eq!(stats.ready, 0, "nothing enqueued: {stats:?}");
}

#[test]
fn connection_errors_are_one_line_with_the_cause_once() {
    let run = |var: &str, url: &str, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tally"))
            .env_clear()
            .env(var, url)
            .args(args)
            .output()
            .expect("tally runs")
    };
    for (var, url, args) in [
        ("REDIS_URL", "redis://127.0.0.1:1", &["queue", "stats"][..]),
        (
            "DATABASE_URL",
            "postgres://postgres@127.0.0.1:1/none",
            &["standings", "--competition", "1"],
        ),
    ] {
        let out = run(var, url, args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert_eq!(err.matches("Connection refused").count(), 1, "the cause once: {err}");
        assert!(err.contains("127.0.0.1:1"), "{err}");
    }
    let out = run("REDIS_URL", "localhost:6379", &["queue", "stats"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("REDIS_URL=\"localhost:6379\" does not parse: expected a URL starting with redis://"),
        "{err}"
    );
}

#[test]
fn a_score_out_of_range_is_a_usage_error_that_says_what_a_score_is() {
    for score in ["-1", "100", "two"] {
        let out = tally_bare(&["match", "finish", "1", score, "2"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{score}: {err}");
        assert!(
            err.contains(&format!("invalid value '{score}'")) && err.contains("a score is a whole number from 0 to 99"),
            "{score}: {err}"
        );
    }
}

#[tokio::test]
async fn competitions_and_match_list_show_the_ids_to_use() {
    let db = tally_testkit::database().await;
    tally_store::migrate_url(&db.url).await.expect("migrated");
    let store = tally_store::Store::connect(&db.url, 2).await.expect("store");
    let summary = store
        .seed(
            &tally_store::seed::SeedOptions {
                users: 10,
                predictions: 50,
                competitions: 2,
                teams_per_competition: 4,
                played_fraction: 0.5,
                seed: 7,
            },
            &|_| {},
        )
        .await
        .expect("seeded");
    let run = |args: &[&str]| tally_env(&[("DATABASE_URL", db.url.as_str())], args);
    let out = run(&["--json", "competitions"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let competitions: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(competitions.as_array().map(Vec::len), Some(2), "{competitions}");
    let first = competitions[0]["id"].as_i64().expect("id");

    let out = run(&[
        "--json",
        "match",
        "list",
        "--status",
        "scheduled",
        "--competition",
        &first.to_string(),
        "--limit",
        "1000",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let matches: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let listed = matches.as_array().expect("list");
    assert!(!listed.is_empty(), "{matches}");
    assert!(
        listed
            .iter()
            .all(|m| m["status"] == "scheduled" && m["competitionId"] == first),
        "{matches}"
    );
    assert_eq!(
        listed.len() as i64,
        competitions[0]["scheduled"].as_i64().expect("count"),
        "{competitions}"
    );
    assert!(
        listed
            .iter()
            .any(|m| summary.open_match_ids.contains(&m["id"].as_i64().expect("id"))),
        "{matches}"
    );
    let out = run(&["match", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("scheduled"), "{}", stdout(&out));

    let out = run(&["match", "list", "--status", "nosuch"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // "Not found" says how to list what exists.
    let out = run(&["match", "finish", "99999", "1", "0"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("match 99999 not found") && err.contains("`tally match list`"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[tokio::test]
async fn dead_list_envelopes_embeds_each_envelope_as_json() {
    let redis = tally_testkit::redis().await;
    let client = client(&redis);
    let ids = bury_real_jobs(&client, 1).await;
    let out = tally(&redis, &["--json", "queue", "dead", "list", "--envelopes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let jobs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(jobs[0]["jobId"], ids[0].as_str(), "{jobs}");
    assert!(jobs[0]["envelope"].is_string(), "the raw string stays: {jobs}");
    assert_eq!(jobs[0]["envelopeJson"]["kind"], "calculate_points", "{jobs}");
}

#[tokio::test]
async fn match_finish_says_when_no_scoring_worker_is_running() {
    let db = tally_testkit::database().await;
    tally_store::migrate_url(&db.url).await.expect("migrated");
    let store = tally_store::Store::connect(&db.url, 2).await.expect("store");
    let summary = store
        .seed(
            &tally_store::seed::SeedOptions {
                users: 5,
                predictions: 20,
                competitions: 1,
                teams_per_competition: 4,
                played_fraction: 0.0,
                seed: 3,
            },
            &|_| {},
        )
        .await
        .expect("seeded");
    let redis = tally_testkit::redis().await;
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("REDIS_URL", redis.url.as_str()),
        ("TALLY_QUEUE_PREFIX", redis.namespace.as_str()),
    ];
    let run = |args: &[&str]| tally_env(&env, args);
    let first = summary.open_match_ids[0].to_string();
    let out = run(&["match", "finish", &first, "1", "0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning: no scoring-worker is running"),
        "{}",
        stderr(&out)
    );

    // With a worker consuming the queue, no warning.
    let worker = Worker::builder(client(&redis), ScoreMatch::QUEUE)
        .handle(|_job: ScoreMatch, _ctx: JobContext| async { Ok::<(), JobError>(()) })
        .build()
        .expect("worker");
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
    }));
    let second = summary.open_match_ids[1].to_string();
    let mut quiet = false;
    for _ in 0..50 {
        // The worker subscribes within moments of starting.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let out = run(&["match", "finish", &second, "2", "2"]);
        assert!(out.status.success(), "{}", stderr(&out));
        if !stderr(&out).contains("no scoring-worker") {
            quiet = true;
            break;
        }
    }
    let _ = stop.send(());
    running.await.expect("joined").expect("worker stops");
    assert!(quiet, "the warning stays with a worker running");
}

/// The dead-letter and enqueue commands an operator uses after an incident,
/// each checked by what it left in the queues: a retry by id puts back that
/// job only, a purge by age spares the younger dead, and a hand-made
/// refresh coalesces with one already waiting.
#[tokio::test]
async fn retry_by_id_purge_by_age_and_enqueue_do_what_they_say() {
    let redis = tally_testkit::redis().await;
    let client = client(&redis);
    let admin = QueueAdmin::new(client.clone());
    let queue = CalculatePoints::QUEUE;
    let real = bury_real_jobs(&client, 3).await;
    let now = tally_queue::now_ms();
    bury_without_envelope(
        &redis,
        &client.keys(queue),
        &[
            ("old-1".to_owned(), now - 2 * 3_600_000),
            ("old-2".to_owned(), now - 3 * 3_600_000),
        ],
    )
    .await;
    assert_eq!(admin.stats(queue).await.expect("stats").dead, 5);

    // Retry one job by id: it alone is back, with its envelope, ready.
    let out = tally(
        &redis,
        &["--json", "queue", "dead", "retry", "--queue", queue, &real[0]],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(answer["retried"], 1, "{answer}");
    let stats = admin.stats(queue).await.expect("stats");
    assert_eq!((stats.ready, stats.dead), (1, 4), "{stats:?}");
    assert!(admin.dead_get(queue, &real[0]).await.expect("get").is_none());
    assert!(admin.dead_get(queue, &real[1]).await.expect("get").is_some());

    // Purge what died more than an hour ago: the two old ones, not the two
    // that died a moment ago.
    let out = tally(
        &redis,
        &["queue", "dead", "purge", "--queue", queue, "--older-than-hours", "1"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "2 dead job(s) of stats purged");
    let out = tally(&redis, &["--json", "queue", "dead", "list", "--queue", queue]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let mut ids: Vec<&str> = listed
        .as_array()
        .expect("a list")
        .iter()
        .map(|j| j["id"].as_str().expect("id"))
        .collect();
    ids.sort_unstable();
    let mut want = vec![real[1].as_str(), real[2].as_str()];
    want.sort_unstable();
    assert_eq!(ids, want, "{listed}");

    // Purge the rest with --all.
    let out = tally(&redis, &["--json", "queue", "dead", "purge", "--queue", queue, "--all"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(answer["purged"], 2, "{answer}");
    assert_eq!(admin.stats(queue).await.expect("stats").dead, 0);

    // A refresh enqueued by hand, twice: the second coalesces into the first.
    let first = tally(&redis, &["--json", "enqueue", "refresh-views"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let first: serde_json::Value = serde_json::from_slice(&first.stdout).expect("JSON");
    assert_eq!(first["deduplicated"], false, "{first}");
    let second = tally(&redis, &["enqueue", "refresh-views"]);
    assert!(second.status.success(), "{}", stderr(&second));
    let text = stdout(&second);
    assert!(text.contains("coalesced into a waiting job"), "{text}");
    let first_id = first["jobId"].as_str().expect("jobId");
    assert!(text.contains(first_id), "{text} names {first_id}");
    // The retried CalculatePoints and one refresh.
    assert_eq!(admin.stats(queue).await.expect("stats").ready, 2);
    let out = tally(&redis, &["enqueue", "refresh-views", "--scope", "everything"]);
    assert_ne!(out.status.code(), Some(0), "a bad scope is refused");
    assert_eq!(admin.stats(queue).await.expect("stats").ready, 2, "nothing enqueued");
}

/// Away from a terminal the seed's progress is one line per stage as it
/// ends, each stage named once and by its own name (teams were once shown
/// as a second "competitions" stage), and the listing after it is a table.
#[tokio::test]
async fn seed_progress_in_a_pipe_is_a_line_per_stage() {
    let db = tally_testkit::database().await;
    tally_store::migrate_url(&db.url).await.expect("migrated");
    let run = |args: &[&str]| tally_env(&[("DATABASE_URL", db.url.as_str())], args);
    let out = run(&["seed", "--users", "60", "--predictions", "600", "--teams", "4"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains('/')).collect();
    let stages: Vec<&str> = lines.iter().filter_map(|l| l.split(':').next()).collect();
    assert_eq!(
        stages,
        [
            "users",
            "competitions",
            "teams",
            "matches",
            "predictions",
            "totals",
            "views"
        ],
        "{err}"
    );
    assert!(lines.contains(&"users: 60/60"), "{err}");
    assert!(lines.contains(&"teams: 8/8"), "2 competitions of 4 teams: {err}");
    assert!(
        !err.contains('\r') && !err.contains('['),
        "no bar drawn into a pipe: {err}"
    );

    let out = run(&["standings", "--competition", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let mut lines = text.lines();
    let header = lines.next().expect("header");
    assert!(header.starts_with("#  team") && header.ends_with("pts"), "{text}");
    assert!(lines.next().is_some_and(|l| l.chars().all(|c| c == '-')), "{text}");
    assert_eq!(lines.count(), 4, "a line per team: {text}");
}

/// The CLI reads the `OTEL_*` switches as the services do: an endpoint
/// turns trace export on, `OTEL_SDK_DISABLED=true` or
/// `OTEL_TRACES_EXPORTER=none` turn it off again (the CLI once looked at the
/// endpoint alone).
#[tokio::test]
async fn otel_sdk_disabled_keeps_the_cli_quiet() {
    let redis = tally_testkit::redis().await;
    let run = |extra: &[(&str, &str)]| {
        let mut env = vec![
            ("REDIS_URL", redis.url.as_str()),
            ("TALLY_QUEUE_PREFIX", redis.namespace.as_str()),
            // Nothing listens there: export fails in the background, never the command.
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9"),
        ];
        env.extend_from_slice(extra);
        let out = tally_env(&env, &["queue", "stats"]);
        assert!(out.status.success(), "{extra:?}: {}", stderr(&out));
        stderr(&out)
    };
    let on = run(&[]);
    assert!(
        on.contains("telemetry initialised") && on.contains("otlp_traces"),
        "{on}"
    );
    for off in [("OTEL_SDK_DISABLED", "true"), ("OTEL_TRACES_EXPORTER", "none")] {
        let err = run(&[off]);
        assert!(!err.contains("telemetry"), "{off:?}: {err}");
    }
}

/// `tally queue pause|resume|limit|workers`: what each says, in both forms,
/// and that a paused queue is really not claimed from by a running worker.
#[tokio::test]
async fn pause_resume_limit_and_workers_do_what_they_say() {
    let redis = tally_testkit::redis().await;
    let client = client(&redis);
    let admin = QueueAdmin::new(client.clone());
    let queue = ScoreMatch::QUEUE;

    let out = tally(&redis, &["--json", "queue", "pause", queue]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(
        (json["queue"].as_str(), json["paused"].as_bool()),
        (Some(queue), Some(true)),
        "{json}"
    );
    assert!(json["redis"].is_string(), "{json}");
    assert!(admin.stats(queue).await.expect("stats").paused);

    // A worker started while paused claims nothing; the table says paused.
    let (tx, rx) = oneshot::channel::<()>();
    let worker = Worker::builder(client.clone(), queue)
        .concurrency(2)
        .handle(|_job: ScoreMatch, _ctx: JobContext| async { Ok::<(), JobError>(()) })
        .build()
        .expect("build");
    let running = tokio::spawn(worker.run_until(async move {
        let _ = rx.await;
    }));
    Producer::new(client.clone())
        .enqueue(&ScoreMatch { match_id: 7 })
        .await
        .expect("enqueue");
    let out = tally(&redis, &["queue", "stats", "--queue", queue]);
    assert!(stdout(&out).contains("paused"), "{}", stdout(&out));
    // The worker shows in the registry (it has beaten at least once).
    let mut listed = serde_json::Value::Null;
    for _ in 0..500 {
        let out = tally(&redis, &["--json", "queue", "workers", "--queue", queue]);
        assert!(out.status.success(), "{}", stderr(&out));
        listed = serde_json::from_str(&stdout(&out)).expect("json");
        if listed["workers"].as_array().is_some_and(|w| w.len() == 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(listed["workers"][0]["concurrency"], 2, "{listed}");
    assert_eq!(listed["workers"][0]["pid"], std::process::id(), "{listed}");
    let out = tally(&redis, &["queue", "workers"]);
    assert!(
        stdout(&out).contains(&std::process::id().to_string()),
        "{}",
        stdout(&out)
    );
    let stats = admin.stats(queue).await.expect("stats");
    assert_eq!((stats.ready, stats.counters.completed), (1, 0), "{stats:?}");

    let out = tally(&redis, &["queue", "limit", queue, "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("paused, limit 3"), "{}", stdout(&out));
    let out = tally(&redis, &["queue", "resume", queue]);
    assert!(stdout(&out).contains("limit 3"), "{}", stdout(&out));
    for _ in 0..1000 {
        if admin.stats(queue).await.expect("stats").counters.completed == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(admin.stats(queue).await.expect("stats").counters.completed, 1);
    let out = tally(&redis, &["--json", "queue", "limit", queue, "none"]);
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(
        (json["paused"].as_bool(), json["limit"].is_null()),
        (Some(false), true),
        "{json}"
    );

    // Bad input is a usage error that touches nothing.
    for args in [
        ["queue", "limit", queue, "0"],
        ["queue", "limit", queue, "lots"],
        ["queue", "pause", "nosuch", ""],
    ] {
        let args: Vec<&str> = args.into_iter().filter(|a| !a.is_empty()).collect();
        let out = tally(&redis, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(admin.control(queue).await.expect("control").limit, None);

    let _ = tx.send(());
    running.await.expect("join").expect("worker");
    let out = tally(&redis, &["--json", "queue", "workers", "--queue", queue]);
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(
        json["workers"],
        serde_json::json!([]),
        "a stopped worker leaves the registry"
    );
}

/// `tally queue jobs` and `tally queue job`: what is waiting, in claim and
/// due order, and one job in full; unknown ids and states are clear errors.
#[tokio::test]
async fn jobs_and_job_show_what_waits_and_one_job_in_full() {
    let redis = tally_testkit::redis().await;
    let producer = Producer::new(client(&redis));
    let queue = ScoreMatch::QUEUE;
    let first = producer.enqueue(&ScoreMatch { match_id: 1 }).await.expect("enqueue");
    let second = producer.enqueue(&ScoreMatch { match_id: 2 }).await.expect("enqueue");
    let later = producer
        .enqueue_with(
            &ScoreMatch { match_id: 3 },
            tally_queue::EnqueueOptions::delayed(Duration::from_secs(600)),
        )
        .await
        .expect("delayed");

    let out = tally(&redis, &["--json", "queue", "jobs", queue]);
    assert!(out.status.success(), "{}", stderr(&out));
    let page: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(page["total"], 2, "{page}");
    let ids: Vec<&str> = page["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(|j| j["id"].as_str())
        .collect();
    assert_eq!(ids, [first.id.as_str(), second.id.as_str()], "claim order");
    let out = tally(
        &redis,
        &["--json", "queue", "jobs", queue, "--offset", "1", "--limit", "1"],
    );
    let page: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(page["jobs"][0]["id"], second.id.as_str(), "{page}");
    let out = tally(&redis, &["queue", "jobs", queue, "--state", "scheduled"]);
    assert!(
        stdout(&out).contains(&later.id) && (stdout(&out).contains("in 600.0s") || stdout(&out).contains("in 599.")),
        "{}",
        stdout(&out)
    );

    let out = tally(&redis, &["--json", "queue", "job", queue, &later.id]);
    let job: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(
        (job["state"].as_str(), job["kind"].as_str()),
        (Some("scheduled"), Some("score_match")),
        "{job}"
    );
    assert!(
        job["envelope"].as_str().is_some_and(|e| e.contains("\"matchId\":3")),
        "{job}"
    );
    let out = tally(&redis, &["queue", "job", queue, &first.id]);
    assert!(stdout(&out).contains("state     ready"), "{}", stdout(&out));

    let out = tally(&redis, &["queue", "job", queue, "no-such-job"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("tally queue jobs"), "{}", stderr(&out));
    let out = tally(&redis, &["queue", "jobs", queue, "--state", "running"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("inFlight"), "{}", stderr(&out));
    let out = tally(&redis, &["queue", "jobs", queue, "--limit", "501"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// `tally queue partitions`: shows the count, grows it (stats then add the
/// partitions up), and refuses to shrink it or to go past the maximum.
#[tokio::test]
async fn partitions_show_grow_and_refuse_to_shrink() {
    let redis = tally_testkit::redis().await;
    let queue = "stats";
    let out = tally(&redis, &["queue", "partitions", queue]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "stats: 1 partition");
    let out = tally(&redis, &["--json", "queue", "partitions", queue, "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(
        (json["partitions"].as_u64(), json["before"].as_u64()),
        (Some(3), Some(1)),
        "{json}"
    );
    assert_eq!(client(&redis).partitions(queue).await.expect("count"), 3);

    let jobs = vec![tally_jobs::RefreshViews::example(); 9];
    let never = tally_queue::EnqueueOptions {
        dedup: tally_queue::Dedup::Never,
        ..tally_queue::EnqueueOptions::default()
    };
    Producer::new(client(&redis))
        .enqueue_batch_with(&jobs, &never)
        .await
        .expect("enqueue");
    let out = tally(&redis, &["--json", "queue", "stats", "--queue", queue]);
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    let stats = &json["queues"][queue];
    assert_eq!(
        (stats["ready"].as_u64(), stats["partitions"].as_u64()),
        (Some(9), Some(3)),
        "{json}"
    );
    let out = tally(&redis, &["queue", "stats", "--queue", queue]);
    assert!(stdout(&out).contains("3 partitions"), "{}", stdout(&out));

    // Shrinking is refused with the reason; out-of-range counts are usage
    // errors; nothing changes.
    let out = tally(&redis, &["queue", "partitions", queue, "2"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("can be added, not removed"), "{}", stderr(&out));
    for bad in ["0", "65", "many"] {
        let out = tally(&redis, &["queue", "partitions", queue, bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
    }
    assert_eq!(
        QueueAdmin::new(client(&redis))
            .stats(queue)
            .await
            .expect("stats")
            .partitions,
        3
    );
}
