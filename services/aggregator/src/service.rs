//! The service loop: on every partition assignment rebuild the state of the owned leads from
//! ClickHouse, then consume `leads.normalized` and the stitching topic, flush changed rows to
//! ClickHouse, send rechecks to the other members, and only then store the offsets
//! (at-least-once; rows and rechecks are idempotent, so a replay changes nothing).

use crate::api::Health;
use crate::config::AggregatorConfig;
use crate::context::AggregatorConsumer;
use crate::decode;
use crate::engine::{Engine, Ingested, Ownership};
use crate::funnel::Funnels;
use crate::internal_events as events;
use crate::store;
use crate::versions::{self, Versions};
use crate::writes::{write, Note, Outbox, Unreadable};
use leadstream_runtime::clickhouse::{Sink, SinkError};
use leadstream_runtime::dead_letter::Payload;
use leadstream_runtime::group::Membership;
use leadstream_runtime::retry::{GaveUp, Retry};
use rdkafka::consumer::Consumer;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::FutureProducer;
use std::collections::BTreeMap;
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
enum Dependency {
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

/// How a rebuild ended.
enum Rebuild {
    Done(Box<Engine>, Versions),
    /// Shutdown came first.
    Stopped,
    /// The partitions changed hands before it finished.
    Superseded,
}

/// How often work that polls the consumer meanwhile looks whether the group moved its
/// partitions (and whether to pause them).
const POLLING_CHECK: Duration = Duration::from_millis(500);

/// A flush slower than this pauses the partitions while it goes on (a regular one takes less,
/// and the messages fetched meanwhile are applied right after it).
const FLUSH_PAUSE_AFTER: Duration = Duration::from_secs(1);

/// Who this member is in `aggregator_epochs` (for people reading it).
fn member_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "aggregator".into());
    format!("{host}:{}", std::process::id())
}

impl Service<'_> {
    /// [`with_retry`], with readiness following the dependency: blocked while it fails.
    async fn retried<T, F, Fut>(
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

    fn outbox(&self) -> Outbox<'_> {
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

    /// [`Self::rebuild`] with the consumer still polled (see [`Self::polling`]), partitions
    /// paused from the start; `Superseded` when they changed hands meanwhile.
    async fn restore(
        &self,
        own: Ownership,
        generation: u64,
    ) -> (Result<Rebuild, SinkError>, Vec<OwnedMessage>) {
        let (done, early) = self
            .polling(self.rebuild(own), generation, Duration::ZERO, 0)
            .await;
        match done {
            Some(r) => (r, early),
            None => {
                // Dropping the rebuild abandons its reads; the new owner rebuilds under a newer
                // epoch, so any rows this one wrote lose to it.
                events::restore_superseded();
                (Ok(Rebuild::Superseded), early)
            }
        }
    }

    /// Runs `work` while still polling the consumer: librdkafka takes the partitions of a member
    /// that does not poll for `max.poll.interval.ms`, so a rebuild or a flush waiting on
    /// ClickHouse longer than that would end in a rebalance (and a rebuild, round after round).
    /// The assigned partitions are paused once `work` has taken `pause_after`, or once
    /// `max_early` messages came in meanwhile: then polling serves heartbeats, rebalances and
    /// statistics and fetches nothing new. What it did deliver comes back, in order, to be
    /// applied after `work`. `None` when the partitions changed hands meanwhile (`work` is
    /// dropped).
    async fn polling<T>(
        &self,
        work: impl std::future::Future<Output = T>,
        generation: u64,
        pause_after: Duration,
        max_early: usize,
    ) -> (Option<T>, Vec<OwnedMessage>) {
        let context = self.consumer.context();
        let started = Instant::now();
        let mut paused = None;
        let mut early = Vec::new();
        tokio::pin!(work);
        let mut tick = tokio::time::interval(POLLING_CHECK);
        let result = loop {
            if paused.is_none() && (started.elapsed() >= pause_after || early.len() >= max_early) {
                let list = self.consumer.assignment().ok();
                if let Some(list) = &list {
                    if let Err(e) = self.consumer.pause(list) {
                        tracing::warn!(error = %e, "pausing the partitions failed");
                    }
                }
                paused = Some(list);
            }
            tokio::select! {
                r = &mut work => break Some(r),
                m = self.consumer.recv() => match m {
                    Ok(m) => {
                        self.membership.consumed();
                        early.push(m.detach());
                    }
                    Err(e) => tracing::warn!(error = %e, "kafka consumer error"),
                },
                _ = tick.tick() => {}
            }
            if context.generation.load(Ordering::SeqCst) != generation {
                break None;
            }
        };
        if let Some(before) = paused {
            // Resume whatever is assigned now too: a pause may outlive a reassignment.
            for list in [before, self.consumer.assignment().ok()]
                .into_iter()
                .flatten()
            {
                if let Err(e) = self.consumer.resume(&list) {
                    tracing::warn!(error = %e, "resuming the partitions failed");
                }
            }
        }
        (result, early)
    }

    /// Takes a new epoch, rebuilds the state of the owned leads from ClickHouse and writes what
    /// changed.
    async fn rebuild(&self, own: Ownership) -> Result<Rebuild, SinkError> {
        let started = Instant::now();
        let member = member_name();
        let reserved = self
            .retried("epoch", Dependency::ClickHouse, || async {
                versions::reserve(self.sink.client(), &member, own.owned().collect())
                    .await
                    .map_err(|e| SinkError::Transient(e.to_string()))
            })
            .await;
        let Ok(reserved) = reserved else {
            return Ok(Rebuild::Stopped);
        };
        let mut versions = reserved?;
        let stale_version = versions.issue();
        // Each attempt builds a fresh engine, so a half-read attempt leaves nothing behind.
        let rebuilt = self
            .retried("rebuild", Dependency::ClickHouse, || async {
                store::rebuild(
                    self.sink.client(),
                    self.funnels.clone(),
                    &self.cfg.state,
                    self.cfg.attribution.lookback,
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
            versions.epoch(),
            started.elapsed(),
        );
        let out = engine.flush(versions.issue());
        // The rewritten buckets first, then tombstones for only those that vanished: a reader
        // (the wallboard every 5 s) never sees a bucket gone before its replacement is written.
        let mut stale = rebuilt.stale_rollups;
        store::keep_vanished(&mut stale, &out);
        for rows in [&out, &stale] {
            match self
                .retried("write", Dependency::ClickHouse, || write(self.sink, rows))
                .await
            {
                Err(GaveUp) => return Ok(Rebuild::Stopped),
                Ok(r) => r?,
            }
        }
        Ok(Rebuild::Done(Box::new(engine), versions))
    }

    /// Consumes until `shutdown`; flushes and stores offsets before returning.
    pub async fn consume(&self, shutdown: CancellationToken) -> Result<(), SinkError> {
        let context = self.consumer.context();
        let mut versions = Versions::of_epoch(0);
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
                    let (rebuilt, early) = self.restore(own, generation).await;
                    match rebuilt? {
                        Rebuild::Stopped => return Ok(()),
                        // Reassigned meanwhile: the loop starts over for the new set.
                        Rebuild::Superseded => continue,
                        Rebuild::Done(mut e, v) => {
                            versions = v;
                            // What the consumer delivered while the rebuild ran, before the
                            // pause took hold: it comes after the state just read, in order.
                            for m in &early {
                                if e.ownership().owned().any(|p| p as i32 == m.partition()) {
                                    dead.extend(self.apply(&mut e, m));
                                    pending
                                        .insert((m.topic().to_string(), m.partition()), m.offset());
                                    since_flush += 1;
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
                    let flush = self.flush(e, &mut versions, std::mem::take(&mut dead));
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
                    for ((topic, partition), offset) in std::mem::take(&mut pending) {
                        if let Err(e) = self.consumer.store_offset(&topic, partition, offset) {
                            tracing::warn!(topic, partition, offset, error = %e, "storing offset failed");
                        }
                    }
                    since_flush = 0;
                    // What came in while the flush ran belongs to the next one.
                    for m in &early {
                        dead.extend(self.apply(e, m));
                        pending.insert((m.topic().to_string(), m.partition()), m.offset());
                        since_flush += 1;
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
                Ok(r) => {
                    match r.copy {
                        Some((event_type, id)) => engine.recheck_copy(&r.lead, event_type, &id),
                        None => engine.recheck(&r.lead),
                    }
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

    /// Copy checks, lookups, rows, dead letters, rechecks: `false` when the give-up token
    /// interrupted the retries, an error when ClickHouse refused the aggregator's own rows.
    async fn flush(
        &self,
        engine: &mut Engine,
        versions: &mut Versions,
        dead: Vec<Unreadable>,
    ) -> Result<bool, SinkError> {
        let started = Instant::now();
        // Copies first: settling one may withdraw a claim, which queues a device lookup.
        let checks = engine.take_checks();
        if !checks.is_empty() {
            let found = self
                .retried("copies", Dependency::ClickHouse, || async {
                    store::copies_of(self.sink.client(), &checks)
                        .await
                        .map_err(|e| SinkError::Transient(e.to_string()))
                })
                .await;
            match found {
                Err(GaveUp) => return Ok(false),
                Ok(Err(e)) => tracing::error!(error = %e, "copy check failed"),
                Ok(Ok(found)) => {
                    for (c, copies) in checks.iter().zip(found) {
                        engine.settle(c, &copies);
                    }
                    events::copies_checked(checks.len());
                }
            }
        }
        let lookups = engine.take_lookups();
        if !lookups.is_empty() {
            let found = self
                .retried("lookup", Dependency::ClickHouse, || async {
                    store::lookup(self.sink.client(), &lookups)
                        .await
                        .map_err(|e| SinkError::Transient(e.to_string()))
                })
                .await;
            match found {
                Err(GaveUp) => return Ok(false),
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
        match self
            .retried("write", Dependency::ClickHouse, || write(self.sink, &out))
            .await
        {
            Err(GaveUp) => return Ok(false),
            Ok(Err(e)) => {
                // Our own rows were refused: a schema mismatch, not bad input. Storing the
                // offsets now would lose these rows, so the aggregator stops (offsets where they
                // were); the next start rebuilds and writes everything again.
                tracing::error!(error = %e, rows = out.transitions.len() + out.leads.len(), "clickhouse refused aggregator rows");
                return Err(e);
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
        let outbox = self.outbox();
        if !dead.is_empty() {
            match self
                .retried("dead_letter", Dependency::Kafka, || {
                    outbox.dead_letters(&dead)
                })
                .await
            {
                Err(GaveUp) => return Ok(false),
                Ok(Err(e)) => tracing::error!(error = %e, "dead letters refused"),
                Ok(Ok(())) => {}
            }
        }
        let notes: Vec<Note> = engine
            .take_notifications()
            .into_iter()
            .map(|lead| Note { lead, copy: None })
            .chain(
                engine
                    .take_copy_notifications()
                    .into_iter()
                    .map(|(lead, t, id)| Note {
                        lead,
                        copy: Some((t, id)),
                    }),
            )
            .collect();
        if !notes.is_empty() {
            match self
                .retried("recheck", Dependency::Kafka, || outbox.rechecks(&notes))
                .await
            {
                Err(GaveUp) => return Ok(false),
                Ok(Err(e)) => tracing::error!(error = %e, "recheck messages refused"),
                Ok(Ok(())) => events::rechecks_sent(notes.len()),
            }
        }
        Ok(true)
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
