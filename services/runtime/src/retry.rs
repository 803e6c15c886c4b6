//! The one retry mechanism of every service: capped exponential backoff between attempts, and
//! every attempt and every wait raced against a give-up token, so a service told to stop
//! never waits on a dependency that is down for longer than its shutdown grace.

use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A token that fires `grace` after `shutdown` (or when the caller cancels it itself, e.g.
/// because its work ended): retries then give up, so a stop is bounded even while a dependency
/// is down. The timer task runs on `tracker`.
pub fn give_up_after(
    shutdown: &CancellationToken,
    grace: Duration,
    tracker: &TaskTracker,
) -> CancellationToken {
    let give_up = CancellationToken::new();
    let (shutdown, token) = (shutdown.clone(), give_up.clone());
    tracker.spawn(async move {
        // The grace sleep sits inside the raced future: work that ends (token cancelled) ends
        // the wait at once, not after the full grace.
        let grace = async {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            _ = grace => {}
            _ = token.cancelled() => {}
        }
        token.cancel();
    });
    give_up
}

/// The give-up token fired while retrying: the caller stops (its unfinished work is re-read
/// from the committed offsets on the next start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GaveUp;

/// Whether an error may go away by itself (an outage) or never will (the data is refused).
pub trait Transient {
    /// `true` when trying again later may succeed.
    fn is_transient(&self) -> bool;
}

impl Transient for crate::clickhouse::SinkError {
    fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}

/// Capped exponential backoff: `initial`, doubling up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// Starts at `initial`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            next: initial,
            max: max.max(initial),
        }
    }

    /// The wait before the next attempt (and doubles the one after it).
    pub fn step(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }
}

/// Retry policy of one service: backoff bounds and the give-up token.
#[derive(Debug, Clone)]
pub struct Retry {
    initial: Duration,
    max: Duration,
    give_up: CancellationToken,
}

impl Retry {
    /// A policy waiting `initial`..`max` between attempts until `give_up` fires.
    pub fn new(initial: Duration, max: Duration, give_up: CancellationToken) -> Self {
        Self {
            initial,
            max,
            give_up,
        }
    }

    /// A fresh backoff of this policy.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.initial, self.max)
    }

    /// The token that stops every retry.
    pub fn give_up(&self) -> &CancellationToken {
        &self.give_up
    }

    /// Waits `d`, or returns [`GaveUp`] as soon as the token fires.
    pub async fn pause(&self, d: Duration) -> Result<(), GaveUp> {
        tokio::select! {
            _ = self.give_up.cancelled() => Err(GaveUp),
            _ = tokio::time::sleep(d) => Ok(()),
        }
    }

    /// Runs `fut` unless the token fires first.
    pub async fn race<T>(&self, fut: impl Future<Output = T>) -> Result<T, GaveUp> {
        tokio::select! {
            _ = self.give_up.cancelled() => Err(GaveUp),
            v = fut => Ok(v),
        }
    }

    /// Runs `op` until it succeeds or fails permanently (`Ok(Err(e))`); after each transient
    /// failure `on_retry(attempt, wait, &error)` reports it and the backoff wait follows.
    pub async fn run<T, E, F, Fut>(
        &self,
        mut op: F,
        mut on_retry: impl FnMut(u32, Duration, &E),
    ) -> Result<Result<T, E>, GaveUp>
    where
        E: Transient,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut backoff = self.backoff();
        for attempt in 1.. {
            match self.race(op()).await? {
                Ok(v) => return Ok(Ok(v)),
                Err(e) if e.is_transient() => {
                    let wait = backoff.step();
                    on_retry(attempt, wait, &e);
                    self.pause(wait).await?;
                }
                Err(e) => return Ok(Err(e)),
            }
        }
        Err(GaveUp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug)]
    struct E(bool);
    impl Transient for E {
        fn is_transient(&self) -> bool {
            self.0
        }
    }

    fn policy() -> Retry {
        Retry::new(
            Duration::from_millis(1),
            Duration::from_millis(4),
            CancellationToken::new(),
        )
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let waits: Vec<u128> = (0..4).map(|_| b.step().as_millis()).collect();
        assert_eq!(waits, [100, 200, 350, 350]);
    }

    #[tokio::test]
    async fn transient_errors_are_retried_and_permanent_ones_returned() {
        let calls = AtomicU32::new(0);
        let mut reported = Vec::new();
        let r = policy()
            .run(
                || async {
                    match calls.fetch_add(1, Ordering::SeqCst) {
                        0 | 1 => Err(E(true)),
                        _ => Ok(7),
                    }
                },
                |attempt, _, _| reported.push(attempt),
            )
            .await;
        assert!(matches!(r, Ok(Ok(7))));
        assert_eq!(reported, [1, 2]);
        let r: Result<Result<(), E>, GaveUp> =
            policy().run(|| async { Err(E(false)) }, |_, _, _| {}).await;
        assert!(matches!(r, Ok(Err(E(false)))));
    }

    #[tokio::test]
    async fn the_token_interrupts_an_attempt_that_hangs() {
        let p = policy();
        let token = p.give_up().clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            token.cancel();
        });
        let r: Result<Result<(), E>, GaveUp> = p.run(std::future::pending, |_, _, _| {}).await;
        assert_eq!(r.unwrap_err(), GaveUp);
    }
}
