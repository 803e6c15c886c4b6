//! Every observable happening in the aggregator, as a named event that emits its log line and
//! its metric together. Label values come from small fixed sets (transition kinds, tables).

use crate::machine::Kind;
use std::time::Duration;

mod state;
pub use state::*;

/// A consumed message could not be read (neither a normalized event nor a recheck).
pub fn message_unreadable(topic: &str, partition: i32, offset: i64, error: &dyn std::fmt::Display) {
    static LOG: leadstream_runtime::throttle::Throttle =
        leadstream_runtime::throttle::Throttle::per(1000);
    if let Some(skipped) = LOG.allow() {
        tracing::warn!(topic, partition, offset, %error, skipped, "unreadable message; sent to the dead-letter topic (skipped: not logged since the last line)");
    }
    metrics::counter!("leadstream_aggregator_unreadable_messages_total").increment(1);
}

/// What applying one event did (a parked one is counted when it is applied).
pub fn ingested(result: crate::engine::Ingested, event_id: &str) {
    use crate::engine::Ingested;
    match result {
        Ingested::Duplicate => {
            metrics::counter!("leadstream_aggregator_events_total", "outcome" => "duplicate")
                .increment(1);
        }
        Ingested::Parked => {}
        Ingested::Applied {
            correction,
            late,
            too_late: is_too_late,
        } => {
            metrics::counter!("leadstream_aggregator_events_total", "outcome" => "applied")
                .increment(1);
            if late {
                metrics::counter!("leadstream_aggregator_late_events_total").increment(1);
            }
            if is_too_late {
                too_late(event_id);
                metrics::counter!("leadstream_aggregator_too_late_events_total").increment(1);
            }
            if correction {
                metrics::counter!("leadstream_aggregator_corrections_total").increment(1);
            }
        }
    }
}

/// An event arrived later than the allowed lateness.
pub fn too_late(event_id: &str) {
    static LOG: leadstream_runtime::throttle::Throttle =
        leadstream_runtime::throttle::Throttle::per(1000);
    if let Some(skipped) = LOG.allow() {
        tracing::info!(
            event_id,
            skipped,
            "event later than the allowed lateness; applied and recorded in late_events"
        );
    }
}

/// A normalized event sat on another partition than its key maps to: the producer does not use
/// the murmur2 partitioner, so members cannot tell which leads they own.
pub fn misrouted(lead_key: &str, partition: i32) {
    static LOG: leadstream_runtime::throttle::Throttle =
        leadstream_runtime::throttle::Throttle::per(1000);
    if let Some(skipped) = LOG.allow() {
        tracing::error!(
            lead_key,
            partition,
            skipped,
            "event on the wrong partition for its key; is the producer's partitioner murmur2_random?"
        );
    }
    metrics::counter!("leadstream_aggregator_misrouted_events_total").increment(1);
}

/// Devices whose claims and touches were read from ClickHouse for stitching across members.
pub fn looked_up(devices: usize) {
    metrics::counter!("leadstream_aggregator_device_lookups_total").increment(devices as u64);
}

/// Event ids seen under a second lead key (or with an equal time but other content) were
/// settled against the copies ClickHouse stored.
pub fn copies_checked(ids: usize) {
    metrics::counter!("leadstream_aggregator_copy_checks_total").increment(ids as u64);
}

/// Recheck messages sent to the members owning the leads a flush may have changed.
pub fn rechecks_sent(n: usize) {
    tracing::debug!(n, "rechecks sent");
    metrics::counter!("leadstream_aggregator_rechecks_sent_total").increment(n as u64);
}

/// A recheck message from another member arrived.
pub fn recheck_received() {
    metrics::counter!("leadstream_aggregator_rechecks_received_total").increment(1);
}

/// A flush wrote its rows.
pub fn flushed(by_kind: &[u64; 6], rows: usize, replayed: u64, elapsed: Duration) {
    tracing::debug!(
        rows,
        replayed,
        elapsed_ms = elapsed.as_millis() as u64,
        "flushed"
    );
    for (k, n) in Kind::ALL.iter().zip(by_kind) {
        if *n > 0 {
            metrics::counter!("leadstream_aggregator_transition_rows_total", "kind" => k.as_str())
                .increment(*n);
        }
    }
    metrics::counter!("leadstream_aggregator_leads_replayed_total").increment(replayed);
    metrics::histogram!("leadstream_aggregator_flush_seconds").record(elapsed.as_secs_f64());
    metrics::gauge!("leadstream_aggregator_last_flush_timestamp_seconds")
        .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
}

/// State size after a flush or an eviction.
pub fn state_size(leads: usize, devices: usize, rollup_buckets: usize, newest_event_ms: i64) {
    metrics::gauge!("leadstream_aggregator_leads_held").set(leads as f64);
    metrics::gauge!("leadstream_aggregator_devices_held").set(devices as f64);
    metrics::gauge!("leadstream_aggregator_rollup_buckets_held").set(rollup_buckets as f64);
    if newest_event_ms > 0 {
        metrics::gauge!("leadstream_aggregator_newest_event_timestamp_seconds")
            .set(newest_event_ms as f64 / 1000.0);
    }
}

/// A ClickHouse write or read failed and will be retried.
pub fn retry(what: &'static str, attempt: u32, backoff: Duration, error: &dyn std::fmt::Display) {
    tracing::warn!(what, attempt, backoff_ms = backoff.as_millis() as u64, %error, "clickhouse call failed; retrying");
    metrics::counter!("leadstream_aggregator_retries_total", "what" => what).increment(1);
}

/// The group coordinator revoked or assigned partitions (topic-partitions of both topics).
pub fn partitions_changed(what: &'static str, count: usize) {
    tracing::info!(what, count, "group rebalance");
    metrics::counter!("leadstream_aggregator_rebalances_total", "what" => what).increment(1);
}

/// Consumer lag per partition, from librdkafka statistics.
pub fn consumer_lag(topic: &str, partition: i32, lag: i64) {
    metrics::gauge!("leadstream_aggregator_consumer_lag", "topic" => topic.to_string(), "partition" => partition.to_string())
        .set(lag as f64);
}

/// An API query failed in ClickHouse; the client gets a plain 503, the details go here.
pub fn api_query_failed(error: &dyn std::fmt::Display) {
    tracing::warn!(%error, "api query failed");
    metrics::counter!("leadstream_aggregator_api_errors_total", "why" => "clickhouse").increment(1);
}

/// An API request was turned away because `api.max_concurrent_requests` were being served.
pub fn api_busy() {
    metrics::counter!("leadstream_aggregator_api_errors_total", "why" => "busy").increment(1);
}

/// A device reached `state.max_touches_per_device`: its further touches are dropped (logged at
/// most every 10 s; a hot key sends many).
pub fn touch_capped(device: &str, cap: usize) {
    static LOG: leadstream_runtime::throttle::Throttle =
        leadstream_runtime::throttle::Throttle::per(10_000);
    if let Some(skipped) = LOG.allow() {
        tracing::warn!(
            device,
            cap,
            skipped,
            "a device has more touches than state.max_touches_per_device; dropping the rest (a placeholder id or a bot?)"
        );
    }
    metrics::counter!("leadstream_aggregator_touches_capped_total").increment(1);
}
