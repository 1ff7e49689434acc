//! One Redis API for tests, two kinds of Redis behind it: a single
//! `redis-server` (the default) or a Redis Cluster, chosen for the whole
//! test process by `TALLY_TEST_REDIS` (`single` or `cluster`).
//!
//! With `TALLY_TEST_REDIS=cluster`, [`crate::redis()`] starts one shared
//! six-node [`RedisCluster`] per test process instead of one `redis-server`
//! (every test still gets its own namespace on it, and the watchdogs remove
//! it at exit the same way), and [`DedicatedRedis::start`] starts a cluster
//! of the test's own instead of a [`RedisServer`]. The URLs are then
//! `redis+cluster://host:port,…`, which the engine's client and [`connect`]
//! take as a cluster. A test that reaches Redis only through these URLs,
//! [`connect`], [`TestRedis::scan`](crate::TestRedis::scan) and
//! [`master_connections`] (for what one server reports about itself:
//! `CLIENT LIST`, `INFO`, `SCRIPT FLUSH`) runs unchanged on both.
//!
//! Keys a script or a multi-key command touches together must share a hash
//! tag (`{…}`) to run on a cluster; the engine's own keys do (`{<queue>}`),
//! and so do the chaos tests' side-effect keys (`{chaos}`).
//!
//! `make test` runs the engine's reliability, chaos, failure and promise
//! suites a second time with `TALLY_TEST_REDIS=cluster` (`make
//! test-cluster` alone). The other suites are written for one server (some
//! read its `INFO` through [`crate::script_calls`], which counts one
//! server's calls) and are not run on a cluster; `crates/tally-queue/tests/
//! cluster.rs` has the tests that only a cluster can have (slot migration,
//! failover), on clusters of their own.

use anyhow::{Context as _, Result, bail};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::{RedisCluster, RedisOptions, RedisServer};

/// Selects the kind of Redis the test kit starts: `single` (or unset) or
/// `cluster`.
pub const BACKEND_VAR: &str = "TALLY_TEST_REDIS";

/// The kind of Redis a test process runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One `redis-server`.
    Single,
    /// A Redis Cluster of three masters, each with a replica.
    Cluster,
}

/// The backend `TALLY_TEST_REDIS` names; panics on a value it does not know,
/// so a typo never runs the single-server tests a second time unnoticed.
pub fn backend() -> Backend {
    match std::env::var(BACKEND_VAR).as_deref() {
        Err(_) | Ok("" | "single") => Backend::Single,
        Ok("cluster") => Backend::Cluster,
        Ok(other) => panic!("tally-testkit: {BACKEND_VAR}={other:?}: expected \"single\" or \"cluster\""),
    }
}

/// The seed nodes of a cluster URL (`redis+cluster://[user:pass@]h1:p1,h2:p2/`,
/// `rediss+cluster://` with TLS) as one URL each, with the scheme and
/// credentials to reach any node by its address; `None` for a
/// single-server URL. (The same reading as the engine's client.)
fn cluster_seeds(url: &str) -> Option<(Vec<String>, impl Fn(&str) -> String)> {
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
    let node_url = move |address: &str| format!("{scheme}://{auth}{address}/");
    let seeds = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(&node_url)
        .collect();
    Some((seeds, node_url))
}

/// Whether `url` names a Redis Cluster (`redis+cluster://…`).
pub fn is_cluster_url(url: &str) -> bool {
    cluster_seeds(url).is_some()
}

/// A connection to either kind of Redis, for looking at and writing keys
/// directly: multiplexed to one server, or a cluster connection that routes
/// each command by the slot of its first key. Cheap to clone.
#[derive(Clone)]
pub enum RedisConnection {
    /// To one server.
    Single(MultiplexedConnection),
    /// To a Redis Cluster.
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "RedisConnection::Single",
            Self::Cluster(_) => "RedisConnection::Cluster",
        })
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// A new connection to the Redis at `url` (either kind), on the caller's
/// runtime. Panics with the reason when it cannot connect.
pub async fn connect(url: &str) -> RedisConnection {
    let attempt = async {
        Ok::<_, redis::RedisError>(match cluster_seeds(url) {
            Some((seeds, _)) => RedisConnection::Cluster(ClusterClient::new(seeds)?.get_async_connection().await?),
            None => RedisConnection::Single(redis::Client::open(url)?.get_multiplexed_async_connection().await?),
        })
    };
    attempt
        .await
        .unwrap_or_else(|err| panic!("tally-testkit: cannot connect to {url}: {err}"))
}

/// A plain connection to every master of the Redis at `url`: the server
/// itself, or each master a cluster lists in `CLUSTER NODES` (live ones,
/// with or without slots). For what a server reports about itself, summed
/// or checked over the masters (`CLIENT LIST`, `INFO`), for `SCRIPT FLUSH`,
/// and for `SCAN`, which a cluster answers per node.
pub async fn master_connections(url: &str) -> Result<Vec<MultiplexedConnection>> {
    let Some((seeds, node_url)) = cluster_seeds(url) else {
        return Ok(vec![plain(url).await?]);
    };
    let mut last_error = None;
    for seed in &seeds {
        let nodes = async {
            let mut conn = plain(seed).await?;
            let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(&mut conn).await?;
            anyhow::Ok(nodes)
        };
        match nodes.await {
            Ok(nodes) => {
                let mut masters = Vec::new();
                for address in live_masters(&nodes) {
                    masters.push(plain(&node_url(address)).await?);
                }
                return Ok(masters);
            }
            Err(err) => last_error = Some(err),
        }
    }
    match last_error {
        Some(err) => Err(err.context(format!("tally-testkit: no seed of {url} answered CLUSTER NODES"))),
        None => bail!("tally-testkit: {url} names no node"),
    }
}

/// The `host:port` of every master in a `CLUSTER NODES` reply that is not
/// failing, in handshake or without an address.
fn live_masters(nodes: &str) -> Vec<&str> {
    nodes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let address = fields.nth(1)?;
            let flags: Vec<&str> = fields.next()?.split(',').collect();
            let bad = ["fail", "fail?", "handshake", "noaddr"];
            (flags.contains(&"master") && !flags.iter().any(|f| bad.contains(f)))
                .then(|| address.split(['@', ',']).next().unwrap_or(address))
        })
        .collect()
}

async fn plain(url: &str) -> Result<MultiplexedConnection> {
    redis::Client::open(url)
        .with_context(|| format!("tally-testkit: bad Redis URL {url}"))?
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("tally-testkit: cannot connect to {url}"))
}

/// Every key matching `pattern` on the Redis at `url`, found with `SCAN` on
/// each master (a cluster answers `SCAN` per node), sorted.
pub async fn scan(url: &str, pattern: &str) -> Result<Vec<String>> {
    let mut found = std::collections::BTreeSet::new();
    for mut conn in master_connections(url).await? {
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            found.extend(keys);
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(found.into_iter().collect())
}

/// A Redis of one test, of the kind [`backend()`] names: a [`RedisServer`]
/// or a [`RedisCluster`], for a test that stops and restarts Redis, or
/// measures it, or must be alone on it.
#[derive(Debug)]
pub enum DedicatedRedis {
    /// One `redis-server`.
    Server(RedisServer),
    /// Six nodes, three masters with a replica each.
    Cluster(RedisCluster),
}

impl DedicatedRedis {
    /// Starts a server, or a cluster whose every node has `options`.
    pub async fn start(options: RedisOptions) -> Result<Self> {
        Ok(match backend() {
            Backend::Single => Self::Server(RedisServer::start(options).await?),
            Backend::Cluster => Self::Cluster(RedisCluster::start_with(options).await?),
        })
    }

    /// `redis://127.0.0.1:<port>/` or `redis+cluster://127.0.0.1:<port>,…/`.
    pub fn url(&self) -> String {
        match self {
            Self::Server(server) => server.url(),
            Self::Cluster(cluster) => cluster.url(),
        }
    }

    /// Whether this is a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// Stops the server, or every node of the cluster (`SIGTERM`).
    pub async fn stop(&mut self) {
        match self {
            Self::Server(server) => server.stop().await,
            Self::Cluster(cluster) => cluster.stop().await,
        }
    }

    /// Starts it again on the same ports and directories (with
    /// [`RedisOptions::appendonly`] the data survives); a cluster is ok
    /// again (every slot served) when this returns.
    pub async fn restart(&mut self) -> Result<()> {
        match self {
            Self::Server(server) => server.restart().await,
            Self::Cluster(cluster) => cluster.restart().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{cluster_seeds, live_masters};

    #[test]
    fn cluster_urls_name_their_seeds() {
        assert!(cluster_seeds("redis://127.0.0.1:6379/").is_none());
        let (seeds, node_url) = cluster_seeds("rediss+cluster://u:p@a:1,b:2/").expect("cluster");
        assert_eq!(seeds, ["rediss://u:p@a:1/", "rediss://u:p@b:2/"]);
        assert_eq!(node_url("c:3"), "rediss://u:p@c:3/");
    }

    #[test]
    fn live_masters_are_read_from_cluster_nodes() {
        let nodes = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001,node-b master - 0 0 2 connected 5461-10922
c3 127.0.0.1:7002@17002 master,fail - 0 0 3 disconnected 10923-16383
d4 127.0.0.1:7003@17003 slave a1 0 0 1 connected
";
        assert_eq!(live_masters(nodes), ["127.0.0.1:7000", "127.0.0.1:7001"]);
    }
}
