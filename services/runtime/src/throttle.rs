//! Rate-limited logging for happenings that can come once per message: the first one of a
//! period is logged, the rest of the period only counted (metrics count every one), so a
//! poisoned topic cannot flood the logs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// At most one log line per `every_ms`, with how many were skipped since the last one.
#[derive(Debug)]
pub struct Throttle {
    every_ms: u64,
    next_ms: AtomicU64,
    skipped: AtomicU64,
}

impl Throttle {
    /// A throttle allowing one line per `every_ms` milliseconds.
    pub const fn per(every_ms: u64) -> Self {
        Self {
            every_ms,
            next_ms: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }

    /// `Some(skipped since the last allowed line)` when this one may be logged.
    pub fn allow(&self) -> Option<u64> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let next = self.next_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now + self.every_ms,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            Some(self.skipped.swap(0, Ordering::Relaxed))
        } else {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_and_the_rest_counted() {
        let t = Throttle::per(60_000);
        assert_eq!(t.allow(), Some(0));
        for _ in 0..5 {
            assert_eq!(t.allow(), None);
        }
        t.next_ms.store(0, Ordering::Relaxed);
        assert_eq!(
            t.allow(),
            Some(5),
            "the next line says how many were skipped"
        );
    }
}
