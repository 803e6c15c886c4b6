//! Kafka clients: the source consumer (offsets stored by hand) and the producer for
//! `leads.normalized` and the dead-letter topic.

use crate::config::KafkaConfig;
use crate::internal_events;
use leadstream_runtime::group::Membership;
use leadstream_runtime::lag::LagBoard;
use rdkafka::consumer::{ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::producer::FutureProducer;
use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;
use std::sync::Arc;

/// Consumer context: exports consumer lag from librdkafka statistics (to `/metrics`, through
/// the board to ClickHouse, and to the membership for readiness) and records rebalances.
pub struct LagContext {
    board: Arc<LagBoard>,
    membership: Arc<Membership>,
}

impl ClientContext for LagContext {
    fn stats(&self, stats: Statistics) {
        let rows = self.board.record(&stats);
        for r in &rows {
            internal_events::consumer_lag(&r.topic, r.partition, r.lag);
        }
        self.membership.lag(rows.iter().map(|r| r.lag).sum());
    }
}

impl ConsumerContext for LagContext {
    fn pre_rebalance(
        &self,
        _consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &Rebalance<'_>,
    ) {
        if let Rebalance::Revoke(tpl) = rebalance {
            tracing::info!(partitions = tpl.count(), "partitions revoked");
            self.membership.revoked();
        }
    }

    fn post_rebalance(
        &self,
        _consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &Rebalance<'_>,
    ) {
        match rebalance {
            Rebalance::Assign(tpl) => self.membership.assigned(
                tpl.elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect(),
            ),
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}

/// The source consumer type.
pub type SourceConsumer = StreamConsumer<LagContext>;

/// A consumer-group consumer that commits only offsets the collector stored after a flush
/// (librdkafka commits in the background, but only offsets stored by `store_offset`, which
/// happens after ClickHouse and Kafka acknowledged the batch).
pub fn consumer(
    cfg: &KafkaConfig,
    board: Arc<LagBoard>,
    membership: Arc<Membership>,
) -> rdkafka::error::KafkaResult<SourceConsumer> {
    cfg.connection()
        .consumer(&cfg.group_id)
        .create_with_context(LagContext { board, membership })
}

/// An idempotent producer for the normalized and dead-letter topics, keyed with the
/// partitioner the aggregator derives lead ownership from.
pub fn producer(cfg: &KafkaConfig) -> rdkafka::error::KafkaResult<FutureProducer> {
    cfg.connection().producer().create()
}
