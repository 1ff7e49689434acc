//! The outbox relay against a real PostgreSQL and Redis: rows become jobs
//! under their own ids and are deleted; bad envelopes are marked, not lost;
//! a commit wakes a running relay; a row its relay left behind after the
//! push is settled by the job's worker, so relaying it again makes no
//! second job.

use std::time::Duration;

use tally_jobs::{Job as _, RefreshScope, RefreshViews, ScoreMatch};
use tally_queue::{JobContext, JobError, Producer, QueueAdmin, QueueClient, QueueConfig, Worker};
use tally_store::Store;
use tally_store::outbox::job_id;
use tally_worker::outbox::{Relay, RelaySettings, outbox_envelope, settling};
use tokio::sync::oneshot;

struct World {
    db: tally_testkit::TestDatabase,
    redis: tally_testkit::TestRedis,
    url: String,
    store: Store,
    client: QueueClient,
    admin: QueueAdmin,
}

async fn world() -> World {
    let db = tally_testkit::database().await;
    tally_store::migrate_url(&db.url).await.expect("migrated");
    let store = Store::connect(&db.url, 4).await.expect("store");
    let redis = tally_testkit::redis().await;
    let client = QueueClient::new(&redis.url, QueueConfig::with_prefix(&redis.namespace)).expect("client");
    World {
        url: db.url.clone(),
        db,
        redis,
        store,
        admin: QueueAdmin::new(client.clone()),
        client,
    }
}

impl World {
    fn relay(&self, batch: usize) -> Relay {
        Relay::new(
            self.store.clone(),
            Producer::new(self.client.clone()),
            self.url.clone(),
            RelaySettings {
                enabled: true,
                batch,
                poll: Duration::from_secs(3600),
            },
        )
    }

    async fn jobs_of(&self, queue: &str) -> Vec<String> {
        let mut conn = self.redis.connection().await;
        let mut ids: Vec<String> = redis::cmd("HKEYS")
            .arg(self.client.keys(queue).jobs())
            .query_async(&mut conn)
            .await
            .expect("HKEYS");
        ids.sort();
        ids
    }
}

#[tokio::test]
async fn rows_become_jobs_under_their_own_ids_and_are_deleted_bad_ones_are_marked() {
    let w = world().await;
    let mut rows = Vec::new();
    for match_id in 1..=25 {
        let envelope = outbox_envelope(&ScoreMatch { match_id }, None);
        rows.push(w.store.enqueue_outbox(&envelope).await.expect("row"));
    }
    // Valid for the outbox's check, but its policy cannot decode.
    let mut broken = outbox_envelope(&ScoreMatch { match_id: 99 }, None);
    broken["policy"] = serde_json::json!({ "maxAttempts": "three" });
    let broken_row = w.store.enqueue_outbox(&broken).await.expect("row");

    let drained = w.relay(10).drain().await.expect("drained");
    assert_eq!((drained.relayed, drained.rejected), (25, 1), "{drained:?}");
    assert!(drained.batches >= 3, "batches of 10: {drained:?}");
    let mut expected: Vec<String> = rows.iter().map(|&r| job_id(r)).collect();
    expected.sort();
    assert_eq!(w.jobs_of(ScoreMatch::QUEUE).await, expected);
    let backlog = w.store.outbox_backlog().await.expect("backlog");
    assert_eq!((backlog.pending, backlog.rejected), (0, 1), "{backlog:?}");
    let conn = w.db.client().await;
    let rejection: String = conn
        .query_one("SELECT rejection FROM job_outbox WHERE id = $1", &[&broken_row])
        .await
        .expect("kept for an operator")
        .get(0);
    assert!(rejection.contains("malformed envelope"), "{rejection}");

    // A second drain finds nothing new: nothing is pushed twice.
    let again = w.relay(10).drain().await.expect("drained");
    assert_eq!((again.relayed, again.rejected), (0, 0));
    assert_eq!(
        w.admin.stats(ScoreMatch::QUEUE).await.expect("stats").counters.enqueued,
        25
    );
}

#[tokio::test]
async fn a_commit_wakes_a_running_relay() {
    let w = world().await;
    let (stop, stopped) = oneshot::channel::<()>();
    // Polling once an hour: only the notification can wake it in time.
    let relay = tokio::spawn(w.relay(100).run_until(async move {
        let _ = stopped.await;
    }));
    // Give the relay its first (empty) drain and its LISTEN; rows written
    // before it listens are found by that first drain anyway.
    let mut seen = Vec::new();
    for match_id in 1..=3 {
        let row = w
            .store
            .enqueue_outbox(&outbox_envelope(&ScoreMatch { match_id }, None))
            .await
            .expect("row");
        seen.push(job_id(row));
        // A guard against a hang, not a latency assertion.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !w.jobs_of(ScoreMatch::QUEUE).await.contains(&job_id(row)) {
            assert!(tokio::time::Instant::now() < deadline, "row {row} was not relayed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    seen.sort();
    assert_eq!(w.jobs_of(ScoreMatch::QUEUE).await, seen);
    let _ = stop.send(());
    relay.await.expect("relay stops on shutdown");
}

#[tokio::test]
async fn a_job_settles_its_row_so_a_relay_that_died_after_its_push_makes_no_second_job() {
    let w = world().await;
    let row = w
        .store
        .enqueue_outbox(&outbox_envelope(
            &RefreshViews {
                scope: RefreshScope::All,
            },
            None,
        ))
        .await
        .expect("row");
    // What a relay did before it died: the job is in Redis under the row's
    // id, the row is still in the outbox.
    let producer = Producer::new(w.client.clone());
    let envelope = tally_worker::outbox::envelope_of(tally_store::outbox::OutboxRow {
        id: row,
        envelope: outbox_envelope(
            &RefreshViews {
                scope: RefreshScope::All,
            },
            None,
        ),
        created_at_ms: 0,
    })
    .expect("envelope");
    producer.enqueue_envelope(envelope).await.expect("pushed");

    // The job runs (its handler wrapped as the workers wrap theirs) and is
    // acknowledged.
    let worker = Worker::builder(w.client.clone(), RefreshViews::QUEUE)
        .handle(settling(
            w.store.clone(),
            |_job: RefreshViews, _ctx: JobContext| async { Ok::<(), JobError>(()) },
        ))
        .build()
        .expect("worker");
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until(async move {
        let _ = stopped.await;
    }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while w
        .admin
        .stats(RefreshViews::QUEUE)
        .await
        .expect("stats")
        .counters
        .completed
        < 1
    {
        assert!(tokio::time::Instant::now() < deadline, "the job did not run");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop.send(());
    running.await.expect("joined").expect("worker stops");

    // Its row went with it: the next relay has nothing to push again.
    assert_eq!(w.store.outbox_backlog().await.expect("backlog").pending, 0);
    let drained = w.relay(10).drain().await.expect("drained");
    assert_eq!(drained.relayed, 0);
    let stats = w.admin.stats(RefreshViews::QUEUE).await.expect("stats");
    assert_eq!(
        (stats.counters.enqueued, stats.ready),
        (1, 0),
        "one job, ever: {stats:?}"
    );
}

#[tokio::test]
async fn the_transaction_in_protocol_md_commits_a_result_and_a_job_the_relay_enqueues() {
    let w = world().await;
    w.store
        .seed(
            &tally_store::seed::SeedOptions {
                users: 10,
                predictions: 100,
                competitions: 1,
                teams_per_competition: 8,
                played_fraction: 0.0,
                seed: 1,
            },
            &|_| {},
        )
        .await
        .expect("seeded");
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/PROTOCOL.md")).expect("PROTOCOL.md");
    let start = doc.find("```sql\nBEGIN;").expect("the example transaction") + "```sql\n".len();
    let sql = &doc[start..start + doc[start..].find("```").expect("end of the example")];
    assert!(sql.contains("INSERT INTO job_outbox"), "{sql}");
    w.db.client()
        .await
        .batch_execute(sql)
        .await
        .expect("the example runs as written");

    let drained = w.relay(10).drain().await.expect("drained");
    assert_eq!((drained.relayed, drained.rejected), (1, 0));
    let ids = w.jobs_of(ScoreMatch::QUEUE).await;
    assert_eq!(ids.len(), 1);
    assert!(ids[0].starts_with("outbox-"), "{ids:?}");
    let mut conn = w.redis.connection().await;
    let body: String = redis::cmd("HGET")
        .arg(w.client.keys(ScoreMatch::QUEUE).jobs())
        .arg(&ids[0])
        .query_async(&mut conn)
        .await
        .expect("envelope");
    let envelope = tally_jobs::Envelope::decode(body.as_bytes()).expect("decodes");
    assert_eq!(envelope.payload_as::<ScoreMatch>().expect("payload").match_id, 17);
    assert!(envelope.trace.is_some(), "the producer's trace travels with the job");
    let status: String =
        w.db.client()
            .await
            .query_one("SELECT status FROM matches WHERE id = 17", &[])
            .await
            .expect("match")
            .get(0);
    assert_eq!(status, "finished");
}
