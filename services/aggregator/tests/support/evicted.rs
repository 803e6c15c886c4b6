//! `aggregator_evicted` as the tests keep it (the newest row per key), and the calls the
//! service makes around it: store idle groups and buckets before a checkpoint, read groups back
//! before a flush, complete a flush's unresolved buckets before writing.

use leadstream_aggregator::engine::{count_bytes, BucketEviction, EvictedGroup, EvictedRow};
use leadstream_aggregator::{Engine, Output};
use std::collections::HashMap;

#[derive(Default)]
pub struct EvictedStore {
    rows: HashMap<String, EvictedRow>,
    /// Groups put back, over all reloads.
    pub groups_reloaded: usize,
    /// Buckets stored, over all evictions.
    pub buckets_stored: usize,
    /// Unresolved bucket rows completed from a stored count.
    pub buckets_read: usize,
    /// Settled events folded, over all evictions.
    pub events_folded: usize,
    /// Rows of settled events put back, over all reloads.
    pub fold_rows_read: usize,
}

impl EvictedStore {
    fn put(&mut self, key: &str, partition: u32, version: u64, blob: Vec<u8>) {
        let row = EvictedRow {
            key: key.to_string(),
            partition,
            version,
            blob,
        };
        self.rows.insert(key.to_string(), row);
    }

    fn put_groups(&mut self, groups: &[EvictedGroup], version: u64) {
        for g in groups {
            for k in &g.keys {
                self.put(k, g.partition, version, g.blob.clone());
            }
        }
    }

    /// Stores `engine`'s idle groups and buckets with `version` (the last flush's).
    fn store_evictions(
        &mut self,
        engine: &Engine,
        version: u64,
    ) -> (Vec<EvictedGroup>, BucketEviction) {
        let groups = engine.idle_groups();
        self.put_groups(&groups, version);
        let buckets = engine.idle_buckets();
        for b in &buckets.rows {
            self.put(&b.key, b.partition, version, count_bytes(b.count).to_vec());
        }
        self.buckets_stored += buckets.rows.len();
        (groups, buckets)
    }

    /// Stores what the service stores right before a checkpoint (idle groups and buckets, and
    /// settled events), without dropping it from memory: a process that dies before its
    /// checkpoint stops here.
    pub fn store_idle(&mut self, engine: &Engine, version: u64) {
        self.store_evictions(engine, version);
        self.put_groups(&engine.foldable().rows, version);
    }

    /// Stores and drops from memory what the service does right before a checkpoint: the idle
    /// groups and buckets, then the settled events of the leads left. Returns the groups
    /// evicted.
    pub fn evict_idle(&mut self, engine: &mut Engine, version: u64) -> usize {
        let (groups, buckets) = self.store_evictions(engine, version);
        engine.evict(&groups);
        engine.evict_buckets(buckets);
        let folds = engine.foldable();
        self.put_groups(&folds.rows, version);
        self.events_folded += folds.events;
        engine.fold(folds);
        groups.len()
    }

    /// Reads back the groups `engine` asks for until it asks for none; what the parked events
    /// did once applied.
    pub fn reload(&mut self, engine: &mut Engine) -> Vec<leadstream_aggregator::engine::Ingested> {
        let mut done = Vec::new();
        loop {
            let asked = engine.take_reloads();
            if asked.is_empty() {
                return done;
            }
            let rows: Vec<EvictedRow> = asked
                .iter()
                .filter_map(|k| self.rows.get(k).cloned())
                .collect();
            let r = engine.reload(asked, &rows);
            self.groups_reloaded += r.groups;
            self.fold_rows_read += r.unfolded;
            done.extend(r.applied.into_iter().map(|(_, r)| r));
        }
    }

    /// Completes `out`'s rows of buckets that may be stored, as the service does before it
    /// writes them.
    pub fn resolve(&mut self, engine: &mut Engine, out: &mut Output) {
        let rows: Vec<EvictedRow> = out
            .unresolved
            .keys()
            .iter()
            .filter_map(|k| self.rows.get(k).cloned())
            .collect();
        self.buckets_read += engine.resolve(out, &rows);
    }
}
