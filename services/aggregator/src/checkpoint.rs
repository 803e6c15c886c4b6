//! Taking a checkpoint of the owned partitions (README "Checkpoints"): right after a flush whose
//! rows were acknowledged, the engine's state per partition goes to `aggregator_checkpoints`;
//! only then are the offsets that flush (and the ones before it) covered stored for commit.

use crate::engine::Engine;
use crate::internal_events as events;
use crate::service::{Dependency, Service};
use crate::store::checkpoints::{self, Checkpoint};
use crate::store::evicted;
use leadstream_runtime::clickhouse::SinkError;
use leadstream_runtime::retry::GaveUp;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::time::Instant;

/// Offsets not yet committed: `(topic, partition)` → the last message's offset.
pub(crate) type Offsets = BTreeMap<(String, i32), i64>;

impl Service<'_> {
    /// What a checkpoint's state depends on besides the events: a checkpoint taken under other
    /// funnels (rule matches are stored per event), lateness, lookback, touch cap or partition
    /// count is not loaded.
    pub(crate) fn checkpoint_config(&self) -> u64 {
        let s = &self.cfg.state;
        let mut h = foldhash::quality::FixedState::with_seed(0x1ead).build_hasher();
        format!("{:?}", self.funnels).hash(&mut h);
        s.allowed_lateness.hash(&mut h);
        s.max_touches_per_device.hash(&mut h);
        self.cfg.attribution.lookback.hash(&mut h);
        self.partitions.hash(&mut h);
        h.finish()
    }

    /// Evicts the idle groups, then writes the checkpoints of the owned partitions as of flush
    /// `version`, covering `offsets`: `false` when the give-up token interrupted the retries.
    pub(crate) async fn checkpoint(
        &self,
        engine: &mut Engine,
        version: u64,
        offsets: &Offsets,
    ) -> Result<bool, SinkError> {
        if !self.evict(engine, version).await? || !self.fold(engine, version).await? {
            return Ok(false);
        }
        let started = Instant::now();
        let covers = |p: u32| {
            let of: BTreeMap<&str, i64> = offsets
                .iter()
                .filter(|((_, q), _)| *q as u32 == p)
                .map(|((t, _), o)| (t.as_str(), o + 1))
                .collect();
            serde_json::to_string(&of).unwrap_or_default()
        };
        let list: Vec<Checkpoint> = engine
            .checkpoints(self.checkpoint_config())
            .into_iter()
            .map(|(partition, data)| Checkpoint {
                partition,
                offsets: covers(partition),
                data,
            })
            .collect();
        let encoded = started.elapsed();
        let bytes: usize = list.iter().map(|c| c.data.len()).sum();
        match self
            .retried("checkpoint", Dependency::ClickHouse, || {
                checkpoints::write(self.sink, &list, version)
            })
            .await
        {
            Err(GaveUp) => Ok(false),
            Ok(Err(e)) => {
                tracing::error!(error = %e, bytes, "clickhouse refused the checkpoint");
                Err(e)
            }
            Ok(Ok(())) => {
                engine.checkpoint_written();
                events::Checkpointed {
                    partitions: list.len(),
                    bytes,
                    encoded,
                    elapsed: started.elapsed(),
                }
                .emit();
                Ok(true)
            }
        }
    }

    /// Stores the settled events that leave memory and drops them, before the checkpoint
    /// that no longer holds them (after the evictions: an evicted lead is not folded).
    async fn fold(&self, engine: &mut Engine, version: u64) -> Result<bool, SinkError> {
        let started = Instant::now();
        let folds = engine.foldable();
        if folds.rows.is_empty() {
            return Ok(true);
        }
        match self
            .retried("fold", Dependency::ClickHouse, || {
                evicted::write(self.sink, &folds.rows, &[], version)
            })
            .await
        {
            Err(GaveUp) => Ok(false),
            Ok(Err(e)) => {
                tracing::error!(error = %e, rows = folds.rows.len(), "clickhouse refused the settled events");
                Err(e)
            }
            Ok(Ok(())) => {
                let (rows, folded) = (folds.rows.len(), folds.events);
                let bytes = folds.rows.iter().map(|r| r.blob.len()).sum();
                engine.fold(folds);
                self.publish_health(engine);
                let held = engine.events_held();
                events::Folded {
                    rows,
                    events: folded,
                    bytes,
                    held,
                    elapsed: started.elapsed(),
                }
                .emit();
                Ok(true)
            }
        }
    }

    /// Stores the idle groups and rollup buckets and drops them from memory, before the
    /// checkpoint that no longer holds them (so a checkpoint never lacks a lead or a bucket that
    /// is not stored).
    async fn evict(&self, engine: &mut Engine, version: u64) -> Result<bool, SinkError> {
        let started = Instant::now();
        let groups = engine.idle_groups();
        let buckets = engine.idle_buckets();
        if groups.is_empty() && buckets.rows.is_empty() {
            // The horizons may still move (no bucket below the new ones).
            engine.evict_buckets(buckets);
            return Ok(true);
        }
        match self
            .retried("evict", Dependency::ClickHouse, || {
                evicted::write(self.sink, &groups, &buckets.rows, version)
            })
            .await
        {
            Err(GaveUp) => Ok(false),
            Ok(Err(e)) => {
                tracing::error!(error = %e, groups = groups.len(), "clickhouse refused the evicted leads");
                Err(e)
            }
            Ok(Ok(())) => {
                engine.evict(&groups);
                events::buckets_evicted(buckets.rows.len());
                engine.evict_buckets(buckets);
                // What is held changed without a flush.
                self.publish_health(engine);
                let keys = groups.iter().map(|g| g.keys.len()).sum();
                let bytes = groups.iter().map(|g| g.blob.len() * g.keys.len()).sum();
                events::Evicted {
                    groups: groups.len(),
                    keys,
                    bytes,
                    elapsed: started.elapsed(),
                }
                .emit();
                Ok(true)
            }
        }
    }
}
