//! stats-worker binary. The handlers live in the library, the bootstrap
//! (settings, telemetry, probes, drain) in `tally-service`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tally_worker::main(
        "stats-worker",
        "recalculates points (CalculatePoints) and refreshes leaderboards and standings (RefreshViews), queue `stats`.",
        stats_worker::QUEUE,
        stats_worker::register,
    )
    .await
}
