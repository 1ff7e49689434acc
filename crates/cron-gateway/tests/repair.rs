//! The cron call's repairing safety net, through the real HTTP server: what
//! it finds, what it enqueues (bounded, oldest first, never the same job
//! twice), what it answers, and a 503 when it cannot reach the database.

use std::time::Duration;

use cron_gateway::repair::RepairSettings;
use cron_gateway::settings::RepairConfig;
use cron_gateway::{Application, Settings, auth::CronSecret};
use tally_jobs::{CalculatePoints, Job as _, ScoreMatch};
use tally_queue::{QueueAdmin, QueueClient, QueueConfig};
use tally_store::Store;
use tally_store::seed::SeedOptions;
use tally_testkit::http::{HttpResponse, request};
use tokio::sync::oneshot;

const SECRET: &str = "test-secret-0123456789";

struct Gateway {
    addr: std::net::SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Gateway {
    async fn start(redis: &tally_testkit::TestRedis, database_url: &str, batch: usize) -> Self {
        tally_telemetry::init_for_tests();
        let settings = Settings {
            bind_addr: "127.0.0.1:0".parse().expect("addr"),
            redis_url: redis.url.clone(),
            cron_secret: CronSecret::new(SECRET).expect("secret"),
            queue_prefix: redis.namespace.clone(),
            max_body_bytes: 1024,
            shutdown_timeout: Duration::from_secs(1),
            repair: Some(RepairConfig {
                database_url: database_url.to_owned(),
                settings: RepairSettings {
                    grace: Duration::ZERO,
                    batch,
                },
            }),
        };
        let app = Application::build(settings).await.expect("gateway builds");
        let addr = app.addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        Gateway { addr, stop, task }
    }

    async fn cron(&self) -> HttpResponse {
        let auth = format!("Bearer {SECRET}");
        request(
            self.addr,
            "POST",
            "/api/cron/update-stats",
            &[("Authorization", auth.as_str())],
            b"",
        )
        .await
        .expect("response")
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("joined").expect("clean shutdown");
    }
}

async fn seeded() -> (tally_testkit::TestDatabase, Store, Vec<i64>) {
    let db = tally_testkit::database().await;
    tally_store::migrate_url(&db.url).await.expect("migrated");
    let store = Store::connect(&db.url, 2).await.expect("store");
    let summary = store
        .seed(
            &SeedOptions {
                users: 30,
                predictions: 400,
                competitions: 1,
                teams_per_competition: 6,
                played_fraction: 0.4,
                seed: 11,
            },
            &|_| {},
        )
        .await
        .expect("seeded");
    (db, store, summary.open_match_ids)
}

fn repair_counts(response: &HttpResponse) -> serde_json::Value {
    assert_eq!(response.status, 200, "{}", response.body);
    let body = response.json();
    assert_eq!(body["success"], true, "{body}");
    assert!(body["jobId"].is_string(), "the refresh is still enqueued: {body}");
    body["repair"].clone()
}

#[tokio::test]
async fn a_cron_call_enqueues_what_was_lost_oldest_first_once_and_reports_it() {
    let (db, store, open) = seeded().await;
    let redis = tally_testkit::redis().await;
    let client = QueueClient::new(&redis.url, QueueConfig::with_prefix(&redis.namespace)).expect("client");
    let admin = QueueAdmin::new(client);
    let conn = db.client().await;

    // A result written straight into the database, no job; a match scored
    // whose CalculatePoints was lost; a match cancelled whose ScoreMatch
    // (which voids) was lost. Marked in that order.
    conn.execute(
        "UPDATE matches SET status = 'finished', home_score = 2, away_score = 1 WHERE id = $1",
        &[&open[0]],
    )
    .await
    .expect("psql-style result");
    store.record_result(open[1], 0, 0).await.expect("result");
    store.score_match(open[1]).await.expect("scored");
    store.cancel_match(open[2]).await.expect("cancelled");

    let gateway = Gateway::start(&redis, &db.url, 2).await;
    let first = repair_counts(&gateway.cron().await);
    assert_eq!(first["unscored"], 1, "{first}");
    assert_eq!(first["pointsMissing"], 1, "{first}");
    assert_eq!(first["unvoided"], 0, "batch of 2, oldest first: {first}");
    assert_eq!(
        (first["enqueued"].as_u64(), first["remaining"].as_u64()),
        (Some(2), Some(1)),
        "{first}"
    );
    let scoring = admin.stats(ScoreMatch::QUEUE).await.expect("stats");
    assert_eq!(scoring.ready, 1, "ScoreMatch for the result written directly");
    assert!(admin.stats(CalculatePoints::QUEUE).await.expect("stats").ready >= 1);

    // No worker ran: the next call reaches the cancelled match, and finds
    // the first repair of the others still waiting, so adds nothing twice.
    let second = repair_counts(&gateway.cron().await);
    assert_eq!(second["unvoided"], 1, "{second}");
    assert_eq!(second["enqueued"], 1, "{second}");
    assert_eq!(second["alreadyQueued"], 1, "{second}");
    assert_eq!(second["remaining"], 1, "{second}");
    assert_eq!(
        admin.stats(ScoreMatch::QUEUE).await.expect("stats").ready,
        2,
        "one ScoreMatch per lost match, never two"
    );
    assert_eq!(
        admin.stats(ScoreMatch::QUEUE).await.expect("stats").counters.enqueued,
        2
    );

    // Once the work is done, the next call finds nothing.
    for m in [open[0], open[2]] {
        store.score_match(m).await.expect("scored");
    }
    for m in [open[0], open[1], open[2]] {
        store.calculate_points(m).await.expect("points");
    }
    let third = repair_counts(&gateway.cron().await);
    assert_eq!(
        third,
        serde_json::json!({
            "unscored": 0, "unvoided": 0, "pointsMissing": 0, "stale": 0,
            "enqueued": 0, "alreadyQueued": 0, "remaining": 0
        })
    );
    gateway.stop().await;
}

#[tokio::test]
async fn without_its_database_the_cron_call_answers_503_and_says_why() {
    let redis = tally_testkit::redis().await;
    // Nothing listens on port 1.
    let gateway = Gateway::start(&redis, "postgres://tally@127.0.0.1:1/tally?connect_timeout=2", 10).await;
    let response = gateway.cron().await;
    assert_eq!(response.status, 503, "{}", response.body);
    let body = response.json();
    assert_eq!(body["success"], false, "{body}");
    let error = body["error"].as_str().expect("error");
    assert!(error.starts_with("repair did not complete"), "{error}");
    assert!(body["timestamp"].is_string(), "{body}");
    // Readiness needs Redis only: the gateway stays in service.
    let ready = tally_testkit::http::get(gateway.addr, "/readyz").await.expect("readyz");
    assert_eq!(ready.status, 200, "{}", ready.body);
    gateway.stop().await;
}
