//! Waiting for a condition, and reading what a Redis server has done.

use std::future::Future;
use std::time::Duration;

/// Polls `check` every 10 ms until it returns true; panics after `limit`
/// (a guard against hanging, not a timing assertion).
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Script calls (`EVALSHA` and `EVAL`) the one server behind `conn` has answered
/// since it started (`INFO commandstats`): with a worker's promoter and
/// reaper off, its claims.
pub async fn script_calls(conn: &mut impl redis::aio::ConnectionLike) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("INFO commandstats");
    info.lines()
        .filter(|line| line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:"))
        .filter_map(|line| line.split_once("calls=")?.1.split(',').next()?.parse::<u64>().ok())
        .sum()
}
