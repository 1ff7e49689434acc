//! The Redis shared by all tests of one process (a server, or a cluster with
//! `TALLY_TEST_REDIS=cluster`, see `backend`), and the per-test handle that
//! isolates tests from each other on it (the shared PostgreSQL and per-test
//! databases are in `databases`).
//!
//! `cargo test` runs one process per test binary, and every `#[tokio::test]`
//! has its own runtime, so statics here hold only what outlives a runtime:
//! URLs, the server handles (plain `std::process::Child`ren) and the
//! once-only state. Connections are opened per call, on the caller's runtime.
//! The statics are never dropped; the watchdogs (see `scratch`) stop the
//! servers and remove their directories when the process ends.

use tokio::sync::OnceCell;

use crate::RedisOptions;
use crate::backend::{self, DedicatedRedis, RedisConnection};

/// Points [`redis()`] at an existing server (or, with a `redis+cluster://`
/// URL, cluster) instead of starting one.
const REDIS_URL_VAR: &str = "TEST_REDIS_URL";

/// Handle of a Redis namespace for one test: the shared Redis's URL and a
/// unique key prefix.
///
/// Tests share one Redis, so they must build every key with
/// [`TestRedis::key`] (or prefix `namespace` themselves) and never flush it.
#[derive(Debug, Clone)]
pub struct TestRedis {
    /// `redis://127.0.0.1:<port>/` of the shared server, or
    /// `redis+cluster://127.0.0.1:<port>,…/` of the shared cluster (or
    /// `TEST_REDIS_URL`).
    pub url: String,
    /// `t-<8 hex digits>`, unique per [`redis()`] call.
    pub namespace: String,
}

impl TestRedis {
    /// A new connection on the caller's runtime (a cluster connection on a
    /// cluster).
    pub async fn connection(&self) -> RedisConnection {
        backend::connect(&self.url).await
    }

    /// Whether the shared Redis is a cluster.
    pub fn is_cluster(&self) -> bool {
        backend::is_cluster_url(&self.url)
    }

    /// Every key matching `pattern` (e.g. `"{namespace}:*"`), from every
    /// master; panics when Redis cannot be read.
    pub async fn scan(&self, pattern: &str) -> Vec<String> {
        backend::scan(&self.url, pattern)
            .await
            .unwrap_or_else(|err| panic!("tally-testkit: SCAN {pattern} on {}: {err:#}", self.url))
    }

    /// `"{namespace}:{name}"`.
    pub fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.namespace)
    }
}

/// The shared Redis: its URL, and the server or cluster when we started it.
struct SharedRedis {
    url: String,
    /// Held only so the server (or cluster) lives as long as the process.
    _server: Option<DedicatedRedis>,
}

static REDIS: OnceCell<SharedRedis> = OnceCell::const_new();

/// A fresh namespace on the shared Redis, starting it on first use: one
/// `redis-server`, or with `TALLY_TEST_REDIS=cluster` a six-node cluster
/// (or using `TEST_REDIS_URL`). Panics with the reason when it cannot start.
pub async fn redis() -> TestRedis {
    let shared = REDIS
        .get_or_init(|| async {
            if let Ok(url) = std::env::var(REDIS_URL_VAR) {
                // A cluster run must not pass on a single server unnoticed.
                assert!(
                    backend::backend() == backend::Backend::Single || backend::is_cluster_url(&url),
                    "tally-testkit: {}=cluster, but {REDIS_URL_VAR} names no cluster (redis+cluster://…)",
                    backend::BACKEND_VAR
                );
                return SharedRedis { url, _server: None };
            }
            match DedicatedRedis::start(RedisOptions::default()).await {
                Ok(server) => SharedRedis {
                    url: server.url(),
                    _server: Some(server),
                },
                Err(err) => panic!("{err:#}"),
            }
        })
        .await;
    TestRedis {
        url: shared.url.clone(),
        namespace: format!("t-{}", short_id()),
    }
}

/// Eight random hex digits.
pub(crate) fn short_id() -> String {
    let mut id = uuid::Uuid::new_v4().simple().to_string();
    id.truncate(8);
    id
}
