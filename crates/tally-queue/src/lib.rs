//! tally-queue: tally's own reliable job queue on Redis.
//!
//! Ready jobs wait in Redis lists (one per priority); everything driven by
//! time lives in sorted sets (delayed jobs and retries, in-flight leases, the
//! dead set). Every state change is one Lua script in `lua/`, and every key of
//! a queue shares one hash tag (see [`QueueKeys`] and `docs/PROTOCOL.md`).
//!
//! - [`Producer`] enqueues typed jobs (or raw envelopes), now, later, with a
//!   priority or a dedup key, one at a time or in batches.
//! - [`Worker`] runs handlers registered by job type with leases, fencing
//!   tokens, heartbeats, timeouts, retries with backoff, a dead set, and a
//!   graceful drain ([`Worker::run_until`]); each worker process also runs the
//!   promoter and takes turns at the reaper (`scheduler`).
//! - [`QueueAdmin`] reads statistics, lists and inspects jobs, pauses and
//!   limits a queue, partitions it, lists live workers and repairs the dead
//!   set.
//! - A queue may have several partitions, each its own hash slot, so one
//!   busy queue spreads over a Redis Cluster's masters (`partitions.rs`).
//!
//! The engine knows nothing of football: job types come from `tally-jobs`.

mod admin;
mod client;
mod clock;
mod config;
mod error;
mod events;
mod inspect;
mod keys;
mod partitions;
mod producer;
mod registry;
mod retry;
mod scheduler;
mod scripts;
mod worker;

pub use admin::{DeadJob, DeadSelector, QueueAdmin, QueueControl, QueueCounters, QueueStats, ReadyByPriority};
pub use client::{QueueClient, cluster_seed_urls};
pub use clock::now_ms;
pub use config::QueueConfig;
pub use error::QueueError;
pub use events::{JobEvent, JobEvents, NoEvents};
pub use inspect::{JobDetail, JobPage, JobState, JobSummary, MAX_PAGE};
pub use keys::QueueKeys;
pub use partitions::{MAX_PARTITIONS, partition_for_key};
pub use producer::{Dedup, EnqueueOptions, Enqueued, Producer};
pub use registry::WorkerInfo;
pub use worker::{JobContext, JobError, Worker, WorkerBuilder, WorkerReport};
