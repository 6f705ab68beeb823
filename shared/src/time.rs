//! Wall-clock helpers. Bus timestamps are microseconds since the Unix epoch so that
//! processes on one host can measure latency between each other.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Seconds since the Unix epoch, as a block header timestamp.
pub fn now_secs_u32() -> u32 {
    (now_micros() / 1_000_000) as u32
}
