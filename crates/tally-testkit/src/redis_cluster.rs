//! A throwaway Redis Cluster: three masters, each with a replica, on free
//! loopback ports, `--cluster-enabled yes`, AOF on, created with
//! `redis-cli --cluster create` the way an operator would.
//!
//! Each node is a [`RedisServer`], so a test can kill one (`SIGKILL`) and
//! watch its replica take over, move slots between masters, or stop and
//! restart the whole cluster. The shared cluster behind [`crate::redis()`]
//! (with `TALLY_TEST_REDIS=cluster`) is one of these, kept in a static for
//! the life of the test process.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::process::{Signal, send_signal};
use crate::redis_server::{RedisOptions, RedisServer};

/// How long the cluster may take to agree that every slot is served.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running cluster of six nodes.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts six nodes with AOF on, creates the cluster (three masters,
    /// one replica each) and waits until every node reports
    /// `cluster_state:ok`.
    pub async fn start() -> Result<Self> {
        Self::start_with(RedisOptions {
            appendonly: true,
            extra_args: Vec::new(),
        })
        .await
    }

    /// Like [`RedisCluster::start`], each node configured by `options`
    /// (persistence, and `extra_args` after the cluster's own, e.g.
    /// `--maxmemory` per node).
    pub async fn start_with(options: RedisOptions) -> Result<Self> {
        let redis_cli = crate::binaries::redis_cli()?;
        let mut nodes = Vec::with_capacity(6);
        for _ in 0..6 {
            nodes.push(
                RedisServer::start(RedisOptions {
                    appendonly: options.appendonly,
                    extra_args: [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        // Failover within about a second of a master's death.
                        "--cluster-node-timeout",
                        "1000",
                        // A lone replica is promoted even if it lagged.
                        "--cluster-replica-validity-factor",
                        "0",
                    ]
                    .map(str::to_owned)
                    .into_iter()
                    .chain(options.extra_args.iter().cloned())
                    .collect(),
                })
                .await?,
            );
        }
        let cluster = Self { nodes };
        let mut create = Command::new(&redis_cli);
        create.arg("--cluster").arg("create");
        for node in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", node.port()));
        }
        create.args(["--cluster-replicas", "1", "--cluster-yes"]);
        let output = tokio::task::spawn_blocking(move || create.output())
            .await?
            .context("tally-testkit: cannot run redis-cli --cluster create")?;
        if !output.status.success() {
            bail!(
                "tally-testkit: redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        cluster.wait_until_ok().await?;
        Ok(cluster)
    }

    /// `redis+cluster://127.0.0.1:<port>,…` naming every node.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())).collect();
        format!("redis+cluster://{}/", hosts.join(","))
    }

    /// The nodes, in creation order (not necessarily masters first after a
    /// failover).
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The nodes, to kill or restart one.
    pub fn nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// Stops every node with `SIGTERM` (each writes its AOF), all at once,
    /// as a whole-cluster outage would.
    pub async fn stop(&mut self) {
        self.signal_all();
        for node in &mut self.nodes {
            node.stop().await;
        }
    }

    /// `SIGTERM` to every live node at once. One after another, each master
    /// would first wait for its replica's next acknowledgement (up to a
    /// second) before exiting; with the replicas going too it need not.
    fn signal_all(&self) {
        for pid in self.nodes.iter().filter_map(RedisServer::pid) {
            send_signal(pid, Signal::SIGTERM);
        }
    }

    /// Starts every stopped node again on its port with its directory
    /// (`nodes.conf` and, with AOF, the data), then waits until the cluster
    /// is ok again.
    pub async fn restart(&mut self) -> Result<()> {
        for node in &mut self.nodes {
            if node.pid().is_none() {
                node.restart().await?;
            }
        }
        self.wait_until_ok().await
    }

    /// Index of the node that serves `slot` as master now.
    pub async fn master_of(&self, slot: u16) -> Result<usize> {
        for (i, node) in self.nodes.iter().enumerate() {
            if node.pid().is_none() {
                continue;
            }
            let Ok(mut conn) = connect(node).await else { continue };
            let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut conn).await?;
            let is_master = matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master");
            if !is_master {
                continue;
            }
            if owns_slot(&mut conn, slot).await? {
                return Ok(i);
            }
        }
        Err(anyhow!("tally-testkit: no live master serves slot {slot}"))
    }

    /// Waits until a live master serves `slot` (after its master died, its
    /// replica is promoted once the others notice, about a node timeout) and
    /// the cluster is ok again; returns that master's index.
    pub async fn wait_for_master_of(&self, slot: u16) -> Result<usize> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(index) = self.master_of(slot).await {
                self.wait_until_ok().await?;
                return Ok(index);
            }
            if Instant::now() > deadline {
                bail!("tally-testkit: no master took over slot {slot} within {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every live node reports `cluster_state:ok`.
    pub async fn wait_until_ok(&self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let mut all_ok = true;
            for node in self.nodes.iter().filter(|n| n.pid().is_some()) {
                let ok = match connect(node).await {
                    Ok(mut conn) => redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query_async::<String>(&mut conn)
                        .await
                        .is_ok_and(|info| info.contains("cluster_state:ok")),
                    Err(_) => false,
                };
                all_ok &= ok;
            }
            if all_ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("tally-testkit: the cluster did not reach cluster_state:ok within {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.signal_all();
        // The nodes drop next, each waiting for its server to exit.
    }
}

async fn connect(node: &RedisServer) -> Result<redis::aio::MultiplexedConnection> {
    Ok(redis::Client::open(node.url())?
        .get_multiplexed_async_connection()
        .await?)
}

/// Whether `CLUSTER SLOTS`, asked of the node behind `conn`, names that
/// node (`CLUSTER MYID`) as the master of `slot`.
async fn owns_slot(conn: &mut redis::aio::MultiplexedConnection, slot: u16) -> Result<bool> {
    let me: String = redis::cmd("CLUSTER").arg("MYID").query_async(conn).await?;
    let slots: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await?;
    for range in slots {
        let redis::Value::Array(parts) = range else { continue };
        let (Some(redis::Value::Int(start)), Some(redis::Value::Int(end)), Some(redis::Value::Array(master))) =
            (parts.first(), parts.get(1), parts.get(2))
        else {
            continue;
        };
        let id = master.get(2).and_then(|v| match v {
            redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        });
        if i64::from(slot) >= *start && i64::from(slot) <= *end && id.as_deref() == Some(me.as_str()) {
            return Ok(true);
        }
    }
    Ok(false)
}
