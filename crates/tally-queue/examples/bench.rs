//! Runs the queue benchmark against `REDIS_URL` (settings as in the BullMQ
//! peer's `bench.mjs`: `N`, `CONCURRENCY`, `PHASES`, …) and prints a human
//! summary, then the JSON line last.
//!
//! ```sh
//! redis-server --port 6399 --save '' --appendonly no &
//! REDIS_URL=redis://127.0.0.1:6399 cargo run --release -p tally-queue --example bench
//! ```
//! `TALLY_BENCH_THREADS` sets the Tokio worker threads (default 2).

use tally_queue::bench::{BenchSettings, run, summary};

fn main() {
    let threads = std::env::var("TALLY_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        let settings = BenchSettings::from_env()?;
        run(settings).await
    });
    match result {
        Ok(value) => {
            println!("{}", summary(&value));
            println!("{value}");
        }
        Err(err) => {
            eprintln!("bench: {err}");
            std::process::exit(1);
        }
    }
}
