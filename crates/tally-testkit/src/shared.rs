//! The Redis server shared by all tests of one process, and the per-test
//! handle that isolates tests from each other on it (the shared PostgreSQL
//! and per-test databases are in `databases`).
//!
//! `cargo test` runs one process per test binary, and every `#[tokio::test]`
//! has its own runtime, so statics here hold only what outlives a runtime:
//! URLs, the server handles (plain `std::process::Child`ren) and the
//! once-only state. Connections are opened per call, on the caller's runtime.
//! The statics are never dropped; the watchdogs (see `scratch`) stop the
//! servers and remove their directories when the process ends.

use tokio::sync::OnceCell;

use crate::{RedisOptions, RedisServer};

/// Points [`redis()`] at an existing server instead of starting one.
const REDIS_URL_VAR: &str = "TEST_REDIS_URL";

/// Handle of a Redis namespace for one test: the shared server's URL and a
/// unique key prefix.
///
/// Tests share one server, so they must build every key with
/// [`TestRedis::key`] (or prefix `namespace` themselves) and never flush the
/// server.
#[derive(Debug, Clone)]
pub struct TestRedis {
    /// `redis://127.0.0.1:<port>/` of the shared server (or `TEST_REDIS_URL`).
    pub url: String,
    /// `t-<8 hex digits>`, unique per [`redis()`] call.
    pub namespace: String,
}

impl TestRedis {
    /// A new multiplexed connection on the caller's runtime.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.url.as_str())
            .unwrap_or_else(|err| panic!("tally-testkit: bad Redis URL {}: {err}", self.url));
        client
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|err| panic!("tally-testkit: cannot connect to {}: {err}", self.url))
    }

    /// `"{namespace}:{name}"`.
    pub fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.namespace)
    }
}

/// The shared Redis: its URL, and the server when we started it.
struct SharedRedis {
    url: String,
    /// Held only so the server lives as long as the process.
    _server: Option<RedisServer>,
}

static REDIS: OnceCell<SharedRedis> = OnceCell::const_new();

/// A fresh namespace on the shared Redis, starting the server on first use
/// (or using `TEST_REDIS_URL`). Panics with the reason when the server cannot
/// start.
pub async fn redis() -> TestRedis {
    let shared = REDIS
        .get_or_init(|| async {
            if let Ok(url) = std::env::var(REDIS_URL_VAR) {
                return SharedRedis { url, _server: None };
            }
            match RedisServer::start(RedisOptions::default()).await {
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
