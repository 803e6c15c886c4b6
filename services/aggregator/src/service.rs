//! The service loop: on every partition assignment rebuild the state of the owned leads from
//! ClickHouse, then consume `leads.normalized` and the stitching topic, flush changed rows to
//! ClickHouse, send rechecks to the other members, and only then store the offsets
//! (at-least-once; rows and rechecks are idempotent, so a replay changes nothing).

use crate::api::Health;
use crate::config::AggregatorConfig;
use crate::decode::{self, Recheck};
use crate::engine::{Engine, Ingested, Output, Ownership};
use crate::funnel::Funnels;
use crate::internal_events as events;
use crate::rollup::{CohortRollupRow, ReachRollupRow, TransitionRollupRow};
use crate::rows::{LateEventRow, LeadFunnelRow, TransitionRow};
use crate::store;
use leadstream_runtime::clickhouse::{Sink, SinkError};
use leadstream_runtime::dead_letter::{self, Payload};
use leadstream_runtime::group::Membership;
use leadstream_runtime::lag::LagBoard;
use leadstream_runtime::retry::{GaveUp, Retry};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use smol_str::SmolStr;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long a shutdown keeps retrying the last write before giving up (the next start rebuilds).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(7);

/// Row versions: wall-clock nanoseconds, strictly increasing within the process, so a restart
/// (later clock) always writes newer versions than before.
#[derive(Debug, Default)]
pub struct Versions(u64);

impl Versions {
    /// The next version.
    pub fn issue(&mut self) -> u64 {
        let now = chrono::Utc::now()
            .timestamp_nanos_opt()
            .unwrap_or_default()
            .max(0) as u64;
        self.0 = now.max(self.0 + 1);
        self.0
    }
}

/// Backoff bounds of the aggregator's ClickHouse and Kafka retries.
pub const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(10));

/// Retries `f` until it succeeds, ClickHouse rejects the data (`Ok(Err)`), or the give-up
/// token fires (`Err(GaveUp)`), reporting each retry as `what`.
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

/// Rows per INSERT: big flushes (the first one after a rebuild rewrites every lead) go in pieces
/// so no single request holds the whole state; each piece is idempotent on its own.
const ROWS_PER_INSERT: usize = 5000;

/// Writes one flush's rows. Transitions, late events and rollups first, lead states last: a
/// reader that sees a lead's new state also sees its transitions.
pub async fn write(sink: &Sink, out: &Output) -> Result<(), SinkError> {
    for chunk in out.transitions.chunks(ROWS_PER_INSERT) {
        sink.insert::<TransitionRow>("stage_transitions", chunk)
            .await?;
    }
    sink.insert::<LateEventRow>("late_events", &out.late_events)
        .await?;
    for chunk in out.cohort_rollup.chunks(ROWS_PER_INSERT) {
        sink.insert::<CohortRollupRow>("funnel_cohort_minute", chunk)
            .await?;
    }
    for chunk in out.reach_rollup.chunks(ROWS_PER_INSERT) {
        sink.insert::<ReachRollupRow>("funnel_reach_minute", chunk)
            .await?;
    }
    for chunk in out.transition_rollup.chunks(ROWS_PER_INSERT) {
        sink.insert::<TransitionRollupRow>("funnel_transition_minute", chunk)
            .await?;
    }
    for chunk in out.leads.chunks(ROWS_PER_INSERT) {
        sink.insert::<LeadFunnelRow>("lead_funnels", chunk).await?;
    }
    Ok(())
}

/// Counts the consumer's rebalances so the loop notices that its partitions changed, and keeps
/// the consumer lag librdkafka reports for the dashboards.
pub struct RebalanceContext {
    generation: AtomicU64,
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

/// A consumed message that could not be read, kept for the dead-letter topic.
#[derive(Debug)]
pub struct Unreadable {
    topic: String,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Payload,
    error: String,
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

/// Why the state had to go.
enum Rebuild {
    Done(Box<Engine>),
    /// Shutdown came first.
    Stopped,
}

impl Service<'_> {
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

    /// Rebuilds the state of the owned leads from ClickHouse and writes what changed.
    async fn rebuild(&self, own: Ownership, versions: &mut Versions) -> Result<Rebuild, SinkError> {
        let started = Instant::now();
        let lateness =
            i64::try_from(self.cfg.state.allowed_lateness.as_millis()).unwrap_or(i64::MAX);
        let stale_version = versions.issue();
        // Each attempt builds a fresh engine, so a half-read attempt leaves nothing behind.
        let rebuilt = with_retry("rebuild", &self.retry, || async {
            store::rebuild(
                self.sink.client(),
                self.funnels.clone(),
                lateness,
                own.clone(),
                stale_version,
            )
            .await
            .map_err(|e| SinkError::Transient(e.to_string()))
        })
        .await;
        let Ok(rebuilt) = rebuilt else {
            return Ok(Rebuild::Stopped);
        };
        let (mut engine, rebuilt) = rebuilt?;
        events::rebuilt(
            rebuilt.events,
            rebuilt.published,
            engine.leads_held(),
            own.owned().collect(),
            started.elapsed(),
        );
        let out = engine.flush(versions.issue());
        // The rewritten buckets first, then tombstones for only those that vanished: a reader
        // (the wallboard every 5 s) never sees a bucket gone before its replacement is written.
        let mut stale = rebuilt.stale_rollups;
        store::keep_vanished(&mut stale, &out);
        match with_retry("write", &self.retry, || write(self.sink, &out)).await {
            Err(GaveUp) => return Ok(Rebuild::Stopped),
            Ok(r) => r?,
        }
        match with_retry("write", &self.retry, || write(self.sink, &stale)).await {
            Err(GaveUp) => Ok(Rebuild::Stopped),
            Ok(r) => r.map(|()| Rebuild::Done(Box::new(engine))),
        }
    }

    /// Consumes until `shutdown`; flushes and stores offsets before returning.
    pub async fn consume(&self, shutdown: CancellationToken) -> Result<(), SinkError> {
        let context = self.consumer.context();
        let mut versions = Versions::default();
        let mut generation = u64::MAX;
        let mut engine: Option<Box<Engine>> = None;
        let mut pending: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut since_flush = 0usize;
        let mut deadline = Instant::now() + self.cfg.batch.flush_interval;
        let mut held: Option<rdkafka::message::OwnedMessage> = None;
        let mut dead: Vec<Unreadable> = Vec::new();
        loop {
            let now_gen = context.generation.load(Ordering::SeqCst);
            if now_gen != generation {
                // The partitions changed hands: drop what was consumed but not flushed (it is
                // delivered again from the committed offsets) and rebuild for the new set.
                generation = now_gen;
                engine = None;
                pending.clear();
                dead.clear();
                since_flush = 0;
                self.health
                    .readiness
                    .block("rebuild", "rebuilding the owned partitions' state");
                self.health.set_partitions(Vec::new());
                if let Some(own) = self.ownership() {
                    match self.rebuild(own, &mut versions).await? {
                        Rebuild::Stopped => return Ok(()),
                        Rebuild::Done(e) => {
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
                    dead.extend(self.apply(e, &m));
                    pending.insert((m.topic().to_string(), m.partition()), m.offset());
                    since_flush += 1;
                }
            }
            let stop = shutdown.is_cancelled();
            let due = since_flush >= self.cfg.batch.max_events
                || (since_flush > 0 && Instant::now() >= deadline);
            if let Some(e) = engine.as_deref_mut() {
                if (due || stop) && (since_flush > 0 || e.pending() > 0) {
                    if !self
                        .flush(e, &mut versions, std::mem::take(&mut dead))
                        .await
                    {
                        // Shutdown while ClickHouse or the broker is down: offsets stay where
                        // they were; the next start rebuilds and re-reads the rest.
                        return Ok(());
                    }
                    if context.generation.load(Ordering::SeqCst) != generation {
                        // Revoked meanwhile: another member may own these partitions now.
                        continue;
                    }
                    for ((topic, partition), offset) in std::mem::take(&mut pending) {
                        if let Err(e) = self.consumer.store_offset(&topic, partition, offset) {
                            tracing::warn!(topic, partition, offset, error = %e, "storing offset failed");
                        }
                    }
                    since_flush = 0;
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
            if since_flush == 0 && engine.as_ref().is_none_or(|e| e.pending() == 0) {
                // Idle: the flush clock starts with the next message.
                deadline = Instant::now() + self.cfg.batch.flush_interval;
            }
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(5));
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
            dead.extend(self.apply(e, &m));
            // rdkafka's store_offset takes the message's own offset (it commits the next one).
            pending.insert((m.topic().to_string(), m.partition()), m.offset());
            since_flush += 1;
        }
    }

    /// Applies one consumed message to the engine; an unreadable one comes back for the
    /// dead-letter topic.
    fn apply(&self, engine: &mut Engine, m: &impl Message) -> Option<Unreadable> {
        let payload = m.payload();
        let unreadable = |error: String| {
            events::message_unreadable(m.topic(), m.partition(), m.offset(), &error);
            Some(Unreadable {
                topic: m.topic().to_string(),
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                payload: Payload::of(payload.unwrap_or_default()),
                error,
            })
        };
        if m.topic() == self.cfg.kafka.stitch_topic {
            return match decode::recheck(payload) {
                Ok(key) => {
                    engine.recheck(&key);
                    events::recheck_received();
                    None
                }
                Err(why) => unreadable(why),
            };
        }
        let received = chrono::Utc::now().timestamp_millis();
        match decode::normalized(payload) {
            Ok(e) => {
                // With one partition every key is where it belongs (no key to build per event).
                if engine.ownership().partitions() > 1 {
                    let key = e.lead_key();
                    if engine.ownership().partition(&key) as i32 != m.partition() {
                        events::misrouted(&key, m.partition());
                    }
                }
                match engine.ingest(&e, received) {
                    Ingested::Duplicate => events::event_processed(true, false, false, false),
                    Ingested::Applied {
                        correction,
                        late,
                        too_late,
                    } => {
                        if too_late {
                            events::too_late(&e.event_id);
                        }
                        events::event_processed(false, late, too_late, correction)
                    }
                }
                None
            }
            Err(why) => unreadable(why),
        }
    }

    /// Lookups, rows, rechecks: `false` when `give_up` interrupted the retries.
    async fn flush(
        &self,
        engine: &mut Engine,
        versions: &mut Versions,
        dead: Vec<Unreadable>,
    ) -> bool {
        let started = Instant::now();
        let lookups = engine.take_lookups();
        if !lookups.is_empty() {
            let found = with_retry("lookup", &self.retry, || async {
                store::lookup(self.sink.client(), &lookups)
                    .await
                    .map_err(|e| SinkError::Transient(e.to_string()))
            })
            .await;
            match found {
                Err(GaveUp) => return false,
                Ok(Err(e)) => tracing::error!(error = %e, "device lookup failed"),
                Ok(Ok(found)) => {
                    for (l, f) in lookups.iter().zip(found) {
                        engine.learn(l, &f.claims, &f.touches);
                    }
                    events::looked_up(lookups.len());
                }
            }
        }
        let out = engine.flush(versions.issue());
        match with_retry("write", &self.retry, || write(self.sink, &out)).await {
            Err(GaveUp) => return false,
            Ok(Err(e)) => {
                // Our own rows were refused: a schema mismatch, not bad input. Keep going (the
                // next change of these leads rewrites them) but say so loudly.
                tracing::error!(error = %e, rows = out.transitions.len() + out.leads.len(), "clickhouse refused aggregator rows");
            }
            Ok(Ok(())) => {
                events::flushed(
                    &out.by_kind,
                    out.transitions.len() + out.leads.len(),
                    out.replayed,
                    started.elapsed(),
                );
                self.health
                    .last_flush_ms
                    .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
                self.publish_health(engine);
            }
        }
        if !dead.is_empty() {
            match with_retry("dead_letter", &self.retry, || self.send_dead_letters(&dead)).await {
                Err(GaveUp) => return false,
                Ok(r) => {
                    if let Err(e) = r {
                        tracing::error!(error = %e, "dead letters refused");
                    }
                }
            }
        }
        let notes = engine.take_notifications();
        if !notes.is_empty() {
            let sent = with_retry("recheck", &self.retry, || self.send_rechecks(&notes)).await;
            match sent {
                Err(GaveUp) => return false,
                Ok(r) => {
                    if let Err(e) = r {
                        tracing::error!(error = %e, "recheck messages refused");
                    }
                    events::rechecks_sent(notes.len());
                }
            }
        }
        true
    }

    /// Produces the unreadable messages to the dead-letter topic and waits for the
    /// acknowledgements.
    async fn send_dead_letters(&self, dead: &[Unreadable]) -> Result<(), SinkError> {
        let records = dead.iter().map(|u| {
            dead_letter::record(
                &self.cfg.kafka.dead_letter_topic,
                &dead_letter::DeadLetter {
                    topic: &u.topic,
                    partition: u.partition,
                    offset: u.offset,
                    key: u.key.as_deref(),
                    payload: &u.payload,
                    category: "unreadable",
                    field: None,
                    message: &u.error,
                },
            )
        });
        self.produce_all("a dead letter", records).await
    }

    /// Produces one recheck message per lead and waits for every acknowledgement.
    async fn send_rechecks(&self, keys: &[SmolStr]) -> Result<(), SinkError> {
        let payloads: Vec<Vec<u8>> = keys
            .iter()
            .map(|k| {
                serde_json::to_vec(&Recheck {
                    recheck: k.to_string(),
                })
                .unwrap_or_default()
            })
            .collect();
        let records = keys.iter().zip(&payloads).map(|(k, p)| {
            FutureRecord::to(&self.cfg.kafka.stitch_topic)
                .key(k.as_bytes())
                .payload(p.as_slice())
        });
        self.produce_all("a recheck", records).await
    }

    /// Sends every record and waits for all acknowledgements; a failure is transient (retried).
    async fn produce_all<'a>(
        &self,
        what: &str,
        records: impl Iterator<Item = FutureRecord<'a, [u8], [u8]>>,
    ) -> Result<(), SinkError> {
        let deliveries: Vec<_> = records
            .map(|r| self.producer.send(r, Duration::from_secs(10)))
            .collect();
        for d in futures::future::join_all(deliveries).await {
            if let Err((e, _)) = d {
                return Err(SinkError::Transient(format!("producing {what}: {e}")));
            }
        }
        Ok(())
    }

    fn publish_health(&self, engine: &Engine) {
        self.health
            .newest_event_ms
            .store(engine.watermark_ms().max(0), Ordering::Relaxed);
        self.health
            .leads_held
            .store(engine.leads_held() as i64, Ordering::Relaxed);
        events::state_size(
            engine.leads_held(),
            engine.devices_held(),
            engine.watermark_ms(),
        );
    }
}
