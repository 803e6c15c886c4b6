//! The service loop: rebuild the state from ClickHouse, then consume `leads.normalized`, flush
//! changed rows to ClickHouse and only then store the offsets (at-least-once; the rows are
//! idempotent, so a replay changes nothing).

use crate::api::Health;
use crate::config::AggregatorConfig;
use crate::engine::{Engine, Ingested, Output};
use crate::funnel::Funnels;
use crate::internal_events as events;
use crate::rows::{LateEventRow, LeadFunnelRow, TransitionRow};
use crate::store;
use leadstream_runtime::clickhouse::{Sink, SinkError};
use leadstream_schemas::NormalizedEvent;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
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

/// Retries `f` until it succeeds or `shutdown` fires (then `None`); rejected data is not retried.
pub async fn with_retry<T, F, Fut>(
    what: &'static str,
    shutdown: &CancellationToken,
    mut f: F,
) -> Option<Result<T, SinkError>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, SinkError>>,
{
    let mut backoff = Duration::from_millis(100);
    for attempt in 1.. {
        match f().await {
            Err(SinkError::Transient(e)) => {
                events::retry(what, attempt, backoff, &e);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => return None,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            other => return Some(other),
        }
    }
    None
}

/// Rows per INSERT: big flushes (the first one after a rebuild rewrites every lead) go in pieces
/// so no single request holds the whole state; each piece is idempotent on its own.
const ROWS_PER_INSERT: usize = 5000;

/// Writes one flush's rows. Transitions and late events first, lead states last: a reader that
/// sees a lead's new state also sees its transitions.
pub async fn write(sink: &Sink, out: &Output) -> Result<(), SinkError> {
    for chunk in out.transitions.chunks(ROWS_PER_INSERT) {
        sink.insert::<TransitionRow>("stage_transitions", chunk)
            .await?;
    }
    sink.insert::<LateEventRow>("late_events", &out.late_events)
        .await?;
    for chunk in out.leads.chunks(ROWS_PER_INSERT) {
        sink.insert::<LeadFunnelRow>("lead_funnels", chunk).await?;
    }
    Ok(())
}

/// Rebuilds the state from ClickHouse and writes what changed since the last run; `None` when
/// shutdown came first.
pub async fn recover(
    sink: &Sink,
    funnels: Arc<Funnels>,
    lateness_ms: i64,
    versions: &mut Versions,
    shutdown: &CancellationToken,
) -> Option<Result<Engine, SinkError>> {
    let started = Instant::now();
    // Each attempt builds a fresh engine, so a half-read attempt leaves nothing behind.
    let rebuilt = with_retry("rebuild", shutdown, || async {
        store::rebuild(sink.client(), funnels.clone(), lateness_ms)
            .await
            .map_err(|e| SinkError::Transient(e.to_string()))
    })
    .await?;
    let (mut engine, rebuilt) = match rebuilt {
        Ok(r) => r,
        Err(e) => return Some(Err(e)),
    };
    events::rebuilt(
        rebuilt.events,
        rebuilt.published,
        engine.leads_held(),
        started.elapsed(),
    );
    let out = engine.flush(versions.issue());
    match with_retry("write", shutdown, || write(sink, &out)).await? {
        Ok(()) => Some(Ok(engine)),
        Err(e) => Some(Err(e)),
    }
}

/// Consumes until `shutdown`; flushes and stores offsets before returning.
pub async fn consume(
    cfg: &AggregatorConfig,
    consumer: &StreamConsumer,
    sink: &Sink,
    mut engine: Engine,
    mut versions: Versions,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    // Write retries give up SHUTDOWN_GRACE after shutdown, so a clean stop still writes its last
    // batch but a ClickHouse outage cannot hold the process.
    let give_up = CancellationToken::new();
    {
        let (shutdown, give_up) = (shutdown.clone(), give_up.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
            give_up.cancel();
        });
    }
    let mut pending: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut since_flush = 0usize;
    let mut deadline = Instant::now() + cfg.batch.flush_interval;
    loop {
        let stop = shutdown.is_cancelled();
        let due =
            since_flush >= cfg.batch.max_events || (since_flush > 0 && Instant::now() >= deadline);
        if due || stop {
            if since_flush > 0 || engine.pending() > 0 {
                if !flush(sink, &mut engine, &mut versions, &health, &give_up).await {
                    // Shutdown while ClickHouse is down: offsets stay where they were; the
                    // next start rebuilds from ClickHouse and re-reads the rest.
                    return;
                }
                for ((topic, partition), offset) in std::mem::take(&mut pending) {
                    if let Err(e) = consumer.store_offset(&topic, partition, offset) {
                        tracing::warn!(topic, partition, offset, error = %e, "storing offset failed");
                    }
                }
            }
            since_flush = 0;
            deadline = Instant::now() + cfg.batch.flush_interval;
            if stop {
                match consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync) {
                    Ok(()) => {}
                    // Nothing consumed since the last commit.
                    Err(rdkafka::error::KafkaError::ConsumerCommit(
                        rdkafka::types::RDKafkaErrorCode::NoOffset,
                    )) => {}
                    Err(e) => tracing::warn!(error = %e, "final offset commit failed"),
                }
                return;
            }
        }
        if since_flush == 0 && engine.pending() == 0 {
            // Idle: the flush clock starts with the next message.
            deadline = Instant::now() + cfg.batch.flush_interval;
        }
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(5));
        let msg = tokio::select! {
            m = consumer.recv() => m,
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
        let received = chrono::Utc::now().timestamp_millis();
        match m.payload().map(serde_json::from_slice::<NormalizedEvent>) {
            Some(Ok(e)) => match engine.ingest(&e, received) {
                Ingested::Duplicate => events::event_processed(true, false, false, false),
                Ingested::Applied {
                    correction,
                    late,
                    too_late,
                } => {
                    if too_late {
                        events::too_late(
                            &e.event_id,
                            engine.watermark_ms() - e.event_time.timestamp_millis(),
                        );
                    }
                    events::event_processed(false, late, too_late, correction)
                }
            },
            Some(Err(err)) => events::message_unreadable(m.partition(), m.offset(), &err),
            None => events::message_unreadable(m.partition(), m.offset(), &"empty payload"),
        }
        // rdkafka's store_offset takes the message's own offset (it commits the next one).
        pending.insert((m.topic().to_string(), m.partition()), m.offset());
        since_flush += 1;
    }
}

/// Flushes the engine to ClickHouse; `false` when `give_up` interrupted the retries.
async fn flush(
    sink: &Sink,
    engine: &mut Engine,
    versions: &mut Versions,
    health: &Health,
    give_up: &CancellationToken,
) -> bool {
    let started = Instant::now();
    let out = engine.flush(versions.issue());
    match with_retry("write", give_up, || write(sink, &out)).await {
        None => false,
        Some(Err(e)) => {
            // Our own rows were refused: a schema mismatch, not bad input. Keep going (the next
            // change of these leads rewrites them) but say so loudly.
            tracing::error!(error = %e, rows = out.transitions.len() + out.leads.len(), "clickhouse refused aggregator rows");
            true
        }
        Some(Ok(())) => {
            events::flushed(
                &out.by_kind,
                out.transitions.len() + out.leads.len(),
                out.replayed,
                started.elapsed(),
            );
            let now = chrono::Utc::now().timestamp_millis();
            health.last_flush_ms.store(now, Ordering::Relaxed);
            health
                .newest_event_ms
                .store(engine.watermark_ms().max(0), Ordering::Relaxed);
            health
                .leads_held
                .store(engine.leads_held() as i64, Ordering::Relaxed);
            events::state_size(
                engine.leads_held(),
                engine.devices_held(),
                engine.watermark_ms(),
            );
            true
        }
    }
}
