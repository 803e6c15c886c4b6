//! Every observable happening in the aggregator, as a named event that emits its log line and
//! its metric together. Label values come from small fixed sets (transition kinds, tables).

use crate::machine::Kind;
use std::time::Duration;

/// The state of the owned partitions was rebuilt from ClickHouse (at start, after a rebalance).
pub fn rebuilt(
    events: u64,
    published: u64,
    leads: usize,
    partitions: Vec<u32>,
    epoch: u64,
    elapsed: Duration,
) {
    tracing::info!(
        events,
        published_leads = published,
        leads_held = leads,
        ?partitions,
        epoch,
        elapsed_ms = elapsed.as_millis() as u64,
        "state rebuilt from clickhouse"
    );
    metrics::counter!("leadstream_aggregator_rebuilt_events_total").increment(events);
    metrics::counter!("leadstream_aggregator_rebuilds_total").increment(1);
    metrics::gauge!("leadstream_aggregator_partitions_owned").set(partitions.len() as f64);
}

/// The state of the owned partitions was loaded from their checkpoints (no history read).
pub fn restored_from_checkpoints(
    bytes: u64,
    leads: usize,
    stale_leads: usize,
    partitions: Vec<u32>,
    epoch: u64,
    elapsed: Duration,
) {
    tracing::info!(
        bytes,
        leads_held = leads,
        stale_leads,
        ?partitions,
        epoch,
        elapsed_ms = elapsed.as_millis() as u64,
        "state restored from checkpoints"
    );
    metrics::counter!("leadstream_aggregator_checkpoint_restores_total").increment(1);
    metrics::counter!("leadstream_aggregator_checkpoint_restored_bytes_total").increment(bytes);
    metrics::gauge!("leadstream_aggregator_partitions_owned").set(partitions.len() as f64);
}

/// A restore finished (its rows written): from checkpoints or from history, and how long it
/// took from the assignment on (what a restart or rebalance costs beyond the group's own wait).
pub fn restore_finished(from_checkpoints: bool, elapsed: Duration) {
    let from = if from_checkpoints {
        "checkpoint"
    } else {
        "history"
    };
    tracing::info!(
        from,
        elapsed_ms = elapsed.as_millis() as u64,
        "restore finished"
    );
    metrics::gauge!("leadstream_aggregator_restore_seconds", "from" => from)
        .set(elapsed.as_secs_f64());
}

/// The checkpoints could not be used; the state is rebuilt from history instead.
pub fn checkpoints_unusable(why: &str) {
    tracing::info!(
        why,
        "no usable checkpoint for the owned partitions; rebuilding from clickhouse"
    );
}

/// The checkpoints hold evicted state that only a member owning every partition loads, and
/// this one owns some: it waits for the group to hand it the rest before reading history.
pub fn history_read_deferred(partitions: Vec<u32>, wait: Duration) {
    tracing::info!(
        ?partitions,
        wait_ms = wait.as_millis() as u64,
        "owning only some partitions, whose checkpoints hold evicted state; waiting for the rest of the assignment before rebuilding from history"
    );
    metrics::counter!("leadstream_aggregator_history_reads_deferred_total").increment(1);
}

/// A rebuild from the history in ClickHouse starts (counted even when it is superseded or
/// stopped before it finishes, unlike `leadstream_aggregator_rebuilds_total`).
pub fn history_read_started(partitions: Vec<u32>) {
    tracing::info!(
        ?partitions,
        "reading the owned partitions' history from clickhouse"
    );
    metrics::counter!("leadstream_aggregator_history_reads_total").increment(1);
}

/// The owned partitions' state was checkpointed.
pub fn checkpointed(partitions: usize, bytes: usize, encoded: Duration, elapsed: Duration) {
    tracing::debug!(
        partitions,
        bytes,
        encode_ms = encoded.as_millis() as u64,
        elapsed_ms = elapsed.as_millis() as u64,
        "checkpoint written"
    );
    metrics::counter!("leadstream_aggregator_checkpoints_total").increment(1);
    metrics::gauge!("leadstream_aggregator_checkpoint_bytes").set(bytes as f64);
    metrics::histogram!("leadstream_aggregator_checkpoint_seconds").record(elapsed.as_secs_f64());
}

/// A message of the normalized topic was read and applied (or recognised as a duplicate).
pub fn event_processed(duplicate: bool, late: bool, too_late: bool, correction: bool) {
    metrics::counter!("leadstream_aggregator_events_total", "outcome" => if duplicate { "duplicate" } else { "applied" }).increment(1);
    if late {
        metrics::counter!("leadstream_aggregator_late_events_total").increment(1);
    }
    if too_late {
        metrics::counter!("leadstream_aggregator_too_late_events_total").increment(1);
    }
    if correction {
        metrics::counter!("leadstream_aggregator_corrections_total").increment(1);
    }
}

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
        Ingested::Duplicate => event_processed(true, false, false, false),
        Ingested::Parked => {}
        Ingested::Applied {
            correction,
            late,
            too_late: is_too_late,
        } => {
            if is_too_late {
                too_late(event_id);
            }
            event_processed(false, late, is_too_late, correction)
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

/// The partitions moved while a rebuild ran: it is dropped and the loop starts over.
pub fn restore_superseded() {
    tracing::info!("partitions changed hands during the rebuild; starting over for the new set");
    metrics::counter!("leadstream_aggregator_restores_superseded_total").increment(1);
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

/// Idle groups (a lead with the devices it holds) were stored and left memory.
pub fn evicted(groups: usize, keys: usize, bytes: usize, elapsed: Duration) {
    tracing::debug!(
        groups,
        keys,
        bytes,
        seconds = elapsed.as_secs_f64(),
        "idle leads evicted"
    );
    metrics::counter!("leadstream_aggregator_evicted_groups_total").increment(groups as u64);
    metrics::counter!("leadstream_aggregator_evicted_bytes_total").increment(bytes as u64);
}

/// Settled events were stored and left memory (`rows`: one per lead or device folded).
pub fn folded(rows: usize, events: usize, bytes: usize, held: usize, elapsed: Duration) {
    tracing::debug!(
        rows,
        events,
        bytes,
        held,
        seconds = elapsed.as_secs_f64(),
        "settled events folded"
    );
    metrics::gauge!("leadstream_aggregator_events_held").set(held as f64);
    metrics::counter!("leadstream_aggregator_folded_events_total").increment(events as u64);
    metrics::counter!("leadstream_aggregator_folded_bytes_total").increment(bytes as u64);
}

/// A fold's row asked for was not there (it always is: rows are written before the checkpoint
/// that relies on them); the lead's stored events are lost to it.
pub fn fold_row_missing(key: &str) {
    tracing::error!(key, "a lead's stored settled events were not found");
    metrics::counter!("leadstream_aggregator_fold_rows_missing_total").increment(1);
}

/// Keys that may have been evicted were read back: `groups` groups came back, `misses` keys had
/// none stored (the filter flagged them by mistake), `parked` events waiting for them applied.
pub fn reloaded(asked: usize, groups: usize, unfolded: usize, misses: usize, parked: usize) {
    tracing::debug!(
        asked,
        groups,
        unfolded,
        misses,
        parked,
        "evicted leads read back"
    );
    metrics::counter!("leadstream_aggregator_unfolded_rows_total").increment(unfolded as u64);
    metrics::counter!("leadstream_aggregator_reloaded_groups_total").increment(groups as u64);
    metrics::counter!("leadstream_aggregator_reload_misses_total").increment(misses as u64);
}

/// A stored group did not decode (written by another build): its keys start empty.
pub fn evicted_unreadable(error: &str) {
    static LOG: leadstream_runtime::throttle::Throttle =
        leadstream_runtime::throttle::Throttle::per(1000);
    if let Some(skipped) = LOG.allow() {
        tracing::error!(
            error,
            skipped,
            "an evicted lead does not decode; it starts again empty"
        );
    }
    metrics::counter!("leadstream_aggregator_evicted_unreadable_total").increment(1);
}

/// Rollup buckets idle long enough left memory, their counts stored.
pub fn buckets_evicted(buckets: usize) {
    tracing::debug!(buckets, "idle rollup buckets evicted");
    metrics::counter!("leadstream_aggregator_evicted_buckets_total").increment(buckets as u64);
}

/// Changed rollup buckets that may have been evicted were read back: `found` had a stored count.
pub fn buckets_resolved(asked: usize, found: usize) {
    tracing::debug!(asked, found, "evicted rollup buckets read back");
    metrics::counter!("leadstream_aggregator_resolved_buckets_total").increment(asked as u64);
}

/// A stored bucket count did not decode (written by another build): it counts as empty.
pub fn bucket_unreadable(key: &str, bytes: usize) {
    static LOG: leadstream_runtime::throttle::Throttle =
        leadstream_runtime::throttle::Throttle::per(1000);
    if let Some(skipped) = LOG.allow() {
        tracing::error!(
            key,
            bytes,
            skipped,
            "a stored rollup bucket count does not decode; it counts as empty"
        );
    }
    metrics::counter!("leadstream_aggregator_evicted_unreadable_total").increment(1);
}
