//! The wire protocol of docs/PROTOCOL.md, exercised the way a producer in
//! another language would: plain Redis commands, no tally code on the
//! producing side.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Echo, QUEUE, eventually, private_setup, raw_connection, spawn, wait_until_blocked};
use tally_queue::{JobContext, QueueAdmin, QueueClient, QueueConfig, Worker, now_ms};

/// An envelope as a foreign producer writes it (docs/PROTOCOL.md, "Envelope").
fn envelope(id: &str, n: u64, priority: &str) -> String {
    format!(
        r#"{{"v":1,"id":"{id}","kind":"echo","queue":"test","payload":{{"n":{n}}},"policy":{{"maxAttempts":3,"backoff":{{"type":"exponential","baseMs":5000,"maxMs":600000}},"timeoutMs":120000,"priority":"{priority}"}},"createdAtMs":{now},"trace":{{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}}}"#,
        now = now_ms()
    )
}

#[tokio::test]
async fn raw_redis_commands_enqueue_now_and_later() {
    let (server, client) = private_setup().await;
    // Only a wake-up can deliver the immediate job quickly: the worker's idle
    // poll is a minute long.
    let config = QueueConfig {
        idle_poll: Duration::from_mins(1),
        ..client.config().clone()
    };
    let client = QueueClient::new(&server.url(), config).expect("client");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let worker = Worker::builder(client.clone(), QUEUE)
        .concurrency(1)
        .handle(move |job: Echo, ctx: JobContext| {
            s.lock()
                .expect("lock")
                .push((job.n, ctx.id.clone(), ctx.trace.is_some(), ctx.attempt, now_ms()));
            async { Ok(()) }
        })
        .build()
        .expect("build");
    let running = spawn(worker);
    // The worker finds the queue empty and blocks on the wake list.
    wait_until_blocked(&server.url(), 1).await;

    // Exactly the commands of docs/PROTOCOL.md, key names spelled out.
    let ns = &client.config().prefix;
    let mut conn = raw_connection(&server.url()).await;
    let _: () = redis::pipe()
        .atomic()
        .cmd("HSET")
        .arg(format!("{ns}:{{test}}:jobs"))
        .arg("ext-1")
        .arg(envelope("ext-1", 1, "high"))
        .cmd("RPUSH")
        .arg(format!("{ns}:{{test}}:ready:high"))
        .arg("ext-1")
        .cmd("RPUSH")
        .arg(format!("{ns}:{{test}}:wake"))
        .arg("1")
        .cmd("HINCRBY")
        .arg(format!("{ns}:{{test}}:stats"))
        .arg("enqueued")
        .arg(1)
        .query_async(&mut conn)
        .await
        .expect("enqueue now");
    eventually("the raw job ran", Duration::from_secs(20), || async {
        seen.lock().expect("lock").len() == 1
    })
    .await;

    // Later: scheduled by due time, priority read from the envelope. A
    // second job due 40 ms earlier wakes the promoter before the first is
    // due: promoting anything early would show.
    let due = now_ms() + 300;
    let _: () = redis::pipe()
        .atomic()
        .cmd("HSET")
        .arg(format!("{ns}:{{test}}:jobs"))
        .arg("ext-2")
        .arg(envelope("ext-2", 2, "low"))
        .cmd("HSET")
        .arg(format!("{ns}:{{test}}:jobs"))
        .arg("ext-3")
        .arg(envelope("ext-3", 3, "normal"))
        .cmd("ZADD")
        .arg(format!("{ns}:{{test}}:scheduled"))
        .arg(due)
        .arg("ext-2")
        .cmd("ZADD")
        .arg(format!("{ns}:{{test}}:scheduled"))
        .arg(due - 5)
        .arg("ext-3")
        .cmd("PUBLISH")
        .arg(format!("{ns}:{{test}}:due"))
        .arg(due - 5)
        .query_async(&mut conn)
        .await
        .expect("enqueue later");
    eventually("the delayed raw jobs ran", Duration::from_secs(20), || async {
        seen.lock().expect("lock").len() == 3
    })
    .await;
    running.stop().await;
    let seen = seen.lock().expect("lock").clone();
    // Each started (on this host's clock, Redis's too here) no earlier than
    // it was due.
    let at = |n: u64| seen.iter().find(|s| s.0 == n).map(|s| s.4).expect("ran");
    assert!(
        at(3) + 1 >= due - 5,
        "ext-3 started {} ms early",
        (due - 5).saturating_sub(at(3))
    );
    assert!(at(2) + 1 >= due, "ext-2 started {} ms early", due.saturating_sub(at(2)));
    let seen: Vec<_> = seen
        .into_iter()
        .map(|(n, id, traced, attempt, _)| (n, id, traced, attempt))
        .collect();
    assert_eq!(
        seen,
        vec![
            (1, "ext-1".to_owned(), true, 1),
            (3, "ext-3".to_owned(), true, 1),
            (2, "ext-2".to_owned(), true, 1)
        ]
    );
    let stats = QueueAdmin::new(client).stats(QUEUE).await.expect("stats");
    assert_eq!(
        (
            stats.counters.completed,
            stats.counters.enqueued,
            stats.ready,
            stats.scheduled
        ),
        (3, 1, 0, 0)
    );
}
