//! cron-gateway: the authenticated HTTP endpoint a Kubernetes CronJob calls
//! to refresh leaderboards and standings.
//!
//! `GET` or `POST /api/cron/update-stats[?scope=all|leaderboard|standings]`
//! with `Authorization: Bearer <CRON_SECRET>` enqueues a deduplicated
//! `RefreshViews` job and answers with its id. The gateway never touches
//! Postgres: it only needs Redis, so it stays up (and answers 503) when the
//! database is away. Layout follows zero-to-production: [`Settings`] from the
//! environment, [`Application::build`] binds (port 0 in tests), and
//! [`Application::run_until`] serves until the shutdown future resolves.

pub mod auth;
pub mod routes;
pub mod settings;
pub mod startup;

pub use settings::Settings;
pub use startup::Application;
