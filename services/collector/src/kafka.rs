//! Kafka clients: the source consumer (offsets stored by hand) and the producer for
//! `leads.normalized` and the dead-letter topic.

use crate::config::KafkaConfig;
use crate::internal_events;
use leadstream_runtime::lag::{self, LagBoard};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::producer::FutureProducer;
use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;
use std::sync::Arc;

/// Consumer context: exports consumer lag from librdkafka statistics (to `/metrics` and, through
/// the board, to ClickHouse) and logs rebalances.
pub struct LagContext {
    board: Arc<LagBoard>,
}

impl ClientContext for LagContext {
    fn stats(&self, stats: Statistics) {
        for r in self.board.record(&stats) {
            internal_events::consumer_lag(&r.topic, r.partition, r.lag);
        }
    }
}

impl ConsumerContext for LagContext {
    fn post_rebalance(
        &self,
        _consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &Rebalance<'_>,
    ) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions assigned")
            }
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions revoked")
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}

/// The source consumer type.
pub type SourceConsumer = StreamConsumer<LagContext>;

fn base(cfg: &KafkaConfig) -> ClientConfig {
    cfg.properties
        .client_config(&cfg.brokers, cfg.sasl_password.as_ref())
}

/// A consumer-group consumer that commits only offsets the collector stored after a flush.
pub fn consumer(
    cfg: &KafkaConfig,
    board: Arc<LagBoard>,
) -> rdkafka::error::KafkaResult<SourceConsumer> {
    let mut c = base(cfg);
    c.set("group.id", &cfg.group_id)
        // At-least-once: librdkafka commits in the background, but only offsets stored by
        // `store_offset`, which happens after ClickHouse and Kafka acknowledged the batch.
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false");
    for (k, v) in [
        ("auto.offset.reset", "earliest"),
        ("statistics.interval.ms", lag::STATISTICS_INTERVAL_MS),
        ("auto.commit.interval.ms", "1000"),
    ] {
        cfg.properties.default_to(&mut c, k, v);
    }
    c.create_with_context(LagContext { board })
}

/// The partitioner of `leads.normalized` (Kafka's Java default, murmur2 of the key).
pub const PARTITIONER: &str = "murmur2_random";

/// An idempotent producer for the normalized and dead-letter topics.
pub fn producer(cfg: &KafkaConfig) -> rdkafka::error::KafkaResult<FutureProducer> {
    let mut c = base(cfg);
    for (k, v) in [("enable.idempotence", "true"), ("linger.ms", "5")] {
        cfg.properties.default_to(&mut c, k, v);
    }
    // The aggregator computes which instance owns a lead from this mapping
    // (`leadstream_schemas::partition`), so it is fixed, not configurable.
    c.set("partitioner", PARTITIONER);
    // Consumer-only properties passed for both clients would only produce warnings here.
    c.set_log_level(rdkafka::config::RDKafkaLogLevel::Error);
    c.create()
}
