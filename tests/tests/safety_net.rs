//! Nothing falls between PostgreSQL and Redis, through the real binaries:
//! a result written straight into the database with no job, Redis flushed
//! in the middle of a matchday, a relay killed with SIGKILL between its push
//! and its delete, two relays racing, the database away when the repair
//! runs. The cron call asks for a repair (a `RepairPipeline` job, which
//! scoring-worker runs); once it has run, every leaderboard and league
//! table equals a recomputation from scratch, nothing is owed any more, a
//! further repair finds nothing, and no job ran for work already done
//! (beyond what the handlers' idempotence absorbs, which the counts show).

use std::time::Duration;

use tally_e2e::{RepairCounts, Stack, StackOptions, score_for};
use tally_jobs::{Job as _, RefreshScope, RefreshViews, RepairPipeline, ScoreMatch};
use tally_worker::outbox::outbox_envelope;

const SETTLE: Duration = Duration::from_secs(90);
/// Concurrent writers of outbox rows in the race, and rows each writes.
const WRITERS: usize = 12;
const ROWS_EACH: usize = 25;

/// A stack whose gateway asks for repairs without a grace period (the tests
/// call it only once the work they started is done or lost).
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

/// A cron call, and the repair it asked for run by scoring-worker: what
/// the run found (one run).
async fn cron_and_repair(stack: &mut Stack) -> RepairCounts {
    let (answer, repaired) = stack
        .cron_and_repair("cron-gateway", "scoring-worker")
        .await
        .expect("cron call and repair");
    assert_eq!(answer["repair"]["deduplicated"], false, "a fresh repair: {answer}");
    assert_eq!(repaired.runs, 1, "{repaired:?}");
    repaired
}

/// (unscored, unvoided, points missing, jobs enqueued) of a repair.
fn counts(repaired: &RepairCounts) -> (u64, u64, u64, u64) {
    (
        repaired.unscored,
        repaired.unvoided,
        repaired.points_missing,
        repaired.enqueued,
    )
}

/// Settled and exact, nothing owed.
async fn settled_and_nothing_owed(stack: &Stack) {
    stack.wait_settled(SETTLE).await.expect("settled and exact");
    assert_eq!(stack.pending_markers().await.expect("markers"), 0, "nothing owed");
}

/// Ends every test: a further cron call's repair finds nothing to repair.
async fn nothing_left_to_repair(stack: &mut Stack) {
    let again = cron_and_repair(stack).await;
    assert_eq!(
        again,
        RepairCounts {
            runs: 1,
            ..RepairCounts::default()
        },
        "nothing left to repair"
    );
}

async fn completed(stack: &Stack, queue: &str) -> u64 {
    stack.admin.stats(queue).await.expect("stats").counters.completed
}

/// `ScoreMatch` jobs the scoring worker completed since it (re)started.
async fn score_matches_completed(stack: &mut Stack) -> u64 {
    let n = stack
        .metric(
            "scoring-worker",
            "tally_jobs_completed_total",
            &[("queue", ScoreMatch::QUEUE), ("kind", ScoreMatch::KIND)],
        )
        .await
        .expect("metrics");
    // A counter: a whole number, exactly representable.
    n as u64
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

    let repaired = cron_and_repair(&mut stack).await;
    let n = finished.len() as u64;
    assert_eq!(counts(&repaired), (n, 1, 0, n + 1), "{repaired:?}");
    assert_eq!(repaired.remaining, 0, "{repaired:?}");
    settled_and_nothing_owed(&stack).await;
    nothing_left_to_repair(&mut stack).await;

    // One ScoreMatch per match, no more; the cancelled match's predictions
    // are voided.
    assert_eq!(score_matches_completed(&mut stack).await, n + 1);
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
    let repaired = cron_and_repair(&mut stack).await;
    let (unscored, points) = (queued_only.len() as u64, scored_only.len() as u64);
    assert_eq!(
        counts(&repaired),
        (unscored, 0, points, unscored + points),
        "{repaired:?}"
    );
    settled_and_nothing_owed(&stack).await;
    nothing_left_to_repair(&mut stack).await;
    // Since the flush (and the worker's restart): only the lost ScoreMatch
    // ran again.
    assert_eq!(score_matches_completed(&mut stack).await, unscored);
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
    settled_and_nothing_owed(&stack).await;
    let scoring = stack.admin.stats(ScoreMatch::QUEUE).await.expect("stats");
    assert_eq!(
        (scoring.counters.enqueued, scoring.counters.completed),
        (2, 2),
        "{scoring:?}"
    );
    nothing_left_to_repair(&mut stack).await;
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

    settled_and_nothing_owed(&stack).await;

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
    nothing_left_to_repair(&mut stack).await;
    stack.stop_cleanly().await;
}

#[tokio::test]
async fn without_its_database_the_cron_call_answers_200_and_the_repair_waits_for_it() {
    let mut stack = stack(StackOptions {
        own_postgres: true,
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
    // A result written straight into the database, no job.
    let matchday = stack.matchday().await.expect("matchday");
    let lost = matchday[0].id;
    let (h, a) = score_for(lost);
    stack
        .store
        .pool()
        .get()
        .await
        .expect("client")
        .execute(
            "UPDATE matches SET status = 'finished', home_score = $2, away_score = $3, finished_at = now()
             WHERE id = $1",
            &[&lost, &h, &a],
        )
        .await
        .expect("result written directly");

    // The database goes away; the gateway, which needs Redis only, still
    // answers the cron call and asks for the repair.
    stack.postgres.as_mut().expect("own postgres").stop().await;
    let answer = stack.cron("cron-gateway").await.expect("the cron call answers 200");
    let repair_id = answer["repair"]["jobId"].as_str().expect("a repair job").to_owned();
    assert_eq!(answer["repair"]["deduplicated"], false, "{answer}");

    // scoring-worker claims it and waits for the database inside the
    // attempt: not done, not dead.
    let worker = stack.service("scoring-worker").addr;
    // A counter: a whole number, exactly representable.
    let repairs_completed = async || {
        let text = tally_testkit::http::get(worker, "/metrics").await?.body;
        let n = tally_testkit::prometheus::sum(&text, "tally_jobs_completed_total", &[("kind", RepairPipeline::KIND)]);
        anyhow::Ok(n.unwrap_or(0.0) as u64)
    };
    stack
        .wait_for("the repair waits for the database", SETTLE, || async {
            let log = stack
                .services
                .iter()
                .find(|s| s.name == "scoring-worker")
                .map(|s| s.log_tail(200));
            let waiting = log.is_some_and(|l| {
                l.lines().any(|l| {
                    l.contains(r#"kind="repair_pipeline""#) && l.contains("database unavailable; waiting for it")
                })
            });
            Ok(waiting && stack.admin.stats(RepairPipeline::QUEUE).await?.in_flight == 1)
        })
        .await
        .expect("waiting");
    assert_eq!(
        repairs_completed().await.expect("metrics"),
        0,
        "not done without its database"
    );
    assert!(
        stack
            .admin
            .dead_get(RepairPipeline::QUEUE, &repair_id)
            .await
            .expect("dead set")
            .is_none(),
        "not dead"
    );

    // Back: the same attempt (or a retry) completes the repair, which finds
    // the lost result, and the result goes through.
    stack
        .postgres
        .as_mut()
        .expect("own postgres")
        .start_again()
        .await
        .expect("postgres back");
    stack
        .wait_for("the repair completed", SETTLE, || async {
            Ok(repairs_completed().await? >= 1)
        })
        .await
        .expect("repaired once the database is back");
    let found = stack
        .metric("scoring-worker", "tally_repair_found_total", &[("missing", "scoring")])
        .await
        .expect("metrics");
    assert_eq!(found as u64, 1, "the lost result was found");
    settled_and_nothing_owed(&stack).await;
    for queue in [ScoreMatch::QUEUE, RefreshViews::QUEUE] {
        let stats = stack.admin.stats(queue).await.expect("stats");
        assert_eq!((stats.dead, stats.counters.dead), (0, 0), "{queue}: {stats:?}");
    }
    nothing_left_to_repair(&mut stack).await;
    stack.stop_cleanly().await;
}
