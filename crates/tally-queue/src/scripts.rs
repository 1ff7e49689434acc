//! The Lua scripts and their Rust bindings, in one place.
//!
//! Each file in `lua/` is one atomic state change; helpers shared by several
//! scripts (state format, dead-set rules) live in `lua/_shared.lua` and are
//! prepended at compile time. [`redis::Script`] sends `EVALSHA` and falls
//! back to loading the script when Redis answers `NOSCRIPT` (after a restart
//! or `SCRIPT FLUSH`), so nothing has to be reloaded by hand.
//!
//! Below the scripts, one function per script passes it its keys and
//! arguments in the order the Lua file reads them and decodes its reply, so
//! a change to a script touches its Lua file and its function here. The
//! callers (producer, worker runtime, promoter and reaper, admin) keep only
//! their policy: retries, events, counters.

use std::sync::LazyLock;
use std::time::Duration;

use redis::{Script, Value};
use tally_jobs::Envelope;

use crate::clock::{millis, now_ms};
use crate::keys::{MOVE_BATCH, WAKE_CAP, priority_letter};
use crate::{Enqueued, QueueClient, QueueError, QueueKeys};

macro_rules! script {
    ($name:ident, $file:literal) => {
        #[doc = concat!("`lua/", $file, "` with the shared helpers.")]
        pub(crate) static $name: LazyLock<Script> = LazyLock::new(|| {
            Script::new(concat!(
                include_str!("../lua/_shared.lua"),
                include_str!(concat!("../lua/", $file))
            ))
        });
    };
}

script!(ENQUEUE_JOBS, "enqueue_jobs.lua");
script!(CLAIM_JOBS, "claim_jobs.lua");
script!(COMPLETE_JOBS, "complete_jobs.lua");
script!(FAIL_JOB, "fail_job.lua");
script!(EXTEND_LEASES, "extend_leases.lua");
script!(REQUEUE_JOBS, "requeue_jobs.lua");
script!(PROMOTE_DUE, "promote_due.lua");
script!(REAP_EXPIRED, "reap_expired.lua");
script!(RETRY_DEAD, "retry_dead.lua");
script!(PURGE_DEAD, "purge_dead.lua");
script!(RAISE_PARTITIONS, "raise_partitions.lua");

// ---- enqueue_jobs.lua -------------------------------------------------------

/// Enqueues one chunk of jobs: `(envelope, due ms or 0)` with their encoded
/// bodies. Replies with each job's id and whether it was coalesced.
pub(crate) async fn enqueue_jobs(
    client: &QueueClient,
    keys: &QueueKeys,
    now: u64,
    jobs: &[(&(Envelope, u64), &str)],
) -> Result<Vec<Enqueued>, QueueError> {
    let mut invocation = ENQUEUE_JOBS.prepare_invoke();
    invocation
        .key(keys.jobs())
        .key(keys.state())
        .key(keys.scheduled())
        .key(keys.dedup())
        .key(keys.stats())
        .key(keys.wake());
    for key in keys.ready_all() {
        invocation.key(key);
    }
    invocation.arg(now).arg(keys.due_channel()).arg(WAKE_CAP);
    for ((envelope, due), body) in jobs {
        invocation
            .arg(&envelope.id)
            .arg(body)
            .arg(priority_letter(envelope.policy.priority))
            .arg(*due)
            .arg(envelope.dedup_key.as_deref().unwrap_or(""));
    }
    let mut conn = client.conn();
    let reply: Vec<Value> = invocation.invoke_async(&mut conn).await?;
    parse_enqueued(&reply)
}

fn parse_enqueued(reply: &[Value]) -> Result<Vec<Enqueued>, QueueError> {
    reply
        .chunks(2)
        .map(|pair| match pair {
            [id, flag] => Ok(Enqueued {
                id: redis::from_redis_value_ref(id)?,
                deduplicated: redis::from_redis_value_ref::<i64>(flag)? == 1,
            }),
            _ => Err(QueueError::Protocol("odd enqueue reply".into())),
        })
        .collect()
}

// ---- claim_jobs.lua ---------------------------------------------------------

/// A job the claim script handed out.
pub(crate) struct Claimed {
    pub(crate) id: String,
    pub(crate) envelope: Option<Vec<u8>>,
    pub(crate) attempt: u32,
    pub(crate) crashes: u32,
    pub(crate) errors: u32,
    pub(crate) token: u64,
    /// Claimed ahead of a free slot (Redis marked it held, see `claim_jobs.lua`).
    pub(crate) held: bool,
    /// The id as Redis holds it when it is not UTF-8 (`id` is then a lossy
    /// copy for logs): such a job can only be buried, by these bytes.
    pub(crate) bad_id: Option<Vec<u8>>,
}

/// Reply of the claim script: acknowledgement statuses, then claimed jobs.
pub(crate) struct ClaimReply {
    pub(crate) acks: Vec<i64>,
    /// The queue is paused, or at its global limit with ready jobs left:
    /// claim again after a pause, not when woken.
    pub(crate) throttled: bool,
    pub(crate) jobs: Vec<Claimed>,
}

/// Acknowledges `acks` (`(id, token)`) and claims up to `count` jobs, the
/// first `start_now` of them to start at once, in one call. `request`
/// (`(resent, id)`) names the call so that a resent one gets the same jobs
/// back (see `claim_jobs.lua`).
pub(crate) async fn claim_jobs<'a>(
    client: &QueueClient,
    keys: &QueueKeys,
    worker_id: &str,
    request: Option<(bool, u64)>,
    count: usize,
    start_now: usize,
    acks: impl IntoIterator<Item = (&'a str, u64)>,
) -> Result<ClaimReply, QueueError> {
    let config = client.config();
    let mut invocation = CLAIM_JOBS.prepare_invoke();
    for key in keys.ready_all() {
        invocation.key(key);
    }
    invocation
        .key(keys.jobs())
        .key(keys.state())
        .key(keys.leases())
        .key(keys.token())
        .key(keys.dedup())
        .key(keys.wake())
        .key(keys.stats())
        .key(keys.claim_record(worker_id))
        .key(keys.control())
        .arg(request.map_or_else(
            || "-".to_owned(),
            |(retry, id)| format!("{}:{}", if retry { 'r' } else { 'n' }, id),
        ))
        .arg(millis(config.lease))
        .arg(count)
        .arg(start_now);
    for (id, token) in acks {
        invocation.arg(id).arg(token);
    }
    let mut conn = client.conn();
    let reply: Vec<Value> = invocation.invoke_async(&mut conn).await?;
    // Owned conversions: the envelopes move out of the reply without a copy.
    let mut values = reply.into_iter();
    let Some(ack_statuses) = values.next() else {
        return Err(QueueError::Protocol("empty claim reply".into()));
    };
    let acks: Vec<i64> = redis::from_redis_value(ack_statuses)?;
    let Some(throttled) = values.next() else {
        return Err(QueueError::Protocol("claim reply without its throttled flag".into()));
    };
    let throttled = redis::from_redis_value::<i64>(throttled)? == 1;
    let first: u64 = match values.next() {
        Some(first) => redis::from_redis_value(first)?,
        None => 0,
    };
    let mut jobs = Vec::with_capacity(values.len() / 3);
    while let Some(id) = values.next() {
        let mut field = || {
            values
                .next()
                .ok_or_else(|| QueueError::Protocol("claim reply not three values per job".into()))
        };
        let (envelope, meta) = (field()?, field()?);
        // 0: a first claim (attempt 1, token `first` + position); else the
        // job's attempt, crashes, errors and token.
        let (attempt, crashes, errors, token) = match meta {
            Value::Int(0) => (1, 0, 0, first + jobs.len() as u64 + 1),
            meta => redis::from_redis_value::<(u32, u32, u32, u64)>(meta)?,
        };
        // Ids are bytes to Redis: one that is not UTF-8 (from another
        // producer) must harm only its own job, not the whole reply.
        let (id, bad_id) = match String::from_utf8(redis::from_redis_value::<Vec<u8>>(id)?) {
            Ok(id) => (id, None),
            Err(err) => (
                String::from_utf8_lossy(err.as_bytes()).into_owned(),
                Some(err.into_bytes()),
            ),
        };
        jobs.push(Claimed {
            id,
            bad_id,
            envelope: redis::from_redis_value(envelope)?,
            attempt,
            crashes,
            errors,
            token,
            held: jobs.len() >= start_now,
        });
    }
    Ok(ClaimReply { acks, throttled, jobs })
}

// ---- complete_jobs.lua ------------------------------------------------------

/// Acknowledges finished attempts `(id, token)`; a status per job (1 done,
/// 2 already finished, 0 stale token).
pub(crate) async fn complete_jobs<'a>(
    client: &QueueClient,
    keys: &QueueKeys,
    jobs: impl IntoIterator<Item = (&'a str, u64)>,
) -> Result<Vec<i64>, QueueError> {
    let mut invocation = COMPLETE_JOBS.prepare_invoke();
    invocation
        .key(keys.jobs())
        .key(keys.state())
        .key(keys.leases())
        .key(keys.stats());
    for (id, token) in jobs {
        invocation.arg(id).arg(token);
    }
    let mut conn = client.conn();
    Ok(invocation.invoke_async(&mut conn).await?)
}

// ---- fail_job.lua -----------------------------------------------------------

/// Records a failed attempt: retry at `due` (ms), or dead when `due` < 0.
/// Replies 1 (retry scheduled), 2 (dead) or 0 (stale token).
pub(crate) async fn fail_job(
    client: &QueueClient,
    keys: &QueueKeys,
    id: &[u8],
    token: u64,
    due: i64,
    reason: &str,
) -> Result<i64, QueueError> {
    let config = client.config();
    let mut invocation = FAIL_JOB.prepare_invoke();
    invocation
        .key(keys.jobs())
        .key(keys.state())
        .key(keys.leases())
        .key(keys.scheduled())
        .key(keys.dead())
        .key(keys.dead_envelopes())
        .key(keys.dead_info())
        .key(keys.stats())
        .arg(id)
        .arg(token)
        .arg(now_ms())
        .arg(due)
        .arg(reason)
        .arg(keys.due_channel())
        .arg(config.dead_max_count)
        .arg(millis(config.dead_max_age));
    let mut conn = client.conn();
    Ok(invocation.invoke_async(&mut conn).await?)
}

// ---- extend_leases.lua ------------------------------------------------------

/// Extends the leases of running attempts `(id, token)` by `lease`; a status
/// per job (0: the lease is lost).
pub(crate) async fn extend_leases(
    client: &QueueClient,
    keys: &QueueKeys,
    lease: Duration,
    jobs: &[(String, u64)],
) -> Result<Vec<i64>, QueueError> {
    let mut invocation = EXTEND_LEASES.prepare_invoke();
    invocation.key(keys.state()).key(keys.leases()).arg(millis(lease));
    for (id, token) in jobs {
        invocation.arg(id).arg(*token);
    }
    let mut conn = client.conn();
    Ok(invocation.invoke_async(&mut conn).await?)
}

// ---- requeue_jobs.lua -------------------------------------------------------

/// Puts unfinished attempts `(id, token)` back at the head of their ready
/// list; a status per job (1: put back).
pub(crate) async fn requeue_jobs(
    client: &QueueClient,
    keys: &QueueKeys,
    jobs: &[(String, u64)],
) -> Result<Vec<i64>, QueueError> {
    let mut invocation = REQUEUE_JOBS.prepare_invoke();
    invocation.key(keys.state()).key(keys.leases());
    for key in keys.ready_all() {
        invocation.key(key);
    }
    invocation.key(keys.wake()).arg(WAKE_CAP);
    for (id, token) in jobs {
        invocation.arg(id).arg(*token);
    }
    let mut conn = client.conn();
    Ok(invocation.invoke_async(&mut conn).await?)
}

// ---- promote_due.lua and reap_expired.lua -----------------------------------

/// What one promote call did, on Redis's clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Promoted {
    pub(crate) moved: usize,
    /// Next due time still scheduled (Redis's clock, ms).
    pub(crate) next_due: Option<u64>,
    /// Redis's clock when the script ran (ms).
    pub(crate) redis_now: u64,
}

/// Moves jobs due by Redis's clock to their ready lists.
pub(crate) async fn promote_due(client: &QueueClient, keys: &QueueKeys) -> Result<Promoted, QueueError> {
    let mut invocation = PROMOTE_DUE.prepare_invoke();
    invocation.key(keys.scheduled()).key(keys.state()).key(keys.jobs());
    for key in keys.ready_all() {
        invocation.key(key);
    }
    invocation.key(keys.wake()).arg(0).arg(MOVE_BATCH).arg(WAKE_CAP);
    let mut conn = client.conn();
    let reply = invocation.invoke_async(&mut conn).await.map_err(QueueError::from);
    let (moved, next, redis_now): (usize, i64, u64) = client.observe(reply)?;
    Ok(Promoted {
        moved,
        next_due: u64::try_from(next).ok(),
        redis_now,
    })
}

/// One recovered or buried job, as the reaper reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reaped {
    pub(crate) id: String,
    pub(crate) dead: bool,
    pub(crate) crashes: u32,
    pub(crate) kind: Option<String>,
    pub(crate) attempt: u32,
}

/// Recovers up to [`MOVE_BATCH`] jobs whose lease expired by Redis's clock.
pub(crate) async fn reap_expired(client: &QueueClient, keys: &QueueKeys) -> Result<Vec<Reaped>, QueueError> {
    let config = client.config();
    let mut invocation = REAP_EXPIRED.prepare_invoke();
    invocation.key(keys.leases()).key(keys.state()).key(keys.jobs());
    for key in keys.ready_all() {
        invocation.key(key);
    }
    invocation
        .key(keys.wake())
        .key(keys.dead())
        .key(keys.dead_envelopes())
        .key(keys.dead_info())
        .key(keys.stats())
        .arg(0)
        .arg(MOVE_BATCH)
        .arg(WAKE_CAP)
        .arg(config.dead_max_count)
        .arg(millis(config.dead_max_age));
    let mut conn = client.conn();
    let reply = invocation.invoke_async(&mut conn).await.map_err(QueueError::from);
    let reply: Vec<Value> = client.observe(reply)?;
    reply
        .chunks(5)
        .map(|c| match c {
            [id, status, crashes, kind, attempt] => Ok(Reaped {
                id: String::from_utf8_lossy(&redis::from_redis_value_ref::<Vec<u8>>(id)?).into_owned(),
                dead: redis::from_redis_value_ref::<i64>(status)? == 2,
                crashes: redis::from_redis_value_ref(crashes)?,
                kind: Some(String::from_utf8_lossy(&redis::from_redis_value_ref::<Vec<u8>>(kind)?).into_owned())
                    .filter(|k| !k.is_empty()),
                attempt: redis::from_redis_value_ref(attempt)?,
            }),
            _ => Err(QueueError::Protocol("reap reply not a multiple of 5".into())),
        })
        .collect()
}

// ---- retry_dead.lua ---------------------------------------------------------

/// Puts dead jobs back on their ready lists: `mode` and `args` as
/// `retry_dead.lua` reads them. Replies (retried, skipped).
pub(crate) async fn retry_dead(
    client: &QueueClient,
    keys: &QueueKeys,
    mode: &str,
    args: &[String],
) -> Result<(u64, u64), QueueError> {
    let mut invocation = RETRY_DEAD.prepare_invoke();
    invocation
        .key(keys.dead())
        .key(keys.dead_envelopes())
        .key(keys.dead_info())
        .key(keys.jobs())
        .key(keys.state());
    for key in keys.ready_all() {
        invocation.key(key);
    }
    invocation.key(keys.wake()).arg(WAKE_CAP).arg(mode).arg(args);
    let mut conn = client.conn();
    Ok(invocation.invoke_async(&mut conn).await?)
}

// ---- purge_dead.lua ---------------------------------------------------------

/// Deletes dead jobs for good (`args` as `purge_dead.lua` reads them).
/// Replies how many.
pub(crate) async fn purge_dead(client: &QueueClient, keys: &QueueKeys, args: &[String]) -> Result<u64, QueueError> {
    let mut invocation = PURGE_DEAD.prepare_invoke();
    invocation
        .key(keys.dead())
        .key(keys.dead_envelopes())
        .key(keys.dead_info())
        .arg(args);
    let mut conn = client.conn();
    Ok(invocation.invoke_async(&mut conn).await?)
}

// ---- raise_partitions.lua ---------------------------------------------------

/// Raises the partition count kept in `control` (partition 0's) to `count`
/// unless it is already higher. Replies `(before, now)`; `before` is `None`
/// when the field held something that is not a count.
pub(crate) async fn raise_partitions(
    client: &QueueClient,
    control: &str,
    count: u32,
) -> Result<(Option<u32>, u32), QueueError> {
    let mut invocation = RAISE_PARTITIONS.key(control);
    invocation.arg(count).arg(crate::MAX_PARTITIONS);
    let mut conn = client.conn();
    let (before, now): (i64, i64) = invocation.invoke_async(&mut conn).await?;
    let now = u32::try_from(now).map_err(|_| QueueError::Protocol(format!("partition count {now} from Redis")))?;
    Ok((u32::try_from(before).ok(), now))
}
