//! cron-gateway: the authenticated HTTP endpoint a Kubernetes CronJob calls
//! to refresh leaderboards and standings and to ask for the repairing
//! safety net.
//!
//! `GET` or `POST /api/cron/update-stats[?scope=all|leaderboard|standings]`
//! with `Authorization: Bearer <CRON_SECRET>` enqueues a deduplicated
//! `RepairPipeline` job (unless `REPAIR_ENABLED=off`), which scoring-worker
//! runs (`scoring_worker::repair`: it finds the matches whose result never
//! reached the totals and enqueues the missing jobs), and a deduplicated
//! `RefreshViews` job, and answers with both ids. Redis is the gateway's
//! only dependency: it links no Postgres client. Layout follows
//! zero-to-production: [`Settings`] from the environment,
//! [`Application::build`] binds (port 0 in tests), and
//! [`Application::run_until`] serves until the shutdown future resolves.

pub mod auth;
pub mod routes;
pub mod settings;
pub mod startup;

pub use settings::Settings;
pub use startup::Application;
