//! Integration tests of tally-store against a real PostgreSQL.
//!
//! One test binary (so one throwaway server from tally-testkit for all of
//! them); each test gets its own database cloned from a migrated template.
//! Modules follow the checklist: scoring rules, constraints,
//! migrations, idempotency and concurrency, readers during refreshes, and a
//! property test against a brute-force recomputation.

mod common;
mod concurrency;
mod constraints;
mod migrations;
mod property;
mod readers;
mod scoring;
