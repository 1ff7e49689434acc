//! The shared Redis handle: one multiplexed, self-reconnecting connection for
//! all ordinary commands, plus the means to open the dedicated connections
//! that blocking commands and pub/sub need.
//!
//! Two kinds of Redis behind one API: a single server (`redis://` or
//! `rediss://`), or a Redis Cluster (`redis+cluster://host:port,host:port`,
//! `rediss+cluster://` with TLS), whose connection routes each command by
//! the slot of its first key and follows `MOVED` and `ASK`. Every key of a
//! queue shares one hash tag, so every script touches one slot.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::io::tcp::TcpSettings;
use redis::io::tcp::socket2::TcpKeepalive;
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionInfo, IntoConnectionInfo as _, Pipeline, RedisFuture, Value,
};

use crate::partitions::PartitionCache;
use crate::{QueueConfig, QueueError, QueueKeys};

/// Idle time before the first keepalive probe, then the interval between
/// probes and how many may go unanswered: a silent peer is dropped after
/// about 10 + 3 x 5 = 25 s even on a connection that sends nothing.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_RETRIES: u32 = 3;

/// A connection to Redis: the shared one, or a dedicated one for blocking
/// commands. Cheap to clone (clones share the sockets).
#[derive(Clone)]
pub(crate) enum Conn {
    /// A single server, reconnecting by itself.
    Single(ConnectionManager),
    /// A single server, one connection of its own (no reconnection).
    Dedicated(MultiplexedConnection),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Dedicated(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Dedicated(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Dedicated(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A handle on Redis plus the engine settings. Cheap to clone; producers,
/// workers and the admin API are built from it.
#[derive(Clone)]
pub struct QueueClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: QueueConfig,
    backend: Backend,
    partitions: PartitionCache,
}

enum Backend {
    Single {
        client: Client,
        manager_config: ConnectionManagerConfig,
        /// The shared connection, and when it was last replaced.
        conn: Mutex<(ConnectionManager, Instant)>,
    },
    Cluster {
        client: ClusterClient,
        conn: ClusterConnection,
        /// One client per seed node, for pub/sub (a `PUBLISH` on a cluster
        /// reaches subscribers on every node).
        nodes: Vec<Client>,
    },
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
        let backend = match cluster_nodes(url) {
            Some(nodes) => Self::cluster_backend(&nodes, &config)?,
            None => Self::single_backend(url, &config)?,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                backend,
                partitions: PartitionCache::default(),
            }),
        })
    }

    fn single_backend(url: &str, config: &QueueConfig) -> Result<Backend, QueueError> {
        let info = with_tcp_settings(parse_url(url)?, config);
        let client = Client::open(info).map_err(|e| QueueError::Config(format!("bad redis url: {e}")))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.command_timeout))
            // Fail fast so producers can answer 503; the next call reconnects.
            .set_number_of_retries(1)
            .set_min_delay(config.retry_backoff_min)
            .set_max_delay(config.retry_backoff_max);
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_config.clone())?;
        Ok(Backend::Single {
            client,
            manager_config,
            conn: Mutex::new((conn, Instant::now())),
        })
    }

    fn cluster_backend(nodes: &[String], config: &QueueConfig) -> Result<Backend, QueueError> {
        let infos = nodes
            .iter()
            .map(|node| parse_url(node).map(|info| with_tcp_settings(info, config)))
            .collect::<Result<Vec<_>, _>>()?;
        let tcp = infos.first().map(|i| i.tcp_settings().clone()).unwrap_or_default();
        let client = ClusterClient::builder(infos.clone())
            .connection_timeout(config.connect_timeout)
            .response_timeout(config.command_timeout)
            .tcp_settings(tcp)
            .build()
            .map_err(|e| QueueError::Config(format!("bad redis cluster url: {e}")))?;
        let conn = client.get_pending_async_connection_with_config(
            ClusterConfig::new()
                .set_connection_timeout(config.connect_timeout)
                .set_response_timeout(config.command_timeout),
        );
        let nodes = infos
            .into_iter()
            .map(|info| Client::open(info).map_err(|e| QueueError::Config(format!("bad redis cluster url: {e}"))))
            .collect::<Result<_, _>>()?;
        Ok(Backend::Cluster { client, conn, nodes })
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
            && let Backend::Single {
                client,
                manager_config,
                conn,
            } = &self.inner.backend
        {
            let mut guard = conn.lock().unwrap_or_else(PoisonError::into_inner);
            if guard.1.elapsed() >= self.inner.config.command_timeout
                && let Ok(fresh) = ConnectionManager::new_lazy_with_config(client.clone(), manager_config.clone())
            {
                tracing::warn!(error = %err, "redis connection silent; replacing it");
                *guard = (fresh, Instant::now());
            }
        }
        result
    }

    /// Whether this client talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner.backend, Backend::Cluster { .. })
    }

    /// The settings.
    pub fn config(&self) -> &QueueConfig {
        &self.inner.config
    }

    /// Key names of `queue` under this client's prefix (of its partition 0:
    /// all of it unless it is partitioned).
    pub fn keys(&self, queue: &str) -> QueueKeys {
        QueueKeys::new(&self.inner.config.prefix, queue)
    }

    /// The partition counts this client has read.
    pub(crate) fn partition_cache(&self) -> &PartitionCache {
        &self.inner.partitions
    }

    /// The shared connection (clones share its sockets).
    pub(crate) fn conn(&self) -> Conn {
        match &self.inner.backend {
            Backend::Single { conn, .. } => Conn::Single(conn.lock().unwrap_or_else(PoisonError::into_inner).0.clone()),
            Backend::Cluster { conn, .. } => Conn::Cluster(conn.clone()),
        }
    }

    /// Takes the short-lived lock `key` for `owner` (`SET NX PX`) unless
    /// someone holds it; whether it was taken. The reaper's and the
    /// partitioning lock.
    pub(crate) async fn try_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, QueueError> {
        let taken: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(owner)
            .arg("NX")
            .arg("PX")
            .arg(crate::clock::millis(ttl))
            .query_async(&mut self.conn())
            .await?;
        Ok(taken.is_some())
    }

    /// A client for a pub/sub connection; `attempt` picks another seed node
    /// of a cluster each time, so a dead node is passed over.
    pub(crate) fn pubsub_client(&self, attempt: usize) -> &Client {
        match &self.inner.backend {
            Backend::Single { client, .. } => client,
            Backend::Cluster { nodes, .. } => &nodes[attempt % nodes.len()],
        }
    }

    /// A new connection of its own for blocking commands (`BLPOP`), without a
    /// response timeout: a blocked command must not hold up, or be cut off
    /// by, the shared connection. (The caller bounds its wait.)
    pub(crate) async fn dedicated_connection(&self) -> Result<Conn, QueueError> {
        match &self.inner.backend {
            Backend::Single { client, .. } => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.inner.config.connect_timeout))
                    .set_response_timeout(None);
                Ok(Conn::Dedicated(
                    client.get_multiplexed_async_connection_with_config(&config).await?,
                ))
            }
            Backend::Cluster { client, .. } => {
                let config = ClusterConfig::new().set_connection_timeout(self.inner.config.connect_timeout);
                Ok(Conn::Cluster(client.get_async_connection_with_config(config).await?))
            }
        }
    }
}

/// The seed nodes of a cluster URL as one `redis://` URL each (`None` for a
/// single-server URL): for tools that look at each node, such as the
/// benchmark's per-node Redis CPU.
pub fn cluster_seed_urls(url: &str) -> Option<Vec<String>> {
    cluster_nodes(url)
}

/// The seed nodes of a cluster URL (`redis+cluster://[user:pass@]h1:p1,h2:p2[/]`,
/// `rediss+cluster://` for TLS), as one `redis://` URL each; `None` for a
/// single-server URL.
fn cluster_nodes(url: &str) -> Option<Vec<String>> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("redis+cluster://") {
        ("redis", rest)
    } else {
        ("rediss", url.strip_prefix("rediss+cluster://")?)
    };
    let rest = rest.trim_end_matches('/');
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), rest),
    };
    Some(
        hosts
            .split(',')
            .filter(|h| !h.trim().is_empty())
            .map(|host| format!("{scheme}://{auth}{}/", host.trim()))
            .collect(),
    )
}

fn parse_url(url: &str) -> Result<ConnectionInfo, QueueError> {
    url.into_connection_info()
        .map_err(|e| QueueError::Config(format!("bad redis url: {e}")))
}

/// A peer that vanishes without a reset (failover to another address, a
/// partition) is noticed by keepalive probes on idle connections and by
/// `TCP_USER_TIMEOUT` when sent data goes unacknowledged, instead of by the
/// kernel's two hours. Response timeouts bound every command on top of that
/// (the blocking wait too, see `run_waker`).
fn with_tcp_settings(info: ConnectionInfo, config: &QueueConfig) -> ConnectionInfo {
    let tcp: TcpSettings = info
        .tcp_settings()
        .clone()
        .set_keepalive(
            TcpKeepalive::new()
                .with_time(KEEPALIVE_IDLE)
                .with_interval(KEEPALIVE_INTERVAL)
                .with_retries(KEEPALIVE_RETRIES),
        )
        .set_user_timeout(config.command_timeout.max(Duration::from_secs(1)));
    info.set_tcp_settings(tcp)
}

#[cfg(test)]
mod tests {
    use super::cluster_nodes;

    #[test]
    fn cluster_urls_name_their_seed_nodes() {
        assert_eq!(cluster_nodes("redis://127.0.0.1:6379/"), None);
        assert_eq!(
            cluster_nodes("redis+cluster://127.0.0.1:7000,127.0.0.1:7001/"),
            Some(vec![
                "redis://127.0.0.1:7000/".to_owned(),
                "redis://127.0.0.1:7001/".to_owned()
            ])
        );
        assert_eq!(
            cluster_nodes("rediss+cluster://u:p@a:1,b:2"),
            Some(vec!["rediss://u:p@a:1/".to_owned(), "rediss://u:p@b:2/".to_owned()])
        );
    }
}
