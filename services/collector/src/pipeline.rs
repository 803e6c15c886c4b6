//! The collector loop: consume → normalize → batch → insert → publish → store offsets.
//!
//! One task owns the consumer, so while a flush is retrying nothing new is read: memory stays
//! bounded by one batch plus librdkafka's prefetch queue, and offsets only move past messages whose
//! rows ClickHouse acknowledged and whose normalized/dead-letter records Kafka acknowledged.

use crate::config::CollectorConfig;
use crate::internal_events as events;
use crate::kafka::SourceConsumer;
use crate::sink::{IngestErrorRow, LeadEventRow, Sink, SinkError};
use chrono::Utc;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use leadstream_runtime::dead_letter::Payload;
use leadstream_runtime::group::Membership;
use leadstream_runtime::health::Readiness;
use leadstream_runtime::retry::{GaveUp, Retry};
use leadstream_schemas::{
    ErrorCategory, NormalizeError, NormalizedEvent, Normalizer, SourceKind, SourceMeta,
};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A rejected message on its way to the dead-letter topic and `ingest_errors`.
#[derive(Debug)]
pub(crate) struct DeadLetter {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) key: Option<Vec<u8>>,
    /// Bounded at once: an oversized message costs a batch no more than a normal one.
    pub(crate) payload: Payload,
    pub(crate) error: NormalizeError,
    pub(crate) received_at_ms: i64,
}

/// Messages read since the last flush.
#[derive(Default)]
struct Batch {
    events: Vec<NormalizedEvent>,
    /// The copy rank of each of `events` (computed once: the insert needs it too).
    ranks: Vec<u128>,
    /// The ranks of the copies of each event id in the batch.
    seen: HashMap<String, Vec<u128>>,
    dead: Vec<DeadLetter>,
    /// Highest offset read per topic and partition; keyed by topic first so a message of a topic
    /// already in the batch is recorded without allocating.
    offsets: BTreeMap<String, BTreeMap<i32, i64>>,
    messages: usize,
    /// Bytes the batch holds (payloads as read, dead letters as kept).
    bytes: usize,
    deadline: Option<Instant>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.messages == 0
    }
}

/// Runs a ClickHouse operation until it succeeds, the server rejects the data (`Ok(Err)`) or
/// the give-up token fires; readiness follows the outcome.
pub(crate) async fn retry_sink<T, F, Fut>(
    retry: &Retry,
    readiness: &Readiness,
    op: F,
) -> Result<Result<T, String>, GaveUp>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, SinkError>>,
{
    let outcome = retry
        .run(op, |attempt, wait, e| {
            readiness.block("clickhouse", format!("writes failing: {e}"));
            events::write_retry("clickhouse", attempt, wait, e);
        })
        .await?;
    Ok(match outcome {
        Ok(v) => {
            readiness.clear("clickhouse");
            Ok(v)
        }
        Err(e) => Err(e.to_string()),
    })
}

/// The running collector loop's state.
pub(crate) struct Pipeline {
    pub(crate) cfg: CollectorConfig,
    pub(crate) normalizer: Normalizer,
    pub(crate) consumer: Arc<SourceConsumer>,
    pub(crate) producer: FutureProducer,
    pub(crate) sink: Sink,
    pub(crate) retry: Retry,
    pub(crate) readiness: Arc<Readiness>,
    pub(crate) membership: Arc<Membership>,
    pub(crate) limiters: HashMap<String, DefaultDirectRateLimiter>,
    pub(crate) kinds: HashMap<String, SourceKind>,
}

/// Builds one rate limiter per configured topic with a limit.
pub(crate) fn limiters(cfg: &CollectorConfig) -> HashMap<String, DefaultDirectRateLimiter> {
    cfg.rate_limits
        .iter()
        .filter_map(|(t, r)| {
            NonZeroU32::new(*r).map(|r| (t.clone(), RateLimiter::direct(Quota::per_second(r))))
        })
        .collect()
}

impl Pipeline {
    /// Consumes until `shutdown`, then flushes what was read and commits; gives the consumer
    /// back for closing.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) -> Arc<SourceConsumer> {
        let mut batch = Batch::default();
        loop {
            let deadline = batch
                .deadline
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(deadline), if !batch.is_empty() => {
                    if self.flush(std::mem::take(&mut batch)).await.is_err() { break; }
                }
                msg = self.consumer.recv() => match msg {
                    Err(e) => {
                        tracing::warn!(error = %e, "kafka consumer error");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Ok(m) => {
                        self.membership.consumed();
                        let kind = self.kinds.get(m.topic()).copied();
                        if let (Some(k), Some(l)) = (kind, self.limiters.get(m.topic())) {
                            if l.check().is_err() {
                                events::rate_limited(k);
                                tokio::select! {
                                    _ = shutdown.cancelled() => break,
                                    _ = l.until_ready() => {}
                                }
                            }
                        }
                        self.accept(&mut batch, kind, &m);
                        let full = batch.messages >= self.cfg.batch.max_rows
                            || batch.bytes >= self.cfg.batch.max_bytes;
                        if full && self.flush(std::mem::take(&mut batch)).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
        // Shutdown: flush what was read (bounded by the give-up grace), then commit synchronously.
        if !batch.is_empty() && self.flush(batch).await.is_err() {
            tracing::warn!(
                "shutdown before the last batch could be written; it will be re-read on restart"
            );
        }
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => tracing::info!("offsets committed"),
            Err(e) => tracing::info!(error = %e, "final commit had nothing to do or failed"),
        }
        self.consumer
    }

    fn accept(
        &self,
        batch: &mut Batch,
        kind: Option<SourceKind>,
        m: &rdkafka::message::BorrowedMessage<'_>,
    ) {
        let (topic, partition, offset) = (m.topic(), m.partition(), m.offset());
        let payload = m.payload().unwrap_or_default();
        let received_at = Utc::now();
        let result = match kind {
            None => {
                events::unknown_topic(topic);
                Err(NormalizeError::whole(
                    ErrorCategory::UnknownTopic,
                    format!("no contract is configured for topic {topic}"),
                ))
            }
            Some(kind) => {
                events::message_received(kind, payload.len());
                let meta = SourceMeta {
                    kind,
                    partition,
                    offset,
                    received_at,
                };
                let r = self.normalizer.normalize(&meta, payload);
                match &r {
                    Ok(_) => events::message_normalized(kind),
                    Err(e) => events::message_rejected(kind, partition, offset, e),
                }
                r
            }
        };
        match result {
            Ok(ev) => {
                batch.bytes += payload.len();
                let rank = ev.copy_rank();
                let ranks = batch.seen.entry(ev.event_id.clone()).or_default();
                if ranks.contains(&rank) {
                    // The same copy again: dropped before insert.
                    events::duplicate_in_batch(kind.map_or("unknown", SourceKind::as_str));
                } else {
                    // A first copy, or one that says something else: both go on, ClickHouse
                    // keeps the winner and the aggregator, seeing each, hides the loser's minute.
                    ranks.push(rank);
                    batch.events.push(ev);
                    batch.ranks.push(rank);
                }
            }
            Err(error) => {
                let payload = Payload::of(payload);
                batch.bytes += payload.kept.len();
                batch.dead.push(DeadLetter {
                    topic: topic.to_string(),
                    partition,
                    offset,
                    key: m.key().map(<[u8]>::to_vec),
                    payload,
                    error,
                    received_at_ms: received_at.timestamp_millis(),
                })
            }
        }
        let partitions = match batch.offsets.get_mut(topic) {
            Some(p) => p,
            None => batch.offsets.entry(topic.to_string()).or_default(),
        };
        let slot = partitions.entry(partition).or_insert(offset);
        *slot = (*slot).max(offset);
        batch.messages += 1;
        batch
            .deadline
            .get_or_insert_with(|| Instant::now() + self.cfg.flush_interval());
    }

    /// Writes a batch everywhere it goes, then stores its offsets. `Err` only when giving up at shutdown.
    async fn flush(&mut self, mut batch: Batch) -> Result<(), GaveUp> {
        let rows: Vec<LeadEventRow> = batch
            .events
            .iter()
            .zip(&batch.ranks)
            .map(|(e, rank)| LeadEventRow::ranked(e, *rank))
            .collect();
        let sink = self.sink.clone();
        let outcome = retry_sink(&self.retry, &self.readiness, || {
            sink.insert::<LeadEventRow>("lead_events", &rows)
        })
        .await?;
        if let Err(why) = outcome {
            tracing::warn!(reason = %why, rows = rows.len(), "clickhouse rejected a batch; inserting row by row to isolate the bad rows");
            self.isolate_rejected_rows(&mut batch, &rows).await?;
        }
        let error_rows: Vec<IngestErrorRow> = batch
            .dead
            .iter()
            .map(|d| {
                IngestErrorRow::new(
                    &d.topic,
                    d.partition,
                    d.offset,
                    &d.payload,
                    &d.error,
                    d.received_at_ms,
                )
            })
            .collect();
        if let Err(why) = retry_sink(&self.retry, &self.readiness, || {
            sink.insert::<IngestErrorRow>("ingest_errors", &error_rows)
        })
        .await?
        {
            // Our own error rows are well-formed; if the server still refuses them, the dead-letter
            // topic keeps the record and the partition must not stall on bookkeeping.
            tracing::error!(reason = %why, rows = error_rows.len(), "clickhouse rejected ingest_errors rows; they remain in the dead-letter topic");
        }
        crate::publish::Publisher {
            producer: &self.producer,
            retry: &self.retry,
            readiness: &self.readiness,
            kafka: &self.cfg.kafka,
        }
        .publish(&batch.events, &batch.dead)
        .await?;
        let mut stored = 0;
        for (topic, partitions) in &batch.offsets {
            for (partition, offset) in partitions {
                match self.consumer.store_offset(topic, *partition, *offset) {
                    Ok(()) => stored += 1,
                    Err(e) => events::offset_store_failed(topic, *partition, &e),
                }
            }
        }
        events::offsets_stored(stored, batch.messages);
        if let Some(newest) = batch
            .events
            .iter()
            .map(|e| e.event_time.timestamp_millis())
            .max()
        {
            events::newest_event(newest);
        }
        Ok(())
    }

    /// After ClickHouse rejected a batch: inserts row by row; rows it rejects become dead letters.
    async fn isolate_rejected_rows(
        &mut self,
        batch: &mut Batch,
        rows: &[LeadEventRow],
    ) -> Result<(), GaveUp> {
        let sink = self.sink.clone();
        let mut kept = Vec::with_capacity(batch.events.len());
        let mut kept_ranks = Vec::with_capacity(batch.events.len());
        let ranks = std::mem::take(&mut batch.ranks);
        for ((ev, row), rank) in std::mem::take(&mut batch.events)
            .into_iter()
            .zip(rows)
            .zip(ranks)
        {
            let one = std::slice::from_ref(row);
            match retry_sink(&self.retry, &self.readiness, || {
                sink.insert::<LeadEventRow>("lead_events", one)
            })
            .await?
            {
                Ok(()) => {
                    kept.push(ev);
                    kept_ranks.push(rank);
                }
                Err(why) => {
                    events::row_rejected_by_sink(&ev.event_id, &why);
                    batch.dead.push(DeadLetter {
                        topic: ev.source_topic.clone(),
                        partition: ev.source_partition,
                        offset: ev.source_offset,
                        key: Some(ev.lead_key().into_bytes()),
                        // The original bytes were not kept for valid messages; the normalized
                        // event (hashes, no personal data) stands in for them.
                        payload: Payload::of(&serde_json::to_vec(&ev).unwrap_or_default()),
                        error: NormalizeError::whole(
                            ErrorCategory::SinkRejected,
                            format!("clickhouse rejected the row: {why}"),
                        ),
                        received_at_ms: ev.received_at.timestamp_millis(),
                    });
                }
            }
        }
        batch.events = kept;
        batch.ranks = kept_ranks;
        Ok(())
    }
}
