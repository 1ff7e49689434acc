//! scoring-worker binary. The handler lives in the library, the bootstrap
//! (settings, telemetry, probes, drain) in `tally-service`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tally_worker::main(
        "scoring-worker",
        "scores every prediction of a finished match (queue `scoring`), then enqueues CalculatePoints;
runs the repair the cron gateway asks for (RepairPipeline): enqueues the work lost between PostgreSQL and Redis.",
        scoring_worker::QUEUE,
        scoring_worker::register,
    )
    .await
}
