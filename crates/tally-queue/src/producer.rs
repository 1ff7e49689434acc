//! Enqueueing jobs: typed jobs from `tally-jobs`, or raw envelopes (the
//! gateway and the CLI), now, after a delay or at a time, one at a time or in
//! batches of one script call per thousand jobs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::try_join_all;
use tally_jobs::{Envelope, Job, Priority, TraceContext};

use crate::clock::now_ms;
use crate::config::check_queue_name;
use crate::keys::ENQUEUE_CHUNK;
use crate::{QueueClient, QueueError, scripts};

/// What happened to an enqueued job.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Enqueued {
    /// The id the job lives under: a new one, or the waiting job's id when
    /// the enqueue was coalesced into it.
    pub id: String,
    /// True when a waiting job with the same dedup key absorbed this enqueue.
    pub deduplicated: bool,
}

/// Deduplication choice of one enqueue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Dedup {
    /// Use the job type's [`Job::dedup_key`] (the envelope's `dedupKey`).
    #[default]
    FromJob,
    /// Use this key instead.
    Key(String),
    /// Never coalesce this enqueue.
    Never,
}

/// Options of one enqueue. `Default` means: now, the job's own priority and
/// dedup key, no trace context.
#[derive(Debug, Clone, Default)]
pub struct EnqueueOptions {
    /// Start no earlier than this long from now.
    pub delay: Option<Duration>,
    /// Start no earlier than this time (wins over `delay`).
    pub at: Option<SystemTime>,
    /// Priority override (written into the envelope's policy too).
    pub priority: Option<Priority>,
    /// Deduplication override.
    pub dedup: Dedup,
    /// W3C trace context to carry to the worker.
    pub trace: Option<TraceContext>,
    /// Job id to use instead of a fresh UUID v7 (must be unique in the queue).
    pub id: Option<String>,
}

impl EnqueueOptions {
    /// Start after `delay`.
    pub fn delayed(delay: Duration) -> Self {
        Self {
            delay: Some(delay),
            ..Self::default()
        }
    }

    fn due_ms(&self, now: u64) -> u64 {
        if let Some(at) = self.at {
            return at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        }
        self.delay.map_or(0, |d| now + d.as_millis() as u64)
    }
}

/// Enqueues jobs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Producer {
    client: QueueClient,
}

impl Producer {
    /// A producer on `client`.
    pub fn new(client: QueueClient) -> Self {
        Self { client }
    }

    /// Enqueues `job` on its queue, to run now.
    pub async fn enqueue<J: Job>(&self, job: &J) -> Result<Enqueued, QueueError> {
        self.enqueue_with(job, EnqueueOptions::default()).await
    }

    /// Enqueues `job` with options (delay, time, priority, dedup, trace).
    pub async fn enqueue_with<J: Job>(&self, job: &J, options: EnqueueOptions) -> Result<Enqueued, QueueError> {
        let envelope = Envelope::new(job, new_id(options.id.as_deref()), now_ms())?;
        self.enqueue_envelope_with(envelope, options).await
    }

    /// Enqueues many jobs of one type in as few round trips as possible (one
    /// script call per thousand jobs, pipelined).
    pub async fn enqueue_batch<J: Job>(&self, jobs: &[J]) -> Result<Vec<Enqueued>, QueueError> {
        self.enqueue_batch_with(jobs, &EnqueueOptions::default()).await
    }

    /// [`Producer::enqueue_batch`] with the same options for every job
    /// (`options.id` is ignored: each job gets a fresh id).
    pub async fn enqueue_batch_with<J: Job>(
        &self,
        jobs: &[J],
        options: &EnqueueOptions,
    ) -> Result<Vec<Enqueued>, QueueError> {
        let now = now_ms();
        let envelopes = jobs
            .iter()
            .map(|job| {
                let mut envelope = Envelope::new(job, new_id(None), now)?;
                apply_options(&mut envelope, options);
                Ok((envelope, options.due_ms(now)))
            })
            .collect::<Result<Vec<_>, QueueError>>()?;
        self.push(J::QUEUE, &envelopes, now).await
    }

    /// Enqueues a ready-made envelope (from the gateway, the CLI or another
    /// service) on the queue it names.
    pub async fn enqueue_envelope(&self, envelope: Envelope) -> Result<Enqueued, QueueError> {
        self.enqueue_envelope_with(envelope, EnqueueOptions::default()).await
    }

    /// [`Producer::enqueue_envelope`] with options (`options.id` is ignored:
    /// the envelope has its id).
    pub async fn enqueue_envelope_with(
        &self,
        mut envelope: Envelope,
        options: EnqueueOptions,
    ) -> Result<Enqueued, QueueError> {
        let now = now_ms();
        apply_options(&mut envelope, &options);
        let due = options.due_ms(now);
        let queue = envelope.queue.clone();
        let mut out = self.push(&queue, &[(envelope, due)], now).await?;
        out.pop()
            .ok_or_else(|| QueueError::Protocol("enqueue returned no result".into()))
    }

    /// Sends envelopes of one queue, with their due times, chunked.
    async fn push(&self, queue: &str, envelopes: &[(Envelope, u64)], now: u64) -> Result<Vec<Enqueued>, QueueError> {
        check_queue_name(queue)?;
        if let Some((bad, _)) = envelopes.iter().find(|(e, _)| e.queue != queue || e.id.is_empty()) {
            return Err(QueueError::InvalidArgument(format!(
                "envelope {:?} is for queue {:?}, not {queue:?}, or has no id",
                bad.id, bad.queue
            )));
        }
        let limit = self.client.config().max_envelope_bytes;
        let encoded: Vec<_> = envelopes.iter().map(|(envelope, _)| envelope.encode()).collect();
        if let Some((bytes, (envelope, _))) = encoded.iter().zip(envelopes).find(|(bytes, _)| bytes.len() > limit) {
            return Err(QueueError::InvalidArgument(format!(
                "job {:?} ({}) is {} bytes encoded, above the limit of {limit} bytes \
                 (QueueConfig::max_envelope_bytes): pass a reference to large data, not the data",
                envelope.id,
                envelope.kind,
                bytes.len()
            )));
        }
        // A partitioned queue gets each job on the partition its dedup key
        // hashes to (so coalescing still meets the waiting job), the rest on
        // the one their id hashes to (so a job sent again meets its first
        // copy); one queue has one partition and this is a no-op.
        let partitions = self.client.partitions(queue).await?;
        let keys = self.client.partition_keys(queue, partitions);
        let mut routed: Vec<Vec<usize>> = vec![Vec::new(); keys.len()];
        for (i, (envelope, _)) in envelopes.iter().enumerate() {
            routed[crate::partitions::route(envelope.dedup_key.as_deref(), &envelope.id, partitions) as usize].push(i);
        }
        let chunks: Vec<(&crate::QueueKeys, &[usize])> = routed
            .iter()
            .zip(&keys)
            .flat_map(|(indices, keys)| indices.chunks(ENQUEUE_CHUNK).map(move |chunk| (keys, chunk)))
            .collect();
        let calls = chunks.iter().map(|&(keys, chunk)| {
            let jobs: Vec<_> = chunk.iter().map(|&i| (&envelopes[i], encoded[i].as_str())).collect();
            async move { scripts::enqueue_jobs(&self.client, keys, now, &jobs).await }
        });
        let results = self.client.observe(try_join_all(calls).await)?;
        // Back in the order the jobs were given.
        let mut out: Vec<Option<Enqueued>> = vec![None; envelopes.len()];
        for ((_, chunk), result) in chunks.iter().zip(results) {
            for (&i, enqueued) in chunk.iter().zip(result) {
                out[i] = Some(enqueued);
            }
        }
        out.into_iter()
            .map(|e| e.ok_or_else(|| QueueError::Protocol("an enqueue reply was short".into())))
            .collect()
    }
}

fn apply_options(envelope: &mut Envelope, options: &EnqueueOptions) {
    if let Some(priority) = options.priority {
        envelope.policy.priority = priority;
    }
    match &options.dedup {
        Dedup::FromJob => {}
        Dedup::Key(key) => envelope.dedup_key = Some(key.clone()),
        Dedup::Never => envelope.dedup_key = None,
    }
    if envelope.dedup_key.as_deref() == Some("") {
        envelope.dedup_key = None;
    }
    if options.trace.is_some() {
        envelope.trace.clone_from(&options.trace);
    }
}

fn new_id(given: Option<&str>) -> String {
    given.map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned)
}
