//! Restoring the owned partitions' state when the group assigns them: a new epoch, their
//! checkpoints (or, without usable ones, the rebuild from history in ClickHouse), and the
//! consumer kept polling meanwhile (also during flushes), so no long restore or ClickHouse
//! outage gets the member taken out of the group.

use crate::engine::{Engine, Output, Ownership};
use crate::internal_events as events;
use crate::service::{Dependency, Service};
use crate::store::{self, checkpoints};
use crate::versions::{self, Versions};
use crate::writes::write;
use leadstream_runtime::clickhouse::SinkError;
use leadstream_runtime::retry::GaveUp;
use rdkafka::consumer::Consumer;
use rdkafka::message::OwnedMessage;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How a rebuild ended.
pub(crate) enum Rebuild {
    Done(Box<Engine>, Versions),
    /// Shutdown came first.
    Stopped,
    /// The partitions changed hands before it finished.
    Superseded,
}

/// How often work that polls the consumer meanwhile looks whether the group moved its
/// partitions (and whether to pause them).
const POLLING_CHECK: Duration = Duration::from_millis(500);

/// How long a member handed only some partitions waits for the rest before it reads history
/// for them, in sessions: the killed member's partitions come back once its session expired
/// (at most one session after the kill) and the group rebalanced.
const ASSIGNMENT_WAIT_SESSIONS: u32 = 2;

/// Who this member is in `aggregator_epochs` (for people reading it).
fn member_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "aggregator".into());
    format!("{host}:{}", std::process::id())
}

impl Service<'_> {
    fn assignment_wait(&self) -> Duration {
        Duration::from_millis(self.cfg.kafka.connection().session_timeout_ms())
            * ASSIGNMENT_WAIT_SESSIONS
    }

    /// [`Self::rebuild`] with the consumer still polled (see [`Self::polling`]), partitions
    /// paused from the start; `Superseded` when they changed hands meanwhile.
    pub(crate) async fn restore(
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
    pub(crate) async fn polling<T>(
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
    pub(crate) async fn rebuild(&self, own: Ownership) -> Result<Rebuild, SinkError> {
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
        let config = self.checkpoint_config();
        let loaded = self
            .retried("checkpoints", Dependency::ClickHouse, || async {
                let engine = store::empty_engine(
                    self.funnels.clone(),
                    &self.cfg.state,
                    self.cfg.attribution.lookback,
                    own.clone(),
                );
                checkpoints::restore(self.sink.client(), engine, config)
                    .await
                    .map_err(|e| SinkError::Transient(e.to_string()))
            })
            .await;
        let Ok(loaded) = loaded else {
            return Ok(Rebuild::Stopped);
        };
        match loaded? {
            Ok(restored) => {
                let mut engine = restored.engine;
                // Leads rewritten after the checkpoint may have left memory with it.
                engine.need_for_stale(&restored.stale);
                if !self.reload(&mut engine).await? {
                    return Ok(Rebuild::Stopped);
                }
                let stale_leads = restored.stale.leads.len();
                let mut fixes = engine.settle_stale(restored.stale, stale_version);
                if !self.resolve(&mut engine, &mut fixes).await? {
                    return Ok(Rebuild::Stopped);
                }
                events::RestoredFromCheckpoints {
                    bytes: restored.bytes,
                    leads: engine.leads_held(),
                    stale_leads,
                    partitions: own.owned().collect(),
                    epoch: versions.epoch(),
                    elapsed: started.elapsed(),
                }
                .emit();
                let mut out = engine.flush(versions.issue());
                if !self.resolve(&mut engine, &mut out).await? {
                    return Ok(Rebuild::Stopped);
                }
                // The settled buckets first: the flush's own rows are newer where they overlap.
                if !self.write_all(&[&fixes, &out]).await? {
                    return Ok(Rebuild::Stopped);
                }
                events::restore_finished(true, started.elapsed());
                return Ok(Rebuild::Done(Box::new(engine), versions));
            }
            Err(why) => {
                events::checkpoints_unusable(&why.to_string());
                // Reading all history for some partitions, only to be handed the rest (and
                // then load the checkpoints after all), costs minutes and leaves the memory of
                // that history with the process. Wait for the group to settle first: a change
                // of assignment drops this wait (`polling`); when none comes, this member
                // shares the partitions and rebuilds from history, as it must.
                if why.until_all_owned() {
                    let wait = self.assignment_wait();
                    events::history_read_deferred(own.owned().collect(), wait);
                    if self.retry.pause(wait).await.is_err() {
                        return Ok(Rebuild::Stopped);
                    }
                }
            }
        }
        events::history_read_started(own.owned().collect());
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
        events::Rebuilt {
            events: rebuilt.events,
            published: rebuilt.published,
            leads: engine.leads_held(),
            partitions: own.owned().collect(),
            epoch: versions.epoch(),
            elapsed: started.elapsed(),
        }
        .emit();
        let out = engine.flush(versions.issue());
        // The rewritten buckets first, then tombstones for only those that vanished: a reader
        // (the wallboard every 5 s) never sees a bucket gone before its replacement is written.
        let mut stale = rebuilt.stale_rollups;
        store::keep_vanished(&mut stale, &out);
        if !self.write_all(&[&out, &stale]).await? {
            return Ok(Rebuild::Stopped);
        }
        events::restore_finished(false, started.elapsed());
        Ok(Rebuild::Done(Box::new(engine), versions))
    }

    /// Writes each of `outputs` in turn; `false` when the give-up token interrupted the retries.
    async fn write_all(&self, outputs: &[&Output]) -> Result<bool, SinkError> {
        for rows in outputs {
            match self
                .retried("write", Dependency::ClickHouse, || write(self.sink, rows))
                .await
            {
                Err(GaveUp) => return Ok(false),
                Ok(r) => r?,
            }
        }
        Ok(true)
    }
}
