//! The service loop: on every partition assignment restore the state of the owned leads (from
//! their checkpoints, else from history in ClickHouse), then consume `leads.normalized` and the
//! stitching topic, flush changed rows to ClickHouse, send rechecks to the other members,
//! checkpoint, and only then store the offsets (at-least-once; rows and rechecks are idempotent,
//! so a replay changes nothing).

use crate::api::Health;
use crate::checkpoint::Offsets;
use crate::config::AggregatorConfig;
use crate::context::AggregatorConsumer;
use crate::engine::{Engine, Ownership};
use crate::funnel::Funnels;
use crate::internal_events as events;
use crate::restore::Rebuild;
use crate::versions::Versions;
use crate::writes::{Outbox, Unreadable};
use leadstream_runtime::clickhouse::{Sink, SinkError};
use leadstream_runtime::group::Membership;
use leadstream_runtime::retry::{GaveUp, Retry};
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long a shutdown keeps retrying the last write before giving up (the next start rebuilds).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Backoff bounds of the aggregator's ClickHouse and Kafka retries.
pub const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(10));

/// Retries `f` until it succeeds, the data is refused (`Ok(Err)`), or the give-up token fires
/// (`Err(GaveUp)`), reporting each retry as `what`.
pub async fn with_retry<T, F, Fut>(
    what: &'static str,
    retry: &Retry,
    f: F,
) -> Result<Result<T, SinkError>, GaveUp>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, SinkError>>,
{
    retry
        .run(f, |attempt, wait, e| events::retry(what, attempt, wait, e))
        .await
}

/// Which dependency a retried call is about (the readiness condition it blocks).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Dependency {
    ClickHouse,
    Kafka,
}

impl Dependency {
    fn condition(self) -> &'static str {
        match self {
            Self::ClickHouse => "clickhouse",
            Self::Kafka => "kafka",
        }
    }
}

/// What was consumed since the last flush.
#[derive(Default)]
pub(crate) struct Batch {
    /// Per topic-partition, the newest offset the next flush covers.
    pub(crate) offsets: Offsets,
    /// Unreadable messages, for the dead-letter topic.
    pub(crate) dead: Vec<Unreadable>,
    /// Messages taken in.
    pub(crate) messages: usize,
}

/// Everything the consume loop works with.
pub struct Service<'a> {
    /// Settings.
    pub cfg: &'a AggregatorConfig,
    /// Group member of the normalized and stitching topics.
    pub consumer: &'a AggregatorConsumer,
    /// Producer of recheck messages.
    pub producer: &'a FutureProducer,
    /// ClickHouse.
    pub sink: &'a Sink,
    /// The funnels.
    pub funnels: Arc<Funnels>,
    /// Partitions of the normalized (and stitching) topic.
    pub partitions: u32,
    /// Readiness and freshness facts.
    pub health: Arc<Health>,
    /// This member's place in the consumer group (readiness counts it).
    pub membership: Arc<Membership>,
    /// Retries of ClickHouse and Kafka writes, given up `SHUTDOWN_GRACE` after shutdown.
    pub retry: Retry,
}

/// A flush slower than this pauses the partitions while it goes on (a regular one takes less,
/// and the messages fetched meanwhile are applied right after it).
const FLUSH_PAUSE_AFTER: Duration = Duration::from_secs(1);

/// Checkpoints are spaced at least this many times the last one's duration.
const CHECKPOINT_SPACING: u32 = 10;

impl Service<'_> {
    /// [`with_retry`], with readiness following the dependency: blocked while it fails.
    pub(crate) async fn retried<T, F, Fut>(
        &self,
        what: &'static str,
        dependency: Dependency,
        f: F,
    ) -> Result<Result<T, SinkError>, GaveUp>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, SinkError>>,
    {
        let readiness = &self.health.readiness;
        let r = self
            .retry
            .run(f, |attempt, wait, e| {
                readiness.block(dependency.condition(), format!("{what} failing: {e}"));
                events::retry(what, attempt, wait, e);
            })
            .await;
        if matches!(r, Ok(Ok(_))) {
            readiness.clear(dependency.condition());
        }
        r
    }

    pub(crate) fn outbox(&self) -> Outbox<'_> {
        Outbox {
            producer: self.producer,
            dead_letter_topic: &self.cfg.kafka.dead_letter_topic,
            stitch_topic: &self.cfg.kafka.stitch_topic,
        }
    }

    /// The partitions of the normalized topic assigned to this member.
    fn ownership(&self) -> Option<Ownership> {
        let list = self.consumer.assignment().ok()?;
        let owned: Vec<u32> = list
            .elements_for_topic(&self.cfg.kafka.topic)
            .iter()
            .map(|e| e.partition() as u32)
            .collect();
        let stitch: Vec<u32> = list
            .elements_for_topic(&self.cfg.kafka.stitch_topic)
            .iter()
            .map(|e| e.partition() as u32)
            .collect();
        if owned != stitch {
            tracing::error!(?owned, ?stitch, "normalized and stitching partitions are not assigned together; check partition.assignment.strategy");
        }
        (!owned.is_empty()).then(|| Ownership::new(self.partitions, owned))
    }

    /// Consumes until `shutdown`; flushes and stores offsets before returning.
    pub async fn consume(&self, shutdown: CancellationToken) -> Result<(), SinkError> {
        let context = self.consumer.context();
        let mut versions = Versions::of_epoch(0);
        let mut generation = u64::MAX;
        let mut engine: Option<Box<Engine>> = None;
        let mut batch = Batch::default();
        let mut deadline = Instant::now() + self.cfg.batch.flush_interval;
        let mut held: Option<rdkafka::message::OwnedMessage> = None;
        // Flushed but not checkpointed: offsets are committed only with a checkpoint, so a
        // restore (from the checkpoint) replays exactly what it does not hold.
        let mut uncommitted = Offsets::new();
        let mut unsaved = false;
        // `None`: a checkpoint is due (right after a restore).
        let mut checkpointed: Option<Instant> = None;
        // At least ten times what the last checkpoint took: a large state written every
        // interval would otherwise leave little time for anything else.
        let mut interval = self.cfg.state.checkpoint_interval;
        loop {
            let now_gen = context.generation.load(Ordering::SeqCst);
            if now_gen != generation {
                // The partitions changed hands: drop what was consumed but not flushed (it is
                // delivered again from the committed offsets) and rebuild for the new set.
                generation = now_gen;
                engine = None;
                batch = Batch::default();
                uncommitted.clear();
                self.health
                    .readiness
                    .block("rebuild", "rebuilding the owned partitions' state");
                self.health.set_partitions(Vec::new());
                if let Some(own) = self.ownership() {
                    let (rebuilt, early) = self.restore(own, generation).await;
                    match rebuilt? {
                        Rebuild::Stopped => return Ok(()),
                        // Reassigned meanwhile: the loop starts over for the new set.
                        Rebuild::Superseded => continue,
                        Rebuild::Done(mut e, v) => {
                            versions = v;
                            (unsaved, checkpointed) = (true, None);
                            // What the consumer delivered while the rebuild ran, before the
                            // pause took hold: it comes after the state just read, in order.
                            for m in &early {
                                if e.ownership().owned().any(|p| p as i32 == m.partition()) {
                                    self.take_in(&mut e, m, &mut batch);
                                }
                            }
                            self.publish_health(&e);
                            self.health.set_partitions(e.ownership().owned().collect());
                            engine = Some(e);
                            self.health.readiness.clear("rebuild");
                        }
                    }
                }
                continue;
            }
            if let Some(m) = held.take() {
                // A message that arrived with a rebalance, applied under the new ownership.
                let Some(e) = engine.as_deref_mut() else {
                    // The assignment could not be read yet: keep the message and ask again.
                    held = Some(m);
                    generation = u64::MAX;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                if e.ownership().owned().any(|p| p as i32 == m.partition()) {
                    self.take_in(e, &m, &mut batch);
                }
            }
            let stop = shutdown.is_cancelled();
            let due = batch.messages >= self.cfg.batch.max_events
                || (batch.messages > 0 && Instant::now() >= deadline);
            let checkpoint_due =
                unsaved && (stop || checkpointed.is_none_or(|t| t.elapsed() >= interval));
            if let Some(e) = engine.as_deref_mut() {
                if (due || stop || checkpoint_due)
                    && (batch.messages > 0 || e.pending() > 0 || checkpoint_due)
                {
                    let checkpointing = checkpoint_due || stop;
                    // What the checkpoint covers, for its record (only built for one).
                    let covered: Offsets = match checkpointing {
                        true => (uncommitted.iter().chain(&batch.offsets))
                            .map(|(k, v)| (k.clone(), *v))
                            .collect(),
                        false => Offsets::new(),
                    };
                    let dead = std::mem::take(&mut batch.dead);
                    // Milliseconds the checkpoint took (the future must stay `Send`).
                    let cost = std::sync::atomic::AtomicU64::new(0);
                    let versions = &mut versions;
                    let flush = async {
                        if !self.flush(e, versions, dead).await? {
                            return Ok(false);
                        }
                        // Right after the flush, before anything else is applied.
                        match checkpointing {
                            true => {
                                let started = Instant::now();
                                let r = self.checkpoint(e, versions.last(), &covered).await;
                                cost.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                                r
                            }
                            false => Ok(true),
                        }
                    };
                    let (flushed, early) = self
                        .polling(
                            flush,
                            generation,
                            FLUSH_PAUSE_AFTER,
                            self.cfg.batch.max_events,
                        )
                        .await;
                    match flushed {
                        // Shutdown while ClickHouse or the broker is down: offsets stay where
                        // they were; the next start rebuilds and re-reads the rest.
                        Some(Ok(false)) => return Ok(()),
                        Some(Err(e)) => return Err(e),
                        Some(Ok(true)) => {}
                        // Revoked meanwhile: another member may own these partitions now.
                        None => continue,
                    }
                    if context.generation.load(Ordering::SeqCst) != generation {
                        continue;
                    }
                    uncommitted.extend(std::mem::take(&mut batch).offsets);
                    unsaved = true;
                    if checkpointing {
                        for ((topic, partition), offset) in std::mem::take(&mut uncommitted) {
                            if let Err(e) = self.consumer.store_offset(&topic, partition, offset) {
                                tracing::warn!(topic, partition, offset, error = %e, "storing offset failed");
                            }
                        }
                        (unsaved, checkpointed) = (false, Some(Instant::now()));
                        interval = (self.cfg.state.checkpoint_interval).max(
                            Duration::from_millis(cost.load(Ordering::Relaxed))
                                * CHECKPOINT_SPACING,
                        );
                    }
                    // What came in while the flush ran belongs to the next one.
                    for m in &early {
                        self.take_in(e, m, &mut batch);
                    }
                }
            }
            if due || stop {
                deadline = Instant::now() + self.cfg.batch.flush_interval;
            }
            if stop {
                match self
                    .consumer
                    .commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
                {
                    Ok(()) => {}
                    // Nothing consumed since the last commit.
                    Err(rdkafka::error::KafkaError::ConsumerCommit(
                        rdkafka::types::RDKafkaErrorCode::NoOffset,
                    )) => {}
                    Err(e) => tracing::warn!(error = %e, "final offset commit failed"),
                }
                return Ok(());
            }
            if batch.messages == 0 && engine.as_ref().is_none_or(|e| e.pending() == 0) {
                // Idle: the flush clock starts with the next message.
                deadline = Instant::now() + self.cfg.batch.flush_interval;
            }
            let mut wait = deadline.saturating_duration_since(Instant::now());
            if unsaved {
                let next = checkpointed.map_or(Duration::ZERO, |t| {
                    (t + interval).saturating_duration_since(Instant::now())
                });
                wait = wait.min(next);
            }
            let wait = wait.max(Duration::from_millis(5));
            let msg = tokio::select! {
                m = self.consumer.recv() => m,
                _ = tokio::time::sleep(wait) => continue,
                _ = shutdown.cancelled() => continue,
            };
            let m = match msg {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "kafka consumer error");
                    continue;
                }
            };
            self.membership.consumed();
            if context.generation.load(Ordering::SeqCst) != generation {
                held = Some(m.detach());
                continue;
            }
            let Some(e) = engine.as_deref_mut() else {
                // Not assigned yet as far as the loop knows; delivered again after the rebuild.
                held = Some(m.detach());
                continue;
            };
            self.take_in(e, &m, &mut batch);
        }
    }

    pub(crate) fn publish_health(&self, engine: &Engine) {
        self.health
            .newest_event_ms
            .store(engine.watermark_ms().max(0), Ordering::Relaxed);
        self.health
            .leads_held
            .store(engine.leads_held() as i64, Ordering::Relaxed);
        events::state_size(
            engine.leads_held(),
            engine.devices_held(),
            engine.rollup_buckets(),
            engine.watermark_ms(),
        );
    }
}
