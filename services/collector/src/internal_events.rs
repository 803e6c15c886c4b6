//! Every observable happening in the collector, as a named event that emits its log line and its
//! metric together. Label values come from small fixed sets (source kinds, error categories,
//! table names) plus Kafka partition numbers.

use leadstream_runtime::throttle::Throttle;
use leadstream_schemas::{ErrorCategory, NormalizeError, SourceKind};
use std::time::Duration;

/// A message was read from a source topic.
pub fn message_received(kind: SourceKind, bytes: usize) {
    metrics::counter!("leadstream_collector_received_total", "source" => kind.as_str())
        .increment(1);
    metrics::counter!("leadstream_collector_received_bytes_total", "source" => kind.as_str())
        .increment(bytes as u64);
}

/// A message was read from a topic that has no contract.
pub fn unknown_topic(topic: &str) {
    tracing::warn!(
        topic,
        "message from a topic with no configured contract; dead-lettering it"
    );
    metrics::counter!("leadstream_collector_rejected_total", "source" => "unknown", "category" => ErrorCategory::UnknownTopic.as_str())
        .increment(1);
}

/// A message passed its contract.
pub fn message_normalized(kind: SourceKind) {
    metrics::counter!("leadstream_collector_normalized_total", "source" => kind.as_str())
        .increment(1);
}

/// A message failed its contract and goes to the dead-letter path (logged at most once a
/// second; the metric counts every one).
pub fn message_rejected(kind: SourceKind, partition: i32, offset: i64, err: &NormalizeError) {
    static LOG: Throttle = Throttle::per(1000);
    if let Some(skipped) = LOG.allow() {
        tracing::warn!(source = kind.as_str(), partition, offset, category = err.category.as_str(), field = err.field.as_deref(), reason = %err.message, skipped, "message rejected (skipped: rejections not logged since the last line)");
    }
    metrics::counter!("leadstream_collector_rejected_total", "source" => kind.as_str(), "category" => err.category.as_str())
        .increment(1);
}

/// A native id appeared twice within one batch; the copy was dropped before insert.
pub fn duplicate_in_batch(kind: &str) {
    metrics::counter!("leadstream_collector_duplicates_in_batch_total", "source" => kind.to_string()).increment(1);
}

/// Rows were acknowledged by ClickHouse.
pub fn rows_inserted(table: &'static str, rows: usize, elapsed: Duration) {
    tracing::debug!(
        table,
        rows,
        elapsed_ms = elapsed.as_millis() as u64,
        "insert acknowledged"
    );
    metrics::counter!("leadstream_collector_inserted_rows_total", "table" => table)
        .increment(rows as u64);
    metrics::histogram!("leadstream_collector_insert_latency_seconds", "table" => table)
        .record(elapsed.as_secs_f64());
    metrics::histogram!("leadstream_collector_batch_size_rows", "table" => table)
        .record(rows as f64);
}

/// A write failed in a way retrying can fix; the collector waits and tries again.
pub fn write_retry(
    target: &'static str,
    attempt: u32,
    backoff: Duration,
    error: &dyn std::fmt::Display,
) {
    tracing::warn!(target_system = target, attempt, backoff_ms = backoff.as_millis() as u64, %error, "write failed; retrying");
    metrics::counter!("leadstream_collector_retries_total", "target" => target).increment(1);
}

/// ClickHouse rejected a row's data itself; the row is dead-lettered instead of retried.
pub fn row_rejected_by_sink(event_id: &str, error: &dyn std::fmt::Display) {
    tracing::error!(event_id, %error, "clickhouse rejected a row; dead-lettering it");
    metrics::counter!("leadstream_collector_rejected_total", "source" => "sink", "category" => ErrorCategory::SinkRejected.as_str())
        .increment(1);
}

/// The broker refused a record for good (too large, invalid): it is not retried. `what` says
/// which kind (`normalized` becomes a dead letter; a `dead_letter` is dropped, its
/// `ingest_errors` row remains); `id` is the event id or the payload's SHA-256.
pub fn publish_refused(what: &'static str, id: &str, error: &dyn std::fmt::Display) {
    tracing::error!(what, id, %error, "kafka refused a record; not retrying it");
    metrics::counter!("leadstream_collector_publish_refused_total", "topic" => what).increment(1);
}

/// Messages were published to a Kafka topic.
pub fn published(target: &'static str, count: usize) {
    metrics::counter!("leadstream_collector_published_total", "topic" => target)
        .increment(count as u64);
}

/// Offsets were stored after a successful flush.
pub fn offsets_stored(partitions: usize, messages: usize) {
    tracing::debug!(partitions, messages, "offsets stored");
    metrics::counter!("leadstream_collector_committed_messages_total").increment(messages as u64);
}

/// Storing an offset failed, usually because the partition was revoked mid-batch; the next owner
/// re-reads those messages and the idempotent tables absorb the replay.
pub fn offset_store_failed(topic: &str, partition: i32, error: &dyn std::fmt::Display) {
    tracing::info!(topic, partition, %error, "could not store offset (partition revoked?); it will be replayed");
    metrics::counter!("leadstream_collector_offset_store_failures_total").increment(1);
}

/// Consumer lag per partition, from librdkafka statistics.
pub fn consumer_lag(topic: &str, partition: i32, lag: i64) {
    metrics::gauge!("leadstream_collector_consumer_lag", "topic" => topic.to_string(), "partition" => partition.to_string())
        .set(lag as f64);
}

/// The rate limiter made a topic wait.
pub fn rate_limited(kind: SourceKind) {
    metrics::counter!("leadstream_collector_rate_limited_total", "source" => kind.as_str())
        .increment(1);
}

/// Newest event time seen (for freshness).
pub fn newest_event(ms: i64) {
    metrics::gauge!("leadstream_collector_newest_event_timestamp_seconds").set(ms as f64 / 1000.0);
}
