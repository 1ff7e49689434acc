//! Nothing falls between PostgreSQL and Redis, through the real binaries:
//! a result written straight into the database with no job, Redis flushed
//! in the middle of a matchday, a relay killed with SIGKILL between its push
//! and its delete, two relays racing. Each ends with a cron call, after
//! which every leaderboard and league table equals a recomputation from
//! scratch, nothing is owed any more, and no job ran for work already done
//! (beyond what the handlers' idempotence absorbs, which the counts show).

use std::time::Duration;

use tally_e2e::{Stack, StackOptions, score_for};
use tally_jobs::{Job as _, RefreshScope, RefreshViews, ScoreMatch};
use tally_worker::outbox::outbox_envelope;

const SETTLE: Duration = Duration::from_secs(90);
/// Concurrent writers of outbox rows in the race, and rows each writes.
const WRITERS: usize = 12;
const ROWS_EACH: usize = 25;

/// A stack whose gateway repairs without a grace period (the tests call it
/// only once the work they started is done or lost).
async fn stack(options: StackOptions) -> Stack {
    let mut stack = Stack::new(StackOptions {
        users: 300,
        predictions: 4_000,
        ..options
    })
    .await
    .expect("stack");
    stack.extra_env.push(("REPAIR_GRACE_SECS".into(), "0".into()));
    stack
}

/// The cron answer's repair counts.
fn counts(answer: &serde_json::Value) -> (u64, u64, u64, u64) {
    let r = &answer["repair"];
    let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("repair.{k} in {answer}"));
    (n("unscored"), n("unvoided"), n("pointsMissing"), n("enqueued"))
}

/// Ends every test: settled and exact, nothing owed, and a further cron
/// call finds nothing to repair.
async fn settled_and_nothing_owed(stack: &mut Stack) {
    stack.wait_settled(SETTLE).await.expect("settled and exact");
    assert_eq!(stack.pending_markers().await.expect("markers"), 0, "nothing owed");
    let again = stack.cron("cron-gateway").await.expect("cron");
    assert_eq!(counts(&again), (0, 0, 0, 0), "nothing left to repair: {again}");
    assert_eq!(again["repair"]["remaining"], 0, "{again}");
}

async fn completed(stack: &Stack, queue: &str) -> u64 {
    stack.admin.stats(queue).await.expect("stats").counters.completed
}

#[tokio::test]
async fn results_written_straight_into_postgres_are_repaired_by_the_next_cron_call() {
    let mut stack = stack(StackOptions::default()).await;
    stack
        .start_services(&[
            ("scoring-worker", "scoring-worker"),
            ("stats-worker", "stats-worker"),
            ("cron-gateway", "cron-gateway"),
        ])
        .await;
    let matchday = stack.matchday().await.expect("matchday");
    assert!(matchday.len() >= 4, "{matchday:?}");
    let (cancelled, finished) = matchday.split_at(1);
    // As an operator with psql (or a web app without tally's producer)
    // would: no job, no outbox row.
    let client = stack.store.pool().get().await.expect("client");
    for f in finished {
        let (h, a) = score_for(f.id);
        client
            .execute(
                "UPDATE matches SET status = 'finished', home_score = $2, away_score = $3, finished_at = now()
                 WHERE id = $1",
                &[&f.id, &h, &a],
            )
            .await
            .expect("result written directly");
    }
    client
        .execute(
            "UPDATE matches SET status = 'cancelled' WHERE id = $1",
            &[&cancelled[0].id],
        )
        .await
        .expect("cancelled directly");
    assert_eq!(
        stack
            .admin
            .stats(ScoreMatch::QUEUE)
            .await
            .expect("stats")
            .counters
            .enqueued,
        0
    );

    let answer = stack.cron("cron-gateway").await.expect("cron");
    let n = finished.len() as u64;
    assert_eq!(counts(&answer), (n, 1, 0, n + 1), "{answer}");
    settled_and_nothing_owed(&mut stack).await;

    // One ScoreMatch per match, no more; the cancelled match's predictions
    // are voided.
    assert_eq!(completed(&stack, ScoreMatch::QUEUE).await, n + 1);
    let unvoided: i64 = client
        .query_one(
            "SELECT count(*) FROM predictions WHERE match_id = $1 AND NOT voided",
            &[&cancelled[0].id],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(unvoided, 0);
    stack.stop_cleanly().await;
}

#[tokio::test]
async fn redis_flushed_in_the_middle_of_a_matchday_is_repaired_by_the_next_cron_call() {
    let mut stack = stack(StackOptions {
        own_redis: true,
        ..StackOptions::default()
    })
    .await;
    stack
        .start_services(&[
            ("scoring-worker", "scoring-worker"),
            ("stats-worker", "stats-worker"),
            ("cron-gateway", "cron-gateway"),
        ])
        .await;
    let matchday = stack.matchday().await.expect("matchday");
    assert!(matchday.len() >= 6, "{matchday:?}");
    let (done, rest) = matchday.split_at(2);
    let (scored_only, queued_only) = rest.split_at(2);

    // The first results go all the way through.
    stack.finish_all(done).await;
    stack.wait_settled(SETTLE).await.expect("first results settled");

    // Then stats-worker stops: the next results are scored, and their
    // CalculatePoints wait in Redis.
    stack
        .service("stats-worker")
        .terminate(Duration::from_secs(15))
        .await
        .expect("stopped");
    stack.finish_all(scored_only).await;
    let want = (done.len() + scored_only.len()) as u64;
    stack
        .wait_for("scored, points waiting in Redis", SETTLE, || async {
            let scoring = stack.admin.stats(ScoreMatch::QUEUE).await?;
            let stats = stack.admin.stats(RefreshViews::QUEUE).await?;
            Ok(scoring.counters.completed == want
                && scoring.ready + scoring.in_flight == 0
                && stats.ready >= scored_only.len() as u64)
        })
        .await
        .expect("waiting");
    // Then scoring-worker stops too, and the last results' ScoreMatch wait
    // in Redis (enqueued directly, as a producer without the outbox does).
    stack
        .service("scoring-worker")
        .terminate(Duration::from_secs(15))
        .await
        .expect("stopped");
    for f in queued_only {
        let (h, a) = score_for(f.id);
        stack.store.record_result(f.id, h, a).await.expect("result");
        stack
            .producer
            .enqueue(&ScoreMatch { match_id: f.id })
            .await
            .expect("enqueued");
    }

    // Everything waiting in Redis is gone.
    let redis = redis::Client::open(stack.redis_url.as_str()).expect("client");
    let mut conn = redis.get_multiplexed_async_connection().await.expect("connection");
    let () = redis::cmd("FLUSHALL").query_async(&mut conn).await.expect("FLUSHALL");
    assert_eq!(stack.admin.stats(ScoreMatch::QUEUE).await.expect("stats").ready, 0);

    stack.service("scoring-worker").restart().expect("restart");
    stack.service("stats-worker").restart().expect("restart");
    for name in ["scoring-worker", "stats-worker"] {
        stack
            .service(name)
            .wait_ready(Duration::from_secs(30))
            .await
            .expect("ready");
    }
    let answer = stack.cron("cron-gateway").await.expect("cron");
    let (unscored, points) = (queued_only.len() as u64, scored_only.len() as u64);
    assert_eq!(counts(&answer), (unscored, 0, points, unscored + points), "{answer}");
    settled_and_nothing_owed(&mut stack).await;
    // Counters restarted with the flush: only the lost ScoreMatch ran again.
    assert_eq!(completed(&stack, ScoreMatch::QUEUE).await, unscored);
    stack.stop_cleanly().await;
}

#[tokio::test]
async fn a_relay_killed_between_its_push_and_its_delete_makes_no_second_job() {
    let mut stack = stack(StackOptions::default()).await;
    stack.start("cron-gateway", "cron-gateway").await.expect("gateway");
    let matchday = stack.matchday().await.expect("matchday");
    let (first, second) = (&matchday[0], &matchday[1]);
    let (h, a) = score_for(first.id);
    stack.finish(first.id, h, a).await.expect("committed with its job");
    let row: i64 = {
        let client = stack.store.pool().get().await.expect("client");
        client
            .query_one("SELECT id FROM job_outbox", &[])
            .await
            .expect("one row")
            .get(0)
    };
    let job_id = tally_store::outbox::job_id(row);

    // Hold a SHARE lock on the outbox: a relay can take and push rows, but
    // its DELETE waits. That is the window to kill it in.
    let mut locker = stack.store.pool().get().await.expect("client");
    let lock = locker.transaction().await.expect("transaction");
    lock.batch_execute("LOCK TABLE job_outbox IN SHARE MODE")
        .await
        .expect("lock");
    stack.start("stats-worker", "relay").await.expect("relay");
    let database = stack.store.clone();
    stack
        .wait_for("pushed, its delete waiting", SETTLE, || {
            let database = database.clone();
            let admin = stack.admin.clone();
            let job_id = job_id.clone();
            async move {
                let pushed = admin.stats(ScoreMatch::QUEUE).await?.ready == 1
                    && admin.dead_get(ScoreMatch::QUEUE, &job_id).await?.is_none();
                let client = database.pool().get().await?;
                let waiting: i64 = client
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity
                         WHERE wait_event_type = 'Lock' AND query LIKE 'DELETE FROM job_outbox%'",
                        &[],
                    )
                    .await?
                    .get(0);
                Ok(pushed && waiting == 1)
            }
        })
        .await
        .expect("the relay pushed and waits to delete");
    stack.service("relay").kill9().await.expect("SIGKILL");
    lock.rollback().await.expect("lock released");
    drop(locker);
    assert_eq!(
        stack.store.outbox_backlog().await.expect("backlog").pending,
        1,
        "the row outlived its relay"
    );

    // The job runs (no relay in this process) and settles the row.
    stack
        .start_with("scoring-worker", "scoring-worker", &[("OUTBOX_RELAY", "off")])
        .await
        .expect("scoring-worker");
    stack
        .wait_for("the pushed job ran", SETTLE, || async {
            Ok(completed(&stack, ScoreMatch::QUEUE).await == 1)
        })
        .await
        .expect("ran");
    assert_eq!(
        stack.store.outbox_backlog().await.expect("backlog").pending,
        0,
        "settled by the job"
    );
    let settled = stack
        .metric(
            "scoring-worker",
            "tally_outbox_settled_by_worker_total",
            &[("queue", "scoring")],
        )
        .await
        .expect("metrics");
    assert!((settled - 1.0).abs() < f64::EPSILON, "settled by the worker: {settled}");

    // A relay runs again; the next result goes through it. The first one is
    // not relayed a second time.
    stack.start("stats-worker", "stats-worker").await.expect("stats-worker");
    let (h, a) = score_for(second.id);
    stack.finish(second.id, h, a).await.expect("second result");
    settled_and_nothing_owed(&mut stack).await;
    let scoring = stack.admin.stats(ScoreMatch::QUEUE).await.expect("stats");
    assert_eq!(
        (scoring.counters.enqueued, scoring.counters.completed),
        (2, 2),
        "{scoring:?}"
    );
    stack.stop_cleanly().await;
}

#[tokio::test]
async fn two_relays_racing_relay_every_row_exactly_once() {
    let mut stack = stack(StackOptions::default()).await;
    stack.extra_env.push(("OUTBOX_BATCH".into(), "7".into()));
    stack
        .start_with("scoring-worker", "scoring-worker", &[("OUTBOX_RELAY", "off")])
        .await
        .expect("scoring-worker");
    stack.start("stats-worker", "relay-1").await.expect("relay 1");
    stack.start("stats-worker", "relay-2").await.expect("relay 2");
    stack.start("cron-gateway", "cron-gateway").await.expect("gateway");

    // The web app's way: many transactions at once, each writing envelopes
    // (refreshes without a dedup key, so each is a job of its own), while
    // results are recorded through tally.
    let mut envelope = outbox_envelope(
        &RefreshViews {
            scope: RefreshScope::Leaderboard,
        },
        None,
    );
    envelope.as_object_mut().expect("object").remove("dedupKey");
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let store = stack.store.clone();
        let envelope = envelope.clone();
        writers.push(tokio::spawn(async move {
            let mut client = store.pool().get().await.expect("client");
            for _ in 0..ROWS_EACH / 5 {
                let tx = client.transaction().await.expect("tx");
                for _ in 0..5 {
                    tally_store::outbox::enqueue_in(&*tx, &envelope).await.expect("row");
                }
                tx.commit().await.expect("commit");
            }
        }));
    }
    let matchday = stack.matchday().await.expect("matchday");
    stack.finish_all(&matchday).await;
    for w in writers {
        w.await.expect("writer");
    }
    let rows = (WRITERS * ROWS_EACH + matchday.len()) as u64;

    settled_and_nothing_owed(&mut stack).await;

    let mut relayed = 0.0;
    let mut twice = 0.0;
    for relay in ["relay-1", "relay-2"] {
        relayed += stack
            .metric(relay, "tally_outbox_relayed_total", &[("outcome", "enqueued")])
            .await
            .expect("metrics");
        twice += stack
            .metric(relay, "tally_outbox_relayed_total", &[("outcome", "already_live")])
            .await
            .expect("metrics");
        twice += stack
            .metric(relay, "tally_outbox_relayed_total", &[("outcome", "coalesced")])
            .await
            .expect("metrics");
    }
    // Counters: whole numbers, exactly representable.
    assert_eq!(
        (relayed as u64, twice as u64),
        (rows, 0),
        "every row relayed once, none twice"
    );
    let scoring = stack.admin.stats(ScoreMatch::QUEUE).await.expect("stats");
    assert_eq!(scoring.counters.completed, matchday.len() as u64, "{scoring:?}");
    stack.stop_cleanly().await;
}
