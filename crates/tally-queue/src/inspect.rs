//! Read-only views of the jobs of a queue, page by page and one by one, for
//! the operator console and the CLI. Nothing here changes a job: reads are
//! plain commands (not scripts), so a page may mix two instants of a busy
//! queue (a job that moved between two reads is missing from one page or
//! shown twice), never a torn job.

use std::fmt;
use std::str::FromStr;

use redis::AsyncCommands as _;
use serde::Serialize;
use tally_jobs::{Envelope, Priority};

use crate::admin::{DeadJob, QueueAdmin, page_spans};
use crate::{QueueError, QueueKeys};

/// Most jobs one page holds.
pub const MAX_PAGE: u64 = 500;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum JobState {
    /// In a ready list, waiting for a worker.
    Ready,
    /// Delayed, or waiting for a retry's due time.
    Scheduled,
    /// Claimed by a worker (running, or claimed ahead of a free slot).
    InFlight,
    /// In the dead set.
    Dead,
}

impl JobState {
    /// Every state, in the order of a job's life.
    pub const ALL: [Self; 4] = [Self::Ready, Self::Scheduled, Self::InFlight, Self::Dead];

    /// The name used in URLs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Scheduled => "scheduled",
            Self::InFlight => "inFlight",
            Self::Dead => "dead",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = QueueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|state| state.as_str() == s).ok_or_else(|| {
            QueueError::InvalidArgument(format!(
                "unknown job state {s:?}: expected one of ready, scheduled, inFlight, dead"
            ))
        })
    }
}

/// One job as a list shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSummary {
    /// Job id.
    pub id: String,
    /// Job kind, when the envelope could be read.
    pub kind: Option<String>,
    /// Where the job is.
    pub state: JobState,
    /// The ready list the job waits in or returns to (live jobs only).
    pub priority: Option<Priority>,
    /// Attempts made.
    pub attempts: u32,
    /// Attempts whose worker was lost.
    pub crashes: u32,
    /// Attempts that failed.
    pub errors: u32,
    /// When the job was first enqueued (ms since the Unix epoch), from its
    /// envelope.
    pub created_at_ms: Option<u64>,
    /// Due time (scheduled), lease expiry (in flight) or time of death
    /// (dead), in ms since the Unix epoch on Redis's clock.
    pub at_ms: Option<u64>,
    /// Why the job died (dead jobs only).
    pub error: Option<String>,
    /// The partition the job is in (0 unless the queue is partitioned).
    pub partition: u32,
}

/// One page of the jobs of a queue in one state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobPage {
    /// The state listed.
    pub state: JobState,
    /// Jobs in that state now.
    pub total: u64,
    /// Position of the first job of the page.
    pub offset: u64,
    /// The jobs: ready ones in claim order (high, normal, low; oldest
    /// first), scheduled ones by due time, in-flight ones by lease expiry,
    /// dead ones newest first; of a partitioned queue, partition by
    /// partition, each in that order.
    pub jobs: Vec<JobSummary>,
}

/// One job in full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobDetail {
    /// What a list shows.
    #[serde(flatten)]
    pub summary: JobSummary,
    /// The envelope as stored (raw: it may be why the job died).
    pub envelope: Option<String>,
    /// The trace id of the code that enqueued the job, when traced.
    pub trace_id: Option<String>,
    /// The dedup key, when the job has one.
    pub dedup_key: Option<String>,
}

/// The per-job state string (see `lua/_shared.lua`):
/// `<token>:<attempts>:<crashes>:<errors>:<prio>[<held losses>][:<dedup key>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LiveState {
    attempts: u32,
    crashes: u32,
    errors: u32,
    priority: Priority,
    dedup_key: Option<String>,
}

fn parse_state(s: &str) -> Option<LiveState> {
    let mut parts = s.splitn(5, ':');
    let _token = parts.next()?;
    let attempts = parts.next()?.parse().ok()?;
    let crashes = parts.next()?.parse().ok()?;
    let errors = parts.next()?.parse().ok()?;
    let rest = parts.next()?;
    let (prio, dedup_key) = match rest.split_once(':') {
        Some((prio, dedup)) => (prio, Some(dedup.to_owned())),
        None => (rest, None),
    };
    let priority = match prio.chars().next()?.to_ascii_lowercase() {
        'h' => Priority::High,
        'l' => Priority::Low,
        _ => Priority::Normal,
    };
    Some(LiveState {
        attempts,
        crashes,
        errors,
        priority,
        dedup_key,
    })
}

/// The trace id of a `traceparent` (`00-<trace id>-<span id>-<flags>`).
fn trace_id(envelope: &Envelope) -> Option<String> {
    let trace = envelope.trace.as_ref()?;
    trace.traceparent.split('-').nth(1).map(str::to_owned)
}

/// What the summary of a live job takes from its stored records.
fn live_summary(
    id: String,
    state: JobState,
    at_ms: Option<u64>,
    envelope: Option<&Envelope>,
    live: Option<&LiveState>,
) -> JobSummary {
    JobSummary {
        id,
        kind: envelope.map(|e| e.kind.clone()),
        state,
        priority: live.map(|l| l.priority).or_else(|| envelope.map(|e| e.policy.priority)),
        attempts: live.map_or(0, |l| l.attempts),
        crashes: live.map_or(0, |l| l.crashes),
        errors: live.map_or(0, |l| l.errors),
        created_at_ms: envelope.map(|e| e.created_at_ms),
        at_ms,
        error: None,
        partition: 0,
    }
}

impl QueueAdmin {
    /// One page (`limit` at most [`MAX_PAGE`]) of the jobs of `queue` in
    /// `state`, from position `offset`.
    pub async fn jobs(&self, queue: &str, state: JobState, offset: u64, limit: u64) -> Result<JobPage, QueueError> {
        let keys = self.partition_keys(queue).await?;
        let limit = limit.min(MAX_PAGE);
        if let [keys] = keys.as_slice() {
            return self.jobs_in(keys, state, offset, limit).await;
        }
        let mut sizes = Vec::with_capacity(keys.len());
        for keys in &keys {
            sizes.push(self.count_in(keys, state).await?);
        }
        let mut jobs = Vec::new();
        for (part, start, count) in page_spans(&sizes, offset, limit) {
            jobs.extend(self.jobs_in(&keys[part], state, start, count).await?.jobs);
        }
        Ok(JobPage {
            state,
            total: sizes.iter().sum(),
            offset,
            jobs,
        })
    }

    /// How many jobs of one partition are in `state`.
    async fn count_in(&self, keys: &QueueKeys, state: JobState) -> Result<u64, QueueError> {
        let mut conn = self.client.conn();
        Ok(match state {
            JobState::Ready => {
                let [h, n, l] = keys.ready_all();
                let (h, n, l): (u64, u64, u64) = redis::pipe().llen(h).llen(n).llen(l).query_async(&mut conn).await?;
                h + n + l
            }
            JobState::Scheduled => conn.zcard(keys.scheduled()).await?,
            JobState::InFlight => conn.zcard(keys.leases()).await?,
            JobState::Dead => conn.zcard(keys.dead()).await?,
        })
    }

    /// One page of one partition's jobs in `state`.
    async fn jobs_in(&self, keys: &QueueKeys, state: JobState, offset: u64, limit: u64) -> Result<JobPage, QueueError> {
        let mut conn = self.client.conn();
        let (total, entries): (u64, Vec<(String, Option<u64>)>) = match state {
            JobState::Ready => {
                let ready = keys.ready_all();
                let (h, n, l): (u64, u64, u64) = redis::pipe()
                    .llen(&ready[0])
                    .llen(&ready[1])
                    .llen(&ready[2])
                    .query_async(&mut conn)
                    .await?;
                // The page across the three lists, in claim order.
                let mut entries = Vec::new();
                let (mut start, mut left) = (offset, limit);
                for (key, len) in ready.iter().zip([h, n, l]) {
                    if left == 0 {
                        break;
                    }
                    if start >= len {
                        start -= len;
                        continue;
                    }
                    let ids: Vec<String> = conn.lrange(key, start as isize, (start + left - 1) as isize).await?;
                    left -= ids.len() as u64;
                    start = 0;
                    entries.extend(ids.into_iter().map(|id| (id, None)));
                }
                (h + n + l, entries)
            }
            JobState::Scheduled | JobState::InFlight => {
                let key = if state == JobState::Scheduled {
                    keys.scheduled()
                } else {
                    keys.leases()
                };
                let total: u64 = conn.zcard(&key).await?;
                let entries: Vec<(String, f64)> = if limit == 0 {
                    Vec::new()
                } else {
                    conn.zrange_withscores(&key, offset as isize, (offset + limit - 1) as isize)
                        .await?
                };
                (
                    total,
                    entries
                        .into_iter()
                        .map(|(id, score)| (id, Some(score as u64)))
                        .collect(),
                )
            }
            JobState::Dead => {
                let total: u64 = conn.zcard(keys.dead()).await?;
                let jobs = if limit == 0 {
                    Vec::new()
                } else {
                    self.dead_list_in(keys, offset as usize, limit as usize).await?
                };
                let jobs = jobs
                    .into_iter()
                    .map(|dead| JobSummary {
                        partition: keys.partition_index(),
                        ..dead_detail(dead).summary
                    })
                    .collect();
                return Ok(JobPage {
                    state,
                    total,
                    offset,
                    jobs,
                });
            }
        };
        let jobs = self.live_jobs(keys, state, entries).await?;
        Ok(JobPage {
            state,
            total,
            offset,
            jobs,
        })
    }

    /// Summaries of live jobs `(id, at)`, in the order given.
    async fn live_jobs(
        &self,
        keys: &QueueKeys,
        state: JobState,
        entries: Vec<(String, Option<u64>)>,
    ) -> Result<Vec<JobSummary>, QueueError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = entries.iter().map(|(id, _)| id.as_str()).collect();
        let mut conn = self.client.conn();
        let (envelopes, states): (Vec<Option<Vec<u8>>>, Vec<Option<String>>) = redis::pipe()
            .cmd("HMGET")
            .arg(keys.jobs())
            .arg(&ids)
            .cmd("HMGET")
            .arg(keys.state())
            .arg(&ids)
            .query_async(&mut conn)
            .await?;
        Ok(entries
            .into_iter()
            .zip(envelopes.into_iter().zip(states))
            .map(|((id, at), (envelope, live))| {
                let envelope = envelope.as_deref().and_then(|b| Envelope::decode(b).ok());
                let live = live.as_deref().and_then(parse_state);
                JobSummary {
                    partition: keys.partition_index(),
                    ..live_summary(id, state, at, envelope.as_ref(), live.as_ref())
                }
            })
            .collect())
    }

    /// One job of `queue` by id, live or dead; `None` when Redis holds no
    /// such job (finished jobs leave nothing behind).
    pub async fn job(&self, queue: &str, id: &str) -> Result<Option<JobDetail>, QueueError> {
        for keys in self.partition_keys(queue).await? {
            if let Some(mut job) = self.job_in(&keys, id).await? {
                job.summary.partition = keys.partition_index();
                return Ok(Some(job));
            }
        }
        Ok(None)
    }

    /// One job of one partition by id.
    async fn job_in(&self, keys: &QueueKeys, id: &str) -> Result<Option<JobDetail>, QueueError> {
        let mut conn = self.client.conn();
        #[expect(clippy::type_complexity, reason = "the shape of one pipeline reply")]
        let (envelope, live, due, lease, dead_at): (
            Option<Vec<u8>>,
            Option<String>,
            Option<f64>,
            Option<f64>,
            Option<f64>,
        ) = redis::pipe()
            .hget(keys.jobs(), id)
            .hget(keys.state(), id)
            .zscore(keys.scheduled(), id)
            .zscore(keys.leases(), id)
            .zscore(keys.dead(), id)
            .query_async(&mut conn)
            .await?;
        if let Some(raw) = envelope {
            let decoded = Envelope::decode(&raw).ok();
            let live = live.as_deref().and_then(parse_state);
            let (state, at) = match (lease, due) {
                (Some(expiry), _) => (JobState::InFlight, Some(expiry as u64)),
                (None, Some(due)) => (JobState::Scheduled, Some(due as u64)),
                (None, None) => (JobState::Ready, None),
            };
            return Ok(Some(JobDetail {
                summary: live_summary(id.to_owned(), state, at, decoded.as_ref(), live.as_ref()),
                trace_id: decoded.as_ref().and_then(trace_id),
                dedup_key: live
                    .and_then(|l| l.dedup_key)
                    .or_else(|| decoded.as_ref().and_then(|e| e.dedup_key.clone())),
                envelope: Some(String::from_utf8_lossy(&raw).into_owned()),
            }));
        }
        if dead_at.is_none() {
            return Ok(None);
        }
        let dead = self
            .dead_records(keys, &[id.as_bytes().to_vec()])
            .await?
            .pop()
            .flatten();
        Ok(dead.map(dead_detail))
    }
}

/// A dead job in full, its envelope decoded once (it may not decode: then
/// only the raw bytes are shown).
fn dead_detail(dead: DeadJob) -> JobDetail {
    let decoded = dead
        .envelope
        .as_deref()
        .and_then(|e| Envelope::decode(e.as_bytes()).ok());
    JobDetail {
        summary: JobSummary {
            id: dead.id,
            kind: dead.kind,
            state: JobState::Dead,
            priority: None,
            attempts: dead.attempts,
            crashes: dead.crashes,
            errors: dead.errors,
            created_at_ms: decoded.as_ref().map(|e| e.created_at_ms),
            at_ms: Some(dead.died_at_ms),
            error: Some(dead.error),
            partition: 0,
        },
        trace_id: decoded.as_ref().and_then(trace_id),
        dedup_key: decoded.and_then(|e| e.dedup_key),
        envelope: dead.envelope,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_parse_back_from_their_names() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>().ok(), Some(state));
        }
        assert!("running".parse::<JobState>().is_err());
    }

    #[test]
    fn the_per_job_state_string_parses() {
        let held = parse_state("41:2:1:1:N3:match-7").expect("state");
        assert_eq!(
            held,
            LiveState {
                attempts: 2,
                crashes: 1,
                errors: 1,
                priority: Priority::Normal,
                dedup_key: Some("match-7".into()),
            }
        );
        let waiting = parse_state("0:0:0:0:h").expect("state");
        assert_eq!((waiting.priority, waiting.dedup_key), (Priority::High, None));
        assert_eq!(parse_state("garbage"), None);
    }
}
