//! Consumer-group membership as a service sees it: what it owns, since when, whether it makes
//! progress, and when the watchdog (`crate::watchdog`) should make it join the group again.

use crate::internal_events as events;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long past the session timeout an empty assignment is tolerated before the watchdog acts.
const GRACE: Duration = Duration::from_secs(3);
/// Longest wait between two re-joins while the assignment stays empty.
const MAX_REJOIN_BACKOFF: Duration = Duration::from_secs(300);
/// A member with messages waiting that consumed nothing for this long is not making progress.
pub const STALL_AFTER: Duration = Duration::from_secs(60);

/// What one service knows of its place in the consumer group.
#[derive(Debug)]
pub struct Membership {
    pub(crate) service: &'static str,
    session_timeout: Duration,
    born: Instant,
    state: Mutex<State>,
    /// Milliseconds since `born` of the last consumed message (lock-free: per message).
    last_consumed_ms: AtomicU64,
}

#[derive(Debug)]
struct State {
    subscribed: bool,
    assigned: Vec<(String, i32)>,
    changed_at: Instant,
    standby: bool,
    rejoin_backoff: Duration,
    next_rejoin: Instant,
    /// Messages waiting on the owned partitions, from the client's statistics.
    lag: i64,
    /// When `lag` last went from zero to positive (or was last consumed from).
    waiting_since: Option<Instant>,
}

impl Membership {
    /// A member of `service` announcing `session_timeout`.
    pub fn new(service: &'static str, session_timeout: Duration) -> Arc<Self> {
        let now = Instant::now();
        Arc::new(Self {
            service,
            session_timeout,
            born: now,
            state: Mutex::new(State {
                subscribed: false,
                assigned: Vec::new(),
                changed_at: now,
                standby: false,
                rejoin_backoff: session_timeout + GRACE,
                next_rejoin: now,
                lag: 0,
                waiting_since: None,
            }),
            last_consumed_ms: AtomicU64::new(0),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut guard = match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// The consumer subscribed (again).
    pub fn subscribed(&self) {
        self.with(|s| {
            s.subscribed = true;
            s.changed_at = Instant::now();
        });
    }

    /// The coordinator assigned these topic-partitions (an empty list counts too).
    pub fn assigned(&self, partitions: Vec<(String, i32)>) {
        events::partitions_assigned(self.service, partitions.len());
        let base = self.session_timeout + GRACE;
        self.with(|s| {
            if !partitions.is_empty() {
                s.standby = false;
                s.rejoin_backoff = base;
            }
            s.assigned = partitions;
            s.changed_at = Instant::now();
        });
    }

    /// The coordinator took the partitions back (a rebalance began).
    pub fn revoked(&self) {
        self.with(|s| {
            s.assigned.clear();
            s.changed_at = Instant::now();
        });
    }

    /// A message was consumed.
    pub fn consumed(&self) {
        let ms = self.born.elapsed().as_millis() as u64;
        self.last_consumed_ms.store(ms, Ordering::Relaxed);
    }

    /// The client's statistics report `lag` messages waiting on the owned partitions.
    pub fn lag(&self, lag: i64) {
        self.with(|s| {
            s.lag = lag;
            if lag <= 0 {
                s.waiting_since = None;
            } else if s.waiting_since.is_none() {
                s.waiting_since = Some(Instant::now());
            }
        });
    }

    /// The owned topic-partitions.
    pub fn partitions(&self) -> Vec<(String, i32)> {
        self.with(|s| s.assigned.clone())
    }

    /// Why the membership keeps the service from being ready, if it does: not subscribed, no
    /// partitions (unless knowingly none), or messages waiting with nothing consumed for
    /// [`STALL_AFTER`].
    pub fn not_ready(&self) -> Option<String> {
        let last = Duration::from_millis(self.last_consumed_ms.load(Ordering::Relaxed));
        let since_consumed = self.born.elapsed().saturating_sub(last);
        self.with(|s| {
            if !s.subscribed {
                return Some("not subscribed yet".to_string());
            }
            if s.assigned.is_empty() && !s.standby {
                return Some(format!(
                    "owns no partitions (for {} s)",
                    s.changed_at.elapsed().as_secs()
                ));
            }
            let stalled = s
                .waiting_since
                .is_some_and(|w| w.elapsed() > STALL_AFTER && since_consumed > STALL_AFTER);
            stalled.then(|| {
                format!(
                    "{} messages wait and none was consumed for {} s",
                    s.lag,
                    since_consumed.as_secs()
                )
            })
        })
    }

    /// Whether the watchdog should look at the group now: subscribed, no partitions since
    /// longer than the session timeout (plus a grace), and the back-off passed.
    pub(crate) fn rejoin_due(&self) -> bool {
        let now = Instant::now();
        self.with(|s| {
            s.subscribed
                && s.assigned.is_empty()
                && !s.standby
                && now.duration_since(s.changed_at) > self.session_timeout + GRACE
                && now >= s.next_rejoin
        })
    }

    /// Whether the watchdog should look for orphaned partitions now: this member owns some (a
    /// member without partitions takes the other path) and its re-join back-off passed.
    pub(crate) fn orphan_check_due(&self) -> bool {
        let now = Instant::now();
        self.with(|s| s.subscribed && !s.assigned.is_empty() && now >= s.next_rejoin)
    }

    pub(crate) fn mark_standby(&self) {
        self.with(|s| s.standby = true);
    }

    pub(crate) fn rejoined(&self) {
        self.with(|s| {
            s.next_rejoin = Instant::now() + s.rejoin_backoff;
            s.rejoin_backoff = (s.rejoin_backoff * 2).min(MAX_REJOIN_BACKOFF);
            s.subscribed = true;
            s.changed_at = Instant::now();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_assignment_is_not_ready_and_due_for_a_rejoin_after_the_session_timeout() {
        let m = Membership::new("test", Duration::ZERO);
        assert_eq!(m.not_ready().as_deref(), Some("not subscribed yet"));
        m.subscribed();
        m.assigned(Vec::new());
        assert!(m.not_ready().unwrap().starts_with("owns no partitions"));
        // Session timeout 0: due after the grace only.
        assert!(!m.rejoin_due());
        m.with(|s| s.changed_at = Instant::now() - GRACE - Duration::from_millis(1));
        assert!(m.rejoin_due());
        m.rejoined();
        assert!(!m.rejoin_due(), "backs off after a re-join");
        m.assigned(vec![("t".into(), 0)]);
        assert_eq!(m.not_ready(), None);
        assert!(!m.rejoin_due());
    }

    #[test]
    fn a_standby_member_is_ready_and_left_alone() {
        let m = Membership::new("test", Duration::ZERO);
        m.subscribed();
        m.assigned(Vec::new());
        m.mark_standby();
        assert_eq!(m.not_ready(), None);
        m.with(|s| s.changed_at = Instant::now() - Duration::from_secs(60));
        assert!(!m.rejoin_due());
    }

    #[test]
    fn waiting_messages_with_nothing_consumed_is_a_stall() {
        let m = Membership::new("test", Duration::ZERO);
        m.subscribed();
        m.assigned(vec![("t".into(), 0)]);
        m.lag(10);
        assert_eq!(m.not_ready(), None, "not stalled yet");
        m.with(|s| s.waiting_since = Some(Instant::now() - STALL_AFTER * 2));
        // Nothing consumed since the member was born, which is younger than STALL_AFTER.
        assert_eq!(m.not_ready(), None);
        let m2 = Membership {
            born: Instant::now() - STALL_AFTER * 3,
            ..Arc::into_inner(Membership::new("test", Duration::ZERO)).unwrap()
        };
        m2.subscribed();
        m2.assigned(vec![("t".into(), 0)]);
        m2.lag(10);
        m2.with(|s| s.waiting_since = Some(Instant::now() - STALL_AFTER * 2));
        assert!(m2.not_ready().unwrap().contains("10 messages wait"));
        m2.consumed();
        assert_eq!(m2.not_ready(), None);
        m2.lag(0);
        assert_eq!(m2.not_ready(), None);
    }
}
