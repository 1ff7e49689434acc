//! Capped exponential backoff with jitter for reconnecting to Redis, so a
//! fleet of workers does not hammer a Redis that is coming back.

use std::time::Duration;

/// Delays of 50 ms, 100 ms, … up to the cap, each drawn from `[d/2, d]`.
#[derive(Debug, Clone)]
pub(crate) struct RetryBackoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl RetryBackoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Self { min, max, current: min }
    }

    /// The next delay to wait, with jitter.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        base.mul_f64(0.5 + rand::random::<f64>() * 0.5)
    }

    /// Back to the shortest delay after a success.
    pub(crate) fn reset(&mut self) {
        self.current = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter() {
        let mut b = RetryBackoff::new(Duration::from_millis(50), Duration::from_secs(5));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(25) && first <= Duration::from_millis(50));
        for _ in 0..20 {
            assert!(b.next_delay() <= Duration::from_secs(5));
        }
        assert!(b.next_delay() >= Duration::from_millis(2500));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(50));
    }
}
