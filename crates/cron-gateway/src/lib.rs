//! cron-gateway: the authenticated HTTP endpoint a Kubernetes CronJob calls
//! to refresh leaderboards and standings.
//!
//! `GET` or `POST /api/cron/update-stats[?scope=all|leaderboard|standings]`
//! with `Authorization: Bearer <CRON_SECRET>` enqueues a deduplicated
//! `RefreshViews` job and answers with its id. With a `DATABASE_URL` it
//! first runs the repairing safety net (`crate::repair`): it finds
//! the matches whose result never reached the totals, enqueues the missing
//! jobs (bounded per call) and reports the counts in the answer. Readiness
//! needs Redis only, so the gateway stays up when the database is away (a
//! cron call then answers 503: the repair did not run). Layout follows zero-to-production: [`Settings`] from the
//! environment, [`Application::build`] binds (port 0 in tests), and
//! [`Application::run_until`] serves until the shutdown future resolves.

pub mod auth;
pub mod repair;
pub mod routes;
pub mod settings;
pub mod startup;

pub use settings::Settings;
pub use startup::Application;
