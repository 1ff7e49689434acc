//! The shared Redis handle: one multiplexed, self-reconnecting connection for
//! all ordinary commands, plus the means to open the dedicated connections
//! that blocking commands and pub/sub need.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::io::tcp::socket2::TcpKeepalive;
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo as _};

use crate::{QueueConfig, QueueError, QueueKeys};

/// Idle time before the first keepalive probe, then the interval between
/// probes and how many may go unanswered: a silent peer is dropped after
/// about 10 + 3 x 5 = 25 s even on a connection that sends nothing.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_RETRIES: u32 = 3;

/// A handle on Redis plus the engine settings. Cheap to clone; producers,
/// workers and the admin API are built from it.
#[derive(Clone)]
pub struct QueueClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: QueueConfig,
    client: Client,
    manager_config: ConnectionManagerConfig,
    /// The shared connection, and when it was last replaced.
    conn: Mutex<(ConnectionManager, Instant)>,
}

impl std::fmt::Debug for QueueClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: never print it.
        f.debug_struct("QueueClient")
            .field("prefix", &self.inner.config.prefix)
            .finish_non_exhaustive()
    }
}

impl QueueClient {
    /// A client for the Redis at `url`, connecting lazily: it never fails for
    /// an unreachable Redis (calls return [`QueueError::Unavailable`] until it
    /// is back), only for a malformed URL or invalid settings.
    pub fn new(url: &str, config: QueueConfig) -> Result<Self, QueueError> {
        config.validate()?;
        let info = url
            .into_connection_info()
            .map_err(|e| QueueError::Config(format!("bad redis url: {e}")))?;
        // A peer that vanishes without a reset (failover to another address,
        // a partition) is noticed by keepalive probes on idle connections and
        // by TCP_USER_TIMEOUT when sent data goes unacknowledged, instead of
        // by the kernel's two hours. Response timeouts bound every command on
        // top of that (the blocking wait too, see `run_waker`).
        let tcp = info
            .tcp_settings()
            .clone()
            .set_keepalive(
                TcpKeepalive::new()
                    .with_time(KEEPALIVE_IDLE)
                    .with_interval(KEEPALIVE_INTERVAL)
                    .with_retries(KEEPALIVE_RETRIES),
            )
            .set_user_timeout(config.command_timeout.max(Duration::from_secs(1)));
        let info = info.set_tcp_settings(tcp);
        let client = Client::open(info).map_err(|e| QueueError::Config(format!("bad redis url: {e}")))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.command_timeout))
            // Fail fast so producers can answer 503; the next call reconnects.
            .set_number_of_retries(1)
            .set_min_delay(config.retry_backoff_min)
            .set_max_delay(config.retry_backoff_max);
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_config.clone())?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                client,
                manager_config,
                conn: Mutex::new((conn, Instant::now())),
            }),
        })
    }

    /// Like [`QueueClient::new`], then checks that Redis answers.
    pub async fn connect(url: &str, config: QueueConfig) -> Result<Self, QueueError> {
        let client = Self::new(url, config)?;
        client.ping().await?;
        Ok(client)
    }

    /// `PING`: whether Redis is reachable now (for readiness probes).
    ///
    /// Tried twice: after Redis restarts, the first command on the old
    /// connection fails and only then does the manager reconnect, so a
    /// single failed PING would report a healthy Redis as down (and flap a
    /// readiness probe). PING has no side effects, so the retry is safe.
    pub async fn ping(&self) -> Result<(), QueueError> {
        let mut conn = self.conn();
        let first: Result<String, QueueError> = redis::cmd("PING").query_async(&mut conn).await.map_err(Into::into);
        match self.observe(first) {
            Err(e) if e.is_unavailable() => {
                let mut conn = self.conn();
                let second: Result<String, QueueError> =
                    redis::cmd("PING").query_async(&mut conn).await.map_err(Into::into);
                self.observe(second).map(|_| ())
            }
            other => other.map(|_| ()),
        }
    }

    /// Passes a result through, replacing the shared connection when the
    /// error says it went silent (a response timeout). The redis crate
    /// reconnects by itself only when a connection is closed or fails with
    /// an I/O error; a peer that vanished without a reset (a failover to
    /// another address, a partition) leaves it waiting on the dead socket
    /// forever. Replaced at most once per command timeout.
    pub(crate) fn observe<T>(&self, result: Result<T, QueueError>) -> Result<T, QueueError> {
        if let Err(QueueError::Unavailable(err)) = &result
            && err.is_timeout()
        {
            let mut guard = self.inner.conn.lock().unwrap_or_else(PoisonError::into_inner);
            if guard.1.elapsed() >= self.inner.config.command_timeout
                && let Ok(fresh) = ConnectionManager::new_lazy_with_config(
                    self.inner.client.clone(),
                    self.inner.manager_config.clone(),
                )
            {
                tracing::warn!(error = %err, "redis connection silent; replacing it");
                *guard = (fresh, Instant::now());
            }
        }
        result
    }

    /// The settings.
    pub fn config(&self) -> &QueueConfig {
        &self.inner.config
    }

    /// Key names of `queue` under this client's prefix.
    pub fn keys(&self, queue: &str) -> QueueKeys {
        QueueKeys::new(&self.inner.config.prefix, queue)
    }

    /// The shared multiplexed connection (clones share one socket).
    pub(crate) fn conn(&self) -> ConnectionManager {
        self.inner.conn.lock().unwrap_or_else(PoisonError::into_inner).0.clone()
    }

    /// The underlying `redis::Client`.
    pub(crate) fn redis_client(&self) -> &Client {
        &self.inner.client
    }

    /// A new connection of its own for blocking commands (`BLPOP`), without a
    /// response timeout: a blocked command must not hold up, or be cut off
    /// by, the shared connection.
    pub(crate) async fn dedicated_connection(&self) -> Result<MultiplexedConnection, QueueError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.inner.config.connect_timeout))
            .set_response_timeout(None);
        Ok(self
            .inner
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }
}
