//! The worker runtime: handlers registered by job type, `concurrency`
//! attempts at a time, leases kept alive by heartbeats, per-job timeouts,
//! panics caught, and a graceful drain on shutdown.
//!
//! ```no_run
//! # use tally_queue::{QueueClient, QueueConfig, Worker, JobContext, JobError};
//! # use tally_jobs::RefreshViews;
//! # async fn run(client: QueueClient) -> Result<(), tally_queue::QueueError> {
//! let worker = Worker::builder(client, "stats")
//!     .concurrency(5)
//!     .handle(|job: RefreshViews, ctx: JobContext| async move {
//!         tracing::info!(id = %ctx.id, scope = %job.scope, "refreshing");
//!         Ok::<(), JobError>(())
//!     })
//!     .build()?;
//! worker.run_until(tokio::signal::ctrl_c().map(|_| ())).await?;
//! # Ok(()) }
//! # use futures::FutureExt as _;
//! ```

mod background;
mod calls;
mod context;
mod driver;
mod runtime;

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tally_jobs::{EnvelopeError, EnvelopeRef, Job};

pub use context::{JobContext, JobError};
pub(crate) use runtime::Shared;
pub use runtime::WorkerReport;

use crate::config::check_queue_name;
use crate::{JobEvents, NoEvents, QueueClient, QueueError};

/// A handler's future, type-erased.
type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), JobError>> + Send>>;

/// A handler of one job type, type-erased so handlers of several types can
/// share one registry keyed by kind.
trait ErasedHandler: Send + Sync {
    /// Decodes the payload as the handler's type and starts the handler.
    fn start(&self, envelope: &EnvelopeRef<'_>, ctx: JobContext) -> Result<HandlerFuture, EnvelopeError>;
}

struct TypedHandler<J, F> {
    f: F,
    _job: PhantomData<fn() -> J>,
}

impl<J, F, Fut> ErasedHandler for TypedHandler<J, F>
where
    J: Job,
    F: Fn(J, JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), JobError>> + Send + 'static,
{
    fn start(&self, envelope: &EnvelopeRef<'_>, ctx: JobContext) -> Result<HandlerFuture, EnvelopeError> {
        let job = envelope.payload_as::<J>()?;
        Ok(Box::pin((self.f)(job, ctx)))
    }
}

/// Builds a [`Worker`].
pub struct WorkerBuilder {
    client: QueueClient,
    queue: String,
    concurrency: usize,
    handlers: HashMap<&'static str, Arc<dyn ErasedHandler>>,
    wrong_queue: Vec<&'static str>,
    events: Arc<dyn JobEvents>,
    job_timeout: Option<Duration>,
    drain_timeout: Option<Duration>,
    background: bool,
    prefetch: bool,
}

impl std::fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("queue", &self.queue)
            .field("concurrency", &self.concurrency)
            .field("kinds", &self.handlers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl WorkerBuilder {
    /// Handlers running at once (default 5).
    #[must_use]
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Registers the handler of job type `J` (whose `QUEUE` must be this
    /// worker's queue). The handler returns `Ok(())` when done, or a
    /// [`JobError`] saying whether to retry.
    #[must_use]
    pub fn handle<J, F, Fut>(mut self, f: F) -> Self
    where
        J: Job,
        F: Fn(J, JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), JobError>> + Send + 'static,
    {
        if J::QUEUE != self.queue {
            self.wrong_queue.push(J::KIND);
        }
        self.handlers.insert(
            J::KIND,
            Arc::new(TypedHandler {
                f,
                _job: PhantomData::<fn() -> J>,
            }),
        );
        self
    }

    /// Event hooks (completed, failed, dead, recovered).
    #[must_use]
    pub fn events(mut self, events: impl JobEvents) -> Self {
        self.events = Arc::new(events);
        self
    }

    /// Overrides every job's policy timeout (otherwise
    /// [`crate::QueueConfig::job_timeout`], then the policy's `timeoutMs`).
    #[must_use]
    pub fn job_timeout(mut self, timeout: Duration) -> Self {
        self.job_timeout = Some(timeout);
        self
    }

    /// How long a shutdown waits for running handlers (default from the
    /// config, 20 s: shorter than Kubernetes' 30 s grace period).
    #[must_use]
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = Some(timeout);
        self
    }

    /// Whether this worker also runs the promoter (scheduled → ready) and
    /// takes turns at the reaper (default true; a benchmark or test may turn
    /// them off to run them elsewhere).
    #[must_use]
    pub fn background_tasks(mut self, on: bool) -> Self {
        self.background = on;
        self
    }

    /// Whether the worker may claim a few jobs ahead of its free slots when
    /// its handlers finish faster than a Redis round trip (default true).
    /// Claimed-ahead jobs are leased and heartbeated like running ones, and
    /// go back to the head of the queue on shutdown; with handlers slower
    /// than a round trip nothing is claimed ahead.
    #[must_use]
    pub fn prefetch(mut self, on: bool) -> Self {
        self.prefetch = on;
        self
    }

    /// Checks the registration and builds the worker.
    pub fn build(self) -> Result<Worker, QueueError> {
        check_queue_name(&self.queue)?;
        if self.concurrency == 0 {
            return Err(QueueError::InvalidArgument("concurrency must be at least 1".into()));
        }
        if !self.wrong_queue.is_empty() {
            return Err(QueueError::InvalidArgument(format!(
                "job kinds {:?} belong to other queues than {:?}",
                self.wrong_queue, self.queue
            )));
        }
        if self.handlers.is_empty() {
            return Err(QueueError::InvalidArgument(
                "a worker needs at least one handler".into(),
            ));
        }
        let config = self.client.config();
        let drain_timeout = self.drain_timeout.unwrap_or(config.drain_timeout);
        let job_timeout = self.job_timeout.or(config.job_timeout);
        Ok(Worker {
            client: self.client,
            queue: self.queue,
            concurrency: self.concurrency,
            handlers: self.handlers,
            events: self.events,
            job_timeout,
            drain_timeout,
            background: self.background,
            prefetch: self.prefetch,
        })
    }
}

/// A worker of one queue. Build with [`Worker::builder`], run with
/// [`Worker::run_until`].
pub struct Worker {
    client: QueueClient,
    queue: String,
    concurrency: usize,
    handlers: HashMap<&'static str, Arc<dyn ErasedHandler>>,
    events: Arc<dyn JobEvents>,
    job_timeout: Option<Duration>,
    drain_timeout: Duration,
    background: bool,
    prefetch: bool,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("queue", &self.queue)
            .field("concurrency", &self.concurrency)
            .field("kinds", &self.handlers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// Starts building a worker of `queue`.
    pub fn builder(client: QueueClient, queue: impl Into<String>) -> WorkerBuilder {
        WorkerBuilder {
            client,
            queue: queue.into(),
            concurrency: 5,
            handlers: HashMap::new(),
            wrong_queue: Vec::new(),
            events: Arc::new(NoEvents),
            job_timeout: None,
            drain_timeout: None,
            background: true,
            prefetch: true,
        }
    }

    /// The queue name.
    pub fn queue(&self) -> &str {
        &self.queue
    }
}
