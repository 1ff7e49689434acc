//! The shared Redis handle: one multiplexed, self-reconnecting connection for
//! all ordinary commands, plus the means to open the dedicated connections
//! that blocking commands and pub/sub need.

use std::sync::Arc;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client};

use crate::{QueueConfig, QueueError, QueueKeys};

/// A handle on Redis plus the engine settings. Cheap to clone; producers,
/// workers and the admin API are built from it.
#[derive(Clone)]
pub struct QueueClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: QueueConfig,
    client: Client,
    conn: ConnectionManager,
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
        let client = Client::open(url).map_err(|e| QueueError::Config(format!("bad redis url: {e}")))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.command_timeout))
            // Fail fast so producers can answer 503; the next call reconnects.
            .set_number_of_retries(1)
            .set_min_delay(config.retry_backoff_min)
            .set_max_delay(config.retry_backoff_max);
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)?;
        Ok(Self {
            inner: Arc::new(Inner { config, client, conn }),
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
        match first {
            Err(e) if e.is_unavailable() => {
                let _: String = redis::cmd("PING").query_async(&mut conn).await?;
                Ok(())
            }
            other => other.map(|_| ()),
        }
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
        self.inner.conn.clone()
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
