//! Exponential backoff: how long something that keeps failing waits before
//! the next try. One type for every retry loop of the crate (a partition's
//! fetches and produces, a broker's reconnects), each with its own base and
//! ceiling.

use std::time::{Duration, Instant};

/// Waits `base` after the first failure, doubling with each failure in a
/// row up to `max`; a success starts again from `base`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
    until: Option<Instant>,
}

impl Backoff {
    /// A backoff with nothing to wait for yet.
    pub(crate) const fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            failures: 0,
            until: None,
        }
    }

    /// Whether the next try must still wait at `now`.
    pub(crate) fn waiting(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| until > now)
    }

    /// When the next try may go, if a failure set a time.
    pub(crate) fn until(&self) -> Option<Instant> {
        self.until
    }

    /// Notes a failure at `now`: the next try waits the next step.
    pub(crate) fn fail(&mut self, now: Instant) {
        // Past 2^16 steps every ceiling in use is reached; the cap keeps the
        // shift in range.
        let delay = self
            .base
            .saturating_mul(1 << self.failures.min(16))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        self.until = Some(now + delay);
    }

    /// Notes a success: the next failure waits `base` again.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
        self.until = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_base_up_to_the_ceiling_and_resets() {
        let now = Instant::now();
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        assert!(!backoff.waiting(now));
        let mut waits = Vec::new();
        for _ in 0..9 {
            backoff.fail(now);
            waits.push(backoff.until().map(|at| at - now));
        }
        let ms: Vec<u128> = waits.iter().flatten().map(Duration::as_millis).collect();
        assert_eq!(ms, [50, 100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert!(backoff.waiting(now + Duration::from_millis(4999)));
        assert!(!backoff.waiting(now + Duration::from_millis(5000)));
        backoff.reset();
        assert!(!backoff.waiting(now));
        backoff.fail(now);
        assert_eq!(backoff.until(), Some(now + Duration::from_millis(50)));
    }
}
