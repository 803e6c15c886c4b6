//! One flush: copy checks and device lookups against ClickHouse, the engine's rows written,
//! then dead letters and rechecks produced.

use crate::engine::{Engine, EvictedRow, Output};
use crate::internal_events as events;
use crate::service::{Dependency, Service};
use crate::store;
use crate::versions::Versions;
use crate::writes::{write, Note, Unreadable};
use leadstream_runtime::clickhouse::SinkError;
use leadstream_runtime::retry::GaveUp;
use std::sync::atomic::Ordering;
use std::time::Instant;

impl Service<'_> {
    /// The newest rows of `aggregator_evicted` for `keys`, retried while ClickHouse is
    /// unavailable: `None` when the give-up token interrupted the retries.
    async fn read_evicted(
        &self,
        what: &'static str,
        keys: &[String],
    ) -> Result<Option<Vec<EvictedRow>>, SinkError> {
        let found = self
            .retried(what, Dependency::ClickHouse, || async {
                store::evicted::read(self.sink.client(), keys)
                    .await
                    .map_err(|e| SinkError::Transient(e.to_string()))
            })
            .await;
        match found {
            Err(GaveUp) => Ok(None),
            Ok(r) => r.map(Some),
        }
    }

    /// Brings back the evicted groups the engine asked for and applies the events parked for
    /// them: `false` when the give-up token interrupted the retries. No flush may run with
    /// events parked (their offsets would be stored unapplied), so a refused read is an error.
    pub(crate) async fn reload(&self, engine: &mut Engine) -> Result<bool, SinkError> {
        loop {
            let asked = engine.take_reloads();
            if asked.is_empty() {
                return Ok(true);
            }
            let Some(rows) = self.read_evicted("reload", &asked).await? else {
                return Ok(false);
            };
            let asked_n = asked.len();
            let r = engine.reload(asked, &rows);
            events::Reloaded {
                asked: asked_n,
                groups: r.groups,
                unfolded: r.unfolded,
                misses: r.misses,
                parked: r.applied.len(),
            }
            .emit();
            for (e, result) in r.applied {
                events::ingested(result, &e);
            }
        }
    }

    /// Reads the stored counts of the rollup buckets `out` changed that may have been evicted
    /// and completes their rows: `false` when the give-up token interrupted the retries. No
    /// rows may be written before (they would carry only the change), so a refused read is an
    /// error.
    pub(crate) async fn resolve(
        &self,
        engine: &mut Engine,
        out: &mut Output,
    ) -> Result<bool, SinkError> {
        if out.unresolved.is_empty() {
            return Ok(true);
        }
        let keys = out.unresolved.keys();
        let Some(rows) = self.read_evicted("resolve", &keys).await? else {
            return Ok(false);
        };
        let found = engine.resolve(out, &rows);
        events::buckets_resolved(keys.len(), found);
        Ok(true)
    }

    /// Copy checks, lookups, rows, dead letters, rechecks: `false` when the give-up token
    /// interrupted the retries, an error when ClickHouse refused the aggregator's own rows.
    pub(crate) async fn flush(
        &self,
        engine: &mut Engine,
        versions: &mut Versions,
        dead: Vec<Unreadable>,
    ) -> Result<bool, SinkError> {
        let started = Instant::now();
        if !self.reload(engine).await? {
            return Ok(false);
        }
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
                    for (c, copies) in checks.iter().zip(&found) {
                        engine.need_for_settle(c, copies);
                    }
                    if !self.reload(engine).await? {
                        return Ok(false);
                    }
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
                    for (l, f) in lookups.iter().zip(&found) {
                        engine.need_for_learn(l, &f.claims);
                    }
                    if !self.reload(engine).await? {
                        return Ok(false);
                    }
                    for (l, f) in lookups.iter().zip(found) {
                        engine.learn(l, &f.claims, &f.touches);
                    }
                    events::looked_up(lookups.len());
                }
            }
        }
        let mut out = engine.flush(versions.issue());
        if !self.resolve(engine, &mut out).await? {
            return Ok(false);
        }
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
}
