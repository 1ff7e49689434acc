//! Advisory lock keys, in one place so no two operations share one by accident.
//!
//! All keys use the two-integer form `(CLASS, n)`, a key space separate from
//! the single-bigint form other tools tend to use.

/// "taly" in ASCII: the class of every tally advisory lock.
pub const CLASS: i32 = 0x7461_6c79;
/// Serialises migration runs.
pub const MIGRATE: i32 = 1;
/// Serialises leaderboard refreshes (they read-modify-write the rank histogram).
pub const REFRESH_LEADERBOARD: i32 = 2;
/// Serialises standings refreshes.
pub const REFRESH_STANDINGS: i32 = 3;
