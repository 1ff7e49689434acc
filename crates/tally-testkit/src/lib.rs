//! Throwaway `redis-server` and PostgreSQL for tests, never for production.
//!
//! A test binary asks for [`redis()`] or [`database()`] (or
//! [`database_from_template()`]); the first call in the process starts one
//! shared server on a free loopback port in a temporary directory, and every
//! later call reuses it. Each test still gets isolation: its own key namespace
//! in Redis ([`TestRedis`]) and its own database in Postgres
//! ([`TestDatabase`], dropped again with the handle). Chaos tests that need to
//! restart or stop a server take a dedicated one ([`RedisServer`],
//! [`PostgresServer`]).
//!
//! Nothing is left behind, even when the test process is killed with
//! `SIGKILL` and Rust statics are never dropped: every server directory comes
//! with a small `sh` watchdog holding the read end of a pipe whose write end
//! only the test process holds. The kernel closes that pipe whenever the
//! process ends, however it ends; the watchdog then stops the server
//! (`SIGINT` for Postgres, a fast shutdown; `SIGTERM` for Redis) and removes
//! the directory.
//!
//! `TEST_REDIS_URL` and `TEST_DATABASE_URL` point the shared handles at
//! existing servers instead (per-test databases are then created on that
//! server). Dedicated servers always start their own process. On such a
//! shared external server the kit cannot clean up at exit: template databases
//! (`tpl_<key>_<random>`) and namespaced Redis keys stay behind.
//!
//! `TALLY_TEST_REDIS=cluster` makes the shared Redis, and every
//! [`DedicatedRedis`], a six-node Redis Cluster instead ([`RedisCluster`]:
//! three masters with a replica each), so that a suite written against the
//! URLs, [`connect`], [`TestRedis::scan`] and [`master_connections`] runs
//! on both kinds unchanged; `make test` runs the engine's reliability,
//! chaos, failure and promise suites that way a second time (see
//! `backend`). [`RedisServer`] and [`RedisCluster`] stay what they say.
//!
//! Redis isolation is by key prefix only, so code under test must put
//! [`TestRedis::namespace`] into its keys. A program that cannot take a
//! prefix (an end-to-end test of a binary) or a test that flushes, restarts
//! or measures Redis should use its own [`RedisServer`] (one starts in about
//! 25 ms), or [`DedicatedRedis`] to be run on a cluster as well (one starts
//! in about 2 s).
//!
//! ```no_run
//! # async fn example() {
//! use redis::AsyncCommands as _;
//!
//! let redis = tally_testkit::redis().await;
//! let mut conn = redis.connection().await;
//! let _: () = conn.set(redis.key("greeting"), "hello").await.unwrap();
//!
//! let db = tally_testkit::database_from_template("migrated", |url| async move {
//!     // Run the migrations against `url` here; this runs once per process.
//!     Ok(())
//! })
//! .await;
//! let client = db.client().await;
//! client.batch_execute("SELECT 1").await.unwrap();
//! # }
//! ```
//!
//! Modules: `backend` chooses between a server and a cluster and reaches
//! either, `binaries` finds the server programs, `scratch` owns temporary
//! directories and their watchdogs, `process` holds the process plumbing
//! shared by both servers, `redis_server` and `postgres_server` are the
//! dedicated servers, `redis_cluster` the throwaway cluster, `shared` the
//! per-process shared Redis and per-test namespaces, `databases` the shared
//! PostgreSQL and per-test databases, `wait` polling for a condition and
//! counting a Redis server's script calls.
//!
//! Everything PostgreSQL is behind the `postgres` feature (on by default):
//! a crate whose tests need Redis only (the gateway, which must link no
//! Postgres client, dev-dependencies included) depends on the kit with
//! `default-features = false`.

mod backend;
mod binaries;
#[cfg(feature = "postgres")]
mod databases;
pub mod http;
#[cfg(feature = "postgres")]
mod postgres_server;
mod process;
pub mod prometheus;
mod proxy;
mod redis_cluster;
mod redis_server;
mod scratch;
mod shared;
mod wait;

pub use backend::{
    BACKEND_VAR, Backend, DedicatedRedis, RedisConnection, backend, connect, is_cluster_url, master_connections, scan,
};
pub use binaries::faketime;
#[cfg(feature = "postgres")]
pub use databases::{TestDatabase, database, database_from_template};
#[cfg(feature = "postgres")]
pub use postgres_server::PostgresServer;
pub use process::{Signal, free_port, last_lines, send_signal};
pub use proxy::SilentProxy;
pub use redis_cluster::RedisCluster;
pub use redis_server::{RedisOptions, RedisServer};
pub use shared::{TestRedis, redis};
pub use wait::{eventually, script_calls};
