//! admin-console: the operator console of tally's queues, a binary of its
//! own on its own port (`ADMIN_BIND_ADDR`, default `0.0.0.0:8081`).
//!
//! It serves three things from one process:
//!
//! - the **admin API** under `/api/v1/` ([`api`]): queues with their counts,
//!   controls and rates, jobs by state (paged) and one by one, dead-set
//!   retry and purge, pause, resume and concurrency limits, live workers;
//!   JSON in and out, described by `openapi.json` (served at
//!   `/api/v1/openapi.json`);
//! - the **web dashboard** ([`pages`]): server-rendered pages over the same
//!   data, refreshed by a small script polling the API every 2 s;
//! - the probes and metrics every tally service has: `/healthz`, `/readyz`
//!   (Redis), `/metrics`.
//!
//! Access ([`auth`]): `ADMIN_TOKEN` reads and writes, `ADMIN_READ_TOKEN`
//! only reads; API clients send a bearer token, browsers log in once and
//! hold a signed session cookie, and browser writes also carry a CSRF token
//! and an `Origin` naming the console. It is not mounted in the gateway:
//! the gateway is called by a CronJob with one narrow secret, the console
//! by people with powers over the dead set and the queue controls, so each
//! has its own port, token and NetworkPolicy.
//!
//! Layout as in the gateway: [`Settings`] from the environment,
//! [`Application::build`] binds (port 0 in tests), and
//! [`Application::run_until`] serves until the shutdown future resolves.
//! The completed/failed rates come from the queues' counters sampled in
//! process ([`rates`]).

pub mod api;
pub mod auth;
pub mod error;
pub mod html;
pub mod pages;
pub mod rates;
pub mod settings;
pub mod startup;

pub use settings::Settings;
pub use startup::Application;
