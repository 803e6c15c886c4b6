//! The aggregator's consumer context: it counts rebalances (the consume loop rebuilds when the
//! count moves), keeps the group membership for readiness, and passes librdkafka's consumer
//! lag to the dashboards.

use crate::internal_events as events;
use leadstream_runtime::group::Membership;
use leadstream_runtime::lag::LagBoard;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance, StreamConsumer};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Counts the consumer's rebalances so the loop notices that its partitions changed, and keeps
/// the consumer lag librdkafka reports for the dashboards.
pub struct RebalanceContext {
    pub(crate) generation: AtomicU64,
    lag: Arc<LagBoard>,
    membership: Arc<Membership>,
}

impl RebalanceContext {
    /// A context recording lag on `lag` and the group membership on `membership`.
    pub fn new(lag: Arc<LagBoard>, membership: Arc<Membership>) -> Self {
        Self {
            generation: AtomicU64::new(0),
            lag,
            membership,
        }
    }
}

impl rdkafka::ClientContext for RebalanceContext {
    fn stats(&self, stats: rdkafka::statistics::Statistics) {
        let rows = self.lag.record(&stats);
        for r in &rows {
            events::consumer_lag(&r.topic, r.partition, r.lag);
        }
        self.membership.lag(rows.iter().map(|r| r.lag).sum());
    }
}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        // Revocation invalidates the state at once: nothing consumed after this point may be
        // flushed under the old ownership.
        if let Rebalance::Revoke(list) = r {
            events::partitions_changed("revoked", list.count());
            self.membership.revoked();
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        match r {
            Rebalance::Assign(list) => {
                events::partitions_changed("assigned", list.count());
                self.membership.assigned(
                    list.elements()
                        .iter()
                        .map(|e| (e.topic().to_string(), e.partition()))
                        .collect(),
                );
                self.generation.fetch_add(1, Ordering::SeqCst);
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance failed"),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// The aggregator's consumer.
pub type AggregatorConsumer = StreamConsumer<RebalanceContext>;
