//! CORE: a capped exponential backoff for one kind of API write, so a write the API server keeps
//! refusing (a 403 from missing RBAC, a webhook that rejects it) is retried ever more rarely
//! instead of on every round. Time comes in as an argument.

use std::time::Duration;

use tokio::time::Instant;

/// When the next attempt of one kind of write may go out.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next_delay: Duration,
    retry_at: Option<Instant>,
}

impl Backoff {
    /// Starts at `initial` after the first failure and doubles up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next_delay: initial,
            retry_at: None,
        }
    }

    /// Whether a write may be attempted at `now`.
    pub fn ready(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|at| now >= at)
    }

    /// A write failed at `now`: wait the current delay, double it for next time. Returns the wait.
    pub fn failed(&mut self, now: Instant) -> Duration {
        let wait = self.next_delay;
        self.retry_at = Some(now + wait);
        self.next_delay = (wait * 2).min(self.max);
        wait
    }

    /// A write went through: the next failure starts from `initial` again.
    pub fn succeeded(&mut self) {
        self.next_delay = self.initial;
        self.retry_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets_on_success() {
        let t0 = Instant::now();
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        assert!(b.ready(t0));
        let waits: Vec<u64> = (0..12).map(|_| b.failed(t0).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert!(!b.ready(t0 + Duration::from_secs(299)));
        assert!(b.ready(t0 + Duration::from_secs(300)));
        b.succeeded();
        assert!(b.ready(t0));
        assert_eq!(b.failed(t0), Duration::from_secs(1));
    }
}
