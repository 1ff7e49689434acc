//! Integration tests of tally-store against a real PostgreSQL.
//!
//! One test binary (so one throwaway server from tally-testkit for all of
//! them); each test gets its own database cloned from a migrated template.
//! Modules: scoring rules, constraints,
//! migrations, idempotency and concurrency, readers during refreshes, a
//! property test against a brute-force recomputation, the bounds of a
//! job attempt's database work (timeouts, cancellation, isolation, races),
//! the job outbox and the repair work list.

mod attempts;
mod common;
mod concurrency;
mod constraints;
mod isolation;
mod migrations;
mod outbox;
mod property;
mod races;
mod readers;
mod repair;
mod scoring;
