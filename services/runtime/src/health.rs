//! What `/readyz` answers: a service is ready when nothing blocks it (ClickHouse migrated and
//! writes succeeding, state rebuilt, not shutting down, ...) and its consumer-group membership
//! is sound (subscribed, owning its share of partitions or knowingly none, making progress).

use crate::group::Membership;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

/// The readiness of one service.
#[derive(Debug)]
pub struct Readiness {
    service: &'static str,
    blocked: Mutex<BTreeMap<&'static str, String>>,
    membership: OnceLock<Arc<Membership>>,
}

impl Readiness {
    /// Not ready until `starting` is cleared and a membership is attached.
    pub fn new(service: &'static str) -> Arc<Self> {
        let r = Self {
            service,
            blocked: Mutex::new(BTreeMap::new()),
            membership: OnceLock::new(),
        };
        r.block("starting", "starting up");
        Arc::new(r)
    }

    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<&'static str, String>) -> T) -> T {
        let mut guard = match self.blocked.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// `condition` keeps the service from being ready, because of `why`.
    pub fn block(&self, condition: &'static str, why: impl Into<String>) {
        let why = why.into();
        let new = self.with(|b| b.insert(condition, why.clone()).is_none());
        if new {
            tracing::info!(service = self.service, condition, why, "not ready");
        }
    }

    /// `condition` no longer blocks.
    pub fn clear(&self, condition: &'static str) {
        if self.with(|b| b.remove(condition).is_some()) {
            tracing::info!(service = self.service, condition, "condition cleared");
        }
    }

    /// From now on the consumer-group membership counts too.
    pub fn attach(&self, membership: Arc<Membership>) {
        let _ = self.membership.set(membership);
    }

    /// `Ok` when ready, else every reason, joined.
    pub fn verdict(&self) -> Result<(), String> {
        let mut reasons: Vec<String> =
            self.with(|b| b.iter().map(|(c, why)| format!("{c}: {why}")).collect());
        match self.membership.get() {
            None => reasons.push("kafka: not subscribed yet".into()),
            Some(m) => reasons.extend(m.not_ready().map(|why| format!("kafka: {why}"))),
        }
        let ready = reasons.is_empty();
        metrics::gauge!(format!("leadstream_{}_ready", self.service)).set(if ready {
            1.0
        } else {
            0.0
        });
        if ready {
            Ok(())
        } else {
            Err(reasons.join("; "))
        }
    }

    /// Whether [`Readiness::verdict`] is `Ok`.
    pub fn is_ready(&self) -> bool {
        self.verdict().is_ok()
    }
}

/// How often [`watch_clickhouse`] pings.
pub const PING_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Blocks the `clickhouse_reachable` condition while ClickHouse does not answer a ping (every
/// [`PING_EVERY`]), so a service with nothing to write is not ready while its database is away
/// either, until `shutdown`.
pub async fn watch_clickhouse(
    readiness: Arc<Readiness>,
    client: clickhouse::Client,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        let answered =
            tokio::time::timeout(PING_EVERY, client.query("SELECT 1").fetch_one::<u8>()).await;
        match answered {
            Ok(Ok(_)) => readiness.clear("clickhouse_reachable"),
            Ok(Err(e)) => readiness.block("clickhouse_reachable", format!("ping failed: {e}")),
            Err(_) => readiness.block("clickhouse_reachable", "ping timed out"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PING_EVERY) => {}
        }
    }
}

/// The `/readyz` answer: status code and body.
pub fn readyz(r: &Readiness) -> (u16, String) {
    match r.verdict() {
        Ok(()) => (200, "ready\n".into()),
        Err(why) => (503, format!("not ready: {why}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ready_only_when_nothing_blocks_and_the_membership_is_sound() {
        let r = Readiness::new("test");
        assert!(r.verdict().unwrap_err().contains("starting"));
        r.clear("starting");
        assert!(r.verdict().unwrap_err().contains("not subscribed"));
        let m = Membership::new("test", Duration::from_secs(10));
        r.attach(m.clone());
        m.subscribed();
        assert!(r.verdict().unwrap_err().contains("owns no partitions"));
        m.assigned(vec![("t".into(), 0)]);
        assert_eq!(r.verdict(), Ok(()));
        r.block("clickhouse", "writes failing");
        r.block("clickhouse", "still failing");
        let why = r.verdict().unwrap_err();
        assert!(why.contains("clickhouse: still failing"), "{why}");
        r.clear("clickhouse");
        assert!(r.is_ready());
        assert_eq!(readyz(&r), (200, "ready\n".to_string()));
    }
}
