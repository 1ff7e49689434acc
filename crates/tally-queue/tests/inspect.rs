//! What operators see: jobs listed by state and page, one job in full, and
//! the registry of live worker processes (what the operator console and
//! `tally queue workers` show).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Echo, QUEUE, eventually, setup, spawn};
use tally_jobs::{Priority, TraceContext};
use tally_queue::{EnqueueOptions, JobContext, JobError, JobState, Producer, QueueAdmin, QueueConfig, Worker};
use tokio::sync::Semaphore;

fn echo(n: u64, priority: Priority) -> Echo {
    Echo {
        priority: Some(priority),
        ..Echo::new(n)
    }
}

fn ids(page: &tally_queue::JobPage) -> Vec<String> {
    page.jobs.iter().map(|j| j.id.clone()).collect()
}

#[tokio::test]
async fn ready_and_scheduled_jobs_page_in_claim_and_due_order() {
    let (_redis, client) = setup().await;
    let producer = Producer::new(client.clone());
    let admin = QueueAdmin::new(client.clone());
    // Enqueued low first: the listing must follow the claim order
    // (high, normal, low), not the enqueue order.
    let mut want = Vec::new();
    for (n, prio) in [
        (1, Priority::Low),
        (2, Priority::Normal),
        (3, Priority::High),
        (4, Priority::Normal),
        (5, Priority::High),
    ] {
        let e = producer.enqueue(&echo(n, prio)).await.expect("enqueue");
        want.push((n, e.id));
    }
    let id = |n: u64| {
        want.iter()
            .find(|(m, _)| *m == n)
            .map(|(_, id)| id.clone())
            .expect("id")
    };
    let page = admin.jobs(QUEUE, JobState::Ready, 0, 10).await.expect("jobs");
    assert_eq!(page.total, 5);
    assert_eq!(ids(&page), [3, 5, 2, 4, 1].map(id));
    assert_eq!(page.jobs[0].priority, Some(Priority::High));
    assert_eq!(page.jobs[0].kind.as_deref(), Some("echo"));
    assert!(page.jobs.iter().all(|j| j.state == JobState::Ready && j.attempts == 0));
    // A page that starts in one list and ends in the next.
    let page = admin.jobs(QUEUE, JobState::Ready, 1, 3).await.expect("jobs");
    assert_eq!((page.offset, ids(&page)), (1, [5, 2, 4].map(id).to_vec()));
    let page = admin.jobs(QUEUE, JobState::Ready, 5, 3).await.expect("jobs");
    assert!(page.jobs.is_empty());

    // Scheduled: by due time, with the due time shown.
    let later = producer
        .enqueue_with(&Echo::new(20), EnqueueOptions::delayed(Duration::from_secs(600)))
        .await
        .expect("delayed");
    let sooner = producer
        .enqueue_with(&Echo::new(21), EnqueueOptions::delayed(Duration::from_secs(300)))
        .await
        .expect("delayed");
    let page = admin.jobs(QUEUE, JobState::Scheduled, 0, 10).await.expect("jobs");
    assert_eq!(ids(&page), [sooner.id.clone(), later.id.clone()]);
    let (a, b) = (page.jobs[0].at_ms.expect("due"), page.jobs[1].at_ms.expect("due"));
    assert!(b > a && b - a >= 290_000, "{a} {b}");

    // One job in full, with its trace id and dedup key.
    let traced = producer
        .enqueue_with(
            &Echo {
                key: Some("match:7".into()),
                ..Echo::new(30)
            },
            EnqueueOptions {
                trace: Some(TraceContext {
                    traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
                    tracestate: None,
                }),
                ..EnqueueOptions::default()
            },
        )
        .await
        .expect("enqueue");
    let job = admin.job(QUEUE, &traced.id).await.expect("job").expect("found");
    assert_eq!(job.summary.state, JobState::Ready);
    assert_eq!(job.trace_id.as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
    assert_eq!(job.dedup_key.as_deref(), Some("match:7"));
    assert!(job.envelope.as_deref().is_some_and(|e| e.contains("\"n\":30")));
    let job = admin.job(QUEUE, &later.id).await.expect("job").expect("found");
    assert_eq!(job.summary.state, JobState::Scheduled);
    assert_eq!(admin.job(QUEUE, "no-such-job").await.expect("job"), None);
    assert!(admin.jobs("bad{queue}", JobState::Ready, 0, 1).await.is_err());
    assert!("running".parse::<JobState>().is_err());
}

#[tokio::test]
async fn in_flight_and_dead_jobs_show_their_attempts_and_errors() {
    let (_redis, client) = setup().await;
    let producer = Producer::new(client.clone());
    let admin = QueueAdmin::new(client.clone());
    // n = 1 waits for a permit (in flight while the test looks); n = 2
    // fails for good.
    let gate = Arc::new(Semaphore::new(0));
    let gate2 = gate.clone();
    let worker = Worker::builder(client.clone(), QUEUE)
        .concurrency(2)
        .handle(move |job: Echo, _ctx: JobContext| {
            let gate = gate2.clone();
            async move {
                if job.n == 2 {
                    return Err(JobError::give_up("<b>bad</b> input"));
                }
                let _permit = gate.acquire().await.map_err(JobError::retry)?;
                Ok(())
            }
        })
        .build()
        .expect("build");
    let running = spawn(worker);
    let held = producer.enqueue(&Echo::new(1)).await.expect("enqueue");
    let doomed = producer.enqueue(&Echo::new(2)).await.expect("enqueue");
    eventually("one in flight, one dead", Duration::from_secs(10), || {
        let admin = admin.clone();
        async move {
            let s = admin.stats(QUEUE).await.expect("stats");
            s.in_flight == 1 && s.dead == 1
        }
    })
    .await;
    let page = admin.jobs(QUEUE, JobState::InFlight, 0, 10).await.expect("jobs");
    assert_eq!(ids(&page), vec![held.id.clone()]);
    assert_eq!(page.jobs[0].attempts, 1);
    assert!(page.jobs[0].at_ms.is_some_and(|expiry| expiry > tally_queue::now_ms()));
    let job = admin.job(QUEUE, &held.id).await.expect("job").expect("found");
    assert_eq!(job.summary.state, JobState::InFlight);

    let page = admin.jobs(QUEUE, JobState::Dead, 0, 10).await.expect("jobs");
    assert_eq!((page.total, ids(&page)), (1, vec![doomed.id.clone()]));
    assert_eq!(page.jobs[0].error.as_deref(), Some("gave up: <b>bad</b> input"));
    assert_eq!(page.jobs[0].errors, 1);
    let job = admin.job(QUEUE, &doomed.id).await.expect("job").expect("found");
    assert_eq!(job.summary.state, JobState::Dead);
    assert!(job.summary.created_at_ms.is_some());
    assert!(job.envelope.is_some());

    gate.add_permits(1);
    running.stop().await;
    // Finished jobs leave nothing to show.
    assert_eq!(admin.job(QUEUE, &held.id).await.expect("job"), None);
}

#[tokio::test]
async fn live_workers_are_listed_and_vanish_when_they_stop_or_die() {
    let (redis, client) = setup().await;
    let admin = QueueAdmin::new(client.clone());
    let producer = Producer::new(client.clone());
    let gate = Arc::new(Semaphore::new(0));
    let build = |concurrency: usize| {
        let gate = gate.clone();
        Worker::builder(client.clone(), QUEUE)
            .concurrency(concurrency)
            .handle(move |_job: Echo, _ctx: JobContext| {
                let gate = gate.clone();
                async move {
                    let _permit = gate.acquire().await.map_err(JobError::retry)?;
                    Ok(())
                }
            })
            .build()
            .expect("build")
    };
    let first = spawn(build(3));
    let second = spawn(build(7));
    eventually("two registered workers", Duration::from_secs(10), || {
        let admin = admin.clone();
        async move { admin.workers(QUEUE).await.expect("workers").len() == 2 }
    })
    .await;
    let workers = admin.workers(QUEUE).await.expect("workers");
    let mut concurrency: Vec<u32> = workers.iter().map(|w| w.concurrency).collect();
    concurrency.sort_unstable();
    assert_eq!(concurrency, [3, 7]);
    for w in &workers {
        assert_eq!((w.queue.as_str(), w.pid), (QUEUE, std::process::id()));
        assert!(!w.host.is_empty() && !w.version.is_empty() && !w.program.is_empty());
        assert!(w.heartbeat_at_ms >= w.started_at_ms);
    }

    // A job held shows as in flight on the worker holding it.
    producer.enqueue(&Echo::new(1)).await.expect("enqueue");
    eventually("a worker reporting one job in flight", Duration::from_secs(10), || {
        let admin = admin.clone();
        async move {
            let w = admin.workers(QUEUE).await.expect("workers");
            w.iter().map(|w| w.in_flight).sum::<u32>() == 1
        }
    })
    .await;
    gate.add_permits(1);

    // A graceful stop leaves the registry at once; a killed process's entry
    // expires by itself (its TTL, judged by Redis).
    second.stop().await;
    let left = admin.workers(QUEUE).await.expect("workers");
    assert_eq!(left.iter().map(|w| w.concurrency).collect::<Vec<_>>(), [3]);
    first.kill().await;
    let config: QueueConfig = common::fast_config(&redis.namespace);
    eventually("the killed worker's entry to expire", config.lease * 10, || {
        let admin = admin.clone();
        async move { admin.workers(QUEUE).await.expect("workers").is_empty() }
    })
    .await;
    let mut conn = redis.connection().await;
    let members: Vec<String> = redis::AsyncCommands::smembers(&mut conn, client.keys(QUEUE).workers())
        .await
        .expect("smembers");
    assert!(members.is_empty(), "expired ids are dropped from the set: {members:?}");
}
