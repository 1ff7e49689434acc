//! Wall-clock time in milliseconds on this host. Leases, due times and
//! dead-set ages are judged by Redis's clock inside the scripts (see
//! `lua/_shared.lua`); this host's clock only measures local durations and
//! the distance of a due time from now, which the scripts keep.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

/// A duration in whole milliseconds, at least 1, at most `u64::MAX` (a
/// huge duration saturates instead of wrapping around to a short one).
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}
