//! What happens to the engine's state: restores (from checkpoints or history), checkpoints,
//! idle eviction, folding of settled events and reading either back.

use std::time::Duration;

/// The state of the owned partitions was rebuilt from ClickHouse (at start, after a rebalance).
pub struct Rebuilt {
    /// Events read from history.
    pub events: u64,
    /// Leads that had rows in ClickHouse.
    pub published: u64,
    /// Leads held afterwards.
    pub leads: usize,
    /// The partitions owned now.
    pub partitions: Vec<u32>,
    /// The version epoch the rebuild writes with.
    pub epoch: u64,
    /// Wall time it took.
    pub elapsed: Duration,
}

impl Rebuilt {
    /// Logs the line and records the metrics.
    pub fn emit(self) {
        let Self {
            events,
            published,
            leads,
            partitions,
            epoch,
            elapsed,
        } = self;
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
}

/// The state of the owned partitions was loaded from their checkpoints (no history read).
pub struct RestoredFromCheckpoints {
    /// Checkpoint bytes read.
    pub bytes: u64,
    /// Leads held afterwards.
    pub leads: usize,
    /// Leads whose rows a flush after the checkpoint wrote (rewritten from the restored state).
    pub stale_leads: usize,
    /// The partitions owned now.
    pub partitions: Vec<u32>,
    /// The version epoch the restored engine writes with.
    pub epoch: u64,
    /// Wall time it took.
    pub elapsed: Duration,
}

impl RestoredFromCheckpoints {
    /// Logs the line and records the metrics.
    pub fn emit(self) {
        let Self {
            bytes,
            leads,
            stale_leads,
            partitions,
            epoch,
            elapsed,
        } = self;
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
pub struct Checkpointed {
    /// Partitions checkpointed.
    pub partitions: usize,
    /// Bytes written.
    pub bytes: usize,
    /// Time spent encoding the state.
    pub encoded: Duration,
    /// Time from the start to the acknowledged write.
    /// Wall time it took.
    pub elapsed: Duration,
}

impl Checkpointed {
    /// Logs the line and records the metrics.
    pub fn emit(self) {
        let Self {
            partitions,
            bytes,
            encoded,
            elapsed,
        } = self;
        tracing::debug!(
            partitions,
            bytes,
            encode_ms = encoded.as_millis() as u64,
            elapsed_ms = elapsed.as_millis() as u64,
            "checkpoint written"
        );
        metrics::counter!("leadstream_aggregator_checkpoints_total").increment(1);
        metrics::gauge!("leadstream_aggregator_checkpoint_bytes").set(bytes as f64);
        metrics::histogram!("leadstream_aggregator_checkpoint_seconds")
            .record(elapsed.as_secs_f64());
    }
}

/// The partitions moved while a rebuild ran: it is dropped and the loop starts over.
pub fn restore_superseded() {
    tracing::info!("partitions changed hands during the rebuild; starting over for the new set");
    metrics::counter!("leadstream_aggregator_restores_superseded_total").increment(1);
}

/// Idle groups (a lead with the devices it holds) were stored and left memory.
pub struct Evicted {
    /// Groups (a lead with the devices it holds) that left memory.
    pub groups: usize,
    /// Rows stored: one per lead or device key of a group.
    pub keys: usize,
    /// Bytes stored (each key's row holds its whole group).
    pub bytes: usize,
    /// Wall time it took.
    pub elapsed: Duration,
}

impl Evicted {
    /// Logs the line and records the metrics.
    pub fn emit(self) {
        let Self {
            groups,
            keys,
            bytes,
            elapsed,
        } = self;
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
}

/// Settled events were stored and left memory.
pub struct Folded {
    /// Rows stored: one per lead or device folded.
    pub rows: usize,
    /// Events that left memory.
    pub events: usize,
    /// Bytes stored.
    pub bytes: usize,
    /// Events still held afterwards.
    pub held: usize,
    /// Wall time it took.
    pub elapsed: Duration,
}

impl Folded {
    /// Logs the line and records the metrics.
    pub fn emit(self) {
        let Self {
            rows,
            events,
            bytes,
            held,
            elapsed,
        } = self;
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
}

/// A fold's row asked for was not there (it always is: rows are written before the checkpoint
/// that relies on them); the lead's stored events are lost to it.
pub fn fold_row_missing(key: &str) {
    tracing::error!(key, "a lead's stored settled events were not found");
    metrics::counter!("leadstream_aggregator_fold_rows_missing_total").increment(1);
}

/// Keys that may have been evicted, or whose settled events were stored, were read back.
pub struct Reloaded {
    /// Keys asked for.
    pub asked: usize,
    /// Evicted groups that came back.
    pub groups: usize,
    /// Rows of settled events that came back.
    pub unfolded: usize,
    /// Keys with nothing stored (the filter flagged them by mistake).
    pub misses: usize,
    /// Parked events applied once their groups were back.
    pub parked: usize,
}

impl Reloaded {
    /// Logs the line and records the metrics.
    pub fn emit(self) {
        let Self {
            asked,
            groups,
            unfolded,
            misses,
            parked,
        } = self;
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
