//! The job outbox: a result and its job commit together; relays never take
//! the same row at once; a row whose relay died is settled by the job's
//! worker; commits wake the listeners.

use std::time::Duration;

use serde_json::json;
use tally_store::MatchStatus;
use tally_store::outbox::{self, Listener, Pushed};
use tokio::sync::oneshot;

use crate::common::{fresh, predict, small_world};

/// An envelope as the CLI writes it (no id: the relay gives it one).
fn envelope(match_id: i64) -> serde_json::Value {
    json!({
        "v": 1,
        "kind": "score_match",
        "queue": "scoring",
        "payload": { "matchId": match_id },
        "policy": {
            "maxAttempts": 3,
            "backoff": { "type": "exponential", "baseMs": 5000, "maxMs": 600_000, "jitter": false },
            "timeoutMs": 120_000,
            "priority": "normal"
        },
        "createdAtMs": 1_764_340_000_000_u64
    })
}

async fn outbox_ids(client: &tokio_postgres::Client) -> Vec<i64> {
    client
        .query("SELECT id FROM job_outbox ORDER BY id", &[])
        .await
        .expect("outbox")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The error with its causes, as an operator reads it.
fn chain(error: tally_store::StoreError) -> String {
    format!("{:#}", anyhow::Error::from(error))
}

async fn status_of(client: &tokio_postgres::Client, match_id: i64) -> String {
    client
        .query_one("SELECT status FROM matches WHERE id = $1", &[&match_id])
        .await
        .expect("match")
        .get(0)
}

#[tokio::test]
async fn a_result_and_its_job_commit_together_or_not_at_all() {
    let (_db, store, client) = fresh().await;
    let (comp, home, away, match_id, user) = small_world(&client).await;
    predict(&client, user, match_id, 1, 0).await;

    let recorded = store
        .record_result_with_job(match_id, 2, 1, &envelope(match_id))
        .await
        .expect("recorded with its job");
    let row = recorded.job_row.expect("a job row");
    assert!(recorded.changed);
    assert_eq!(outbox_ids(&client).await, vec![row]);
    let stored: serde_json::Value = client
        .query_one("SELECT envelope FROM job_outbox WHERE id = $1", &[&row])
        .await
        .expect("row")
        .get(0);
    assert_eq!(stored, envelope(match_id));

    // A job the outbox refuses takes the result down with it.
    let other = crate::common::fixture(&client, comp, home, away).await;
    let bad = json!({ "v": 2, "kind": "score_match" });
    let error = store
        .record_result_with_job(other, 3, 0, &bad)
        .await
        .expect_err("the envelope violates the outbox's check");
    let error = chain(error);
    assert!(error.contains("job_outbox_envelope_shape"), "{error}");
    assert_eq!(
        status_of(&client, other).await,
        "scheduled",
        "the result rolled back too"
    );
    assert_eq!(outbox_ids(&client).await, vec![row], "no row for the failed call");

    // A status change carries its job the same way, and a repeat (same
    // result again) still writes the job the caller asked for.
    let third = crate::common::fixture(&client, comp, home, away).await;
    let postponed = store
        .set_match_status_with_job(third, MatchStatus::Postponed, &envelope(third))
        .await
        .expect("postponed");
    let again = store
        .record_result_with_job(match_id, 2, 1, &envelope(match_id))
        .await
        .expect("same result again");
    assert!(!again.changed);
    let rows = outbox_ids(&client).await;
    assert_eq!(
        rows,
        vec![row, postponed.job_row.expect("row"), again.job_row.expect("row")]
    );
    assert_eq!(status_of(&client, third).await, "postponed");
}

#[tokio::test]
async fn the_outbox_refuses_envelopes_that_could_never_be_relayed() {
    let (_db, store, _client) = fresh().await;
    let good = envelope(1);
    let mut cases = Vec::new();
    for field in ["v", "kind", "queue", "payload", "policy"] {
        let mut e = good.clone();
        e.as_object_mut().expect("object").remove(field);
        cases.push((format!("without {field}"), e));
    }
    cases.push(("not an object".into(), json!([1, 2])));
    cases.push((
        "version 2".into(),
        json!({ "v": 2, "kind": "k", "queue": "q", "payload": {}, "policy": {} }),
    ));
    cases.push((
        "kind not a string".into(),
        json!({ "v": 1, "kind": 3, "queue": "q", "payload": {}, "policy": {} }),
    ));
    cases.push((
        "policy not an object".into(),
        json!({ "v": 1, "kind": "k", "queue": "q", "payload": {}, "policy": 1 }),
    ));
    for (what, e) in cases {
        let error = chain(store.enqueue_outbox(&e).await.expect_err(&what));
        assert!(error.contains("job_outbox_envelope_shape"), "{what}: {error}");
    }
    store.enqueue_outbox(&good).await.expect("a good envelope");
}

#[tokio::test]
async fn relays_take_disjoint_rows_and_delete_or_mark_them_in_the_same_step() {
    let (_db, store, client) = fresh().await;
    let mut ids = Vec::new();
    for m in 1..=10 {
        ids.push(store.enqueue_outbox(&envelope(m)).await.expect("row"));
    }

    // Relay A takes the four oldest and holds them while relay B runs.
    let (held, holding) = oneshot::channel::<Vec<i64>>();
    let (release, released) = oneshot::channel::<()>();
    let a_store = store.clone();
    let a = tokio::spawn(async move {
        a_store
            .relay_outbox(4, |rows| async move {
                let taken: Vec<i64> = rows.iter().map(|r| r.id).collect();
                let n = taken.len();
                let _ = held.send(taken);
                // A deadlock guard, not a timing assertion: without SKIP
                // LOCKED relay B would wait for these rows, and this never
                // ends; the test then fails on B's result below.
                let _ = tokio::time::timeout(Duration::from_secs(60), released).await;
                vec![Pushed::Relayed; n]
            })
            .await
    });
    let a_rows = holding.await.expect("A took rows");
    assert_eq!(a_rows, ids[..4].to_vec(), "oldest first");

    let mut b_rows = Vec::new();
    let b = store
        .relay_outbox(100, |rows| {
            b_rows = rows.iter().map(|r| r.id).collect();
            let results = rows
                .iter()
                .map(|r| match r.id - ids[0] {
                    4 => Pushed::Rejected("payload does not match kind".into()),
                    5 => Pushed::Kept,
                    _ => Pushed::Relayed,
                })
                .collect();
            async move { results }
        })
        .await
        .expect("B relays while A holds its rows");
    assert!(!a.is_finished(), "B did not wait for A's rows: A still holds them");
    let _ = release.send(());
    let a = a.await.expect("joined").expect("A commits");

    assert_eq!(b_rows, ids[4..].to_vec(), "B skipped A's rows and took the rest");
    assert_eq!((a.taken, a.relayed), (4, 4));
    assert_eq!((b.taken, b.relayed, b.rejected, b.kept), (6, 4, 1, 1));
    // Left: the rejected row (marked) and the kept one.
    assert_eq!(outbox_ids(&client).await, vec![ids[4], ids[5]]);
    let rejection: Option<String> = client
        .query_one("SELECT rejection FROM job_outbox WHERE id = $1", &[&ids[4]])
        .await
        .expect("row")
        .get(0);
    assert_eq!(rejection.as_deref(), Some("payload does not match kind"));
    let backlog = store.outbox_backlog().await.expect("backlog");
    assert_eq!((backlog.pending, backlog.rejected), (1, 1), "{backlog:?}");
    assert!(backlog.oldest_pending_age_ms.is_some());

    // The next batch retries the kept row and skips the rejected one.
    let mut next = Vec::new();
    store
        .relay_outbox(100, |rows| {
            next = rows.iter().map(|r| r.id).collect();
            let n = rows.len();
            async move { vec![Pushed::Relayed; n] }
        })
        .await
        .expect("batch");
    assert_eq!(next, vec![ids[5]]);
    let backlog = store.outbox_backlog().await.expect("backlog");
    assert_eq!(
        (backlog.pending, backlog.rejected, backlog.oldest_pending_age_ms),
        (0, 1, None)
    );
}

#[tokio::test]
async fn a_relay_that_dies_after_its_push_leaves_the_row_to_the_jobs_worker() {
    let (_db, store, client) = fresh().await;
    let row = store.enqueue_outbox(&envelope(1)).await.expect("row");

    // The relay pushes, then its process dies before the commit: here its
    // future is dropped mid-transaction, which closes the connection.
    let (pushed, was_pushed) = oneshot::channel::<()>();
    let relay_store = store.clone();
    let relay = tokio::spawn(async move {
        relay_store
            .relay_outbox(10, |_rows| async move {
                let _ = pushed.send(());
                std::future::pending::<Vec<Pushed>>().await
            })
            .await
    });
    was_pushed.await.expect("pushed");
    relay.abort();
    let _ = relay.await;

    // The row is still there, and free: the worker that ran the job deletes
    // it before acknowledging (it waits for the dead relay's rollback).
    assert!(
        store.settle_outbox(row).await.expect("settled"),
        "the row was left behind"
    );
    assert!(outbox_ids(&client).await.is_empty());
    assert!(!store.settle_outbox(row).await.expect("again"), "gone already");

    // So the next relay finds nothing to push a second time.
    let mut taken = 0;
    store
        .relay_outbox(10, |rows| {
            taken = rows.len();
            async move { Vec::new() }
        })
        .await
        .expect("batch");
    assert_eq!(taken, 0);
}

#[tokio::test]
async fn a_commit_wakes_the_listeners() {
    let (db, store, _client) = fresh().await;
    let mut first = Listener::connect(&db.url).await.expect("listen");
    let mut second = Listener::connect(&db.url).await.expect("listen");
    store.enqueue_outbox(&envelope(1)).await.expect("row");
    for listener in [&mut first, &mut second] {
        // A guard against a hang, not a latency assertion.
        let woke = tokio::time::timeout(Duration::from_secs(10), listener.notified())
            .await
            .expect("woken by the commit");
        assert!(woke, "the connection is up");
    }
    assert_eq!(outbox::row_id(&outbox::job_id(7)), Some(7));
}
