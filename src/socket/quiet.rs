//! Log lines about single connections, kept few under a flood: each kind is logged at most
//! once per [`LOG_EVERY`], and the next line says how many were
//! held back. An attacker opening thousands of connections cannot fill the disk through
//! the log.

use std::time::{Duration, Instant};

/// Lines about single connections (refused, evicted, timed out) are logged at most once
/// per this long for each kind; the next line says how many were held back.
pub const LOG_EVERY: Duration = Duration::from_secs(1);

/// The kinds of per-connection log lines a flood of connections could multiply.
#[derive(Clone, Copy)]
pub(super) enum Noise {
    /// Refused at accept (over the cap, or permission denied).
    Refused,
    /// Closed at once: too many refused connections already.
    ClosedAtOnce,
    /// Dropped to make room for a newcomer.
    Evicted,
    /// Dropped after its timeout.
    TimedOut,
}

/// When a kind of line was last logged, and how many were held back since.
#[derive(Default, Clone, Copy)]
pub(super) struct Quiet {
    last: Option<Instant>,
    held: u64,
}

impl Quiet {
    /// `Some(lines held back)` if a line may be logged now.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_some_and(|t| now < t + LOG_EVERY) {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_counting_the_rest() {
        let t0 = Instant::now();
        let mut q = Quiet::default();
        assert_eq!(q.allow(t0), Some(0));
        for i in 1..=5 {
            assert_eq!(q.allow(t0 + LOG_EVERY * i / 10), None);
        }
        assert_eq!(q.allow(t0 + LOG_EVERY), Some(5));
        assert_eq!(q.allow(t0 + LOG_EVERY * 3), Some(0));
    }
}
