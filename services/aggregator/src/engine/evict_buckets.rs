//! Rollup buckets leaving memory with the idle leads, and their counts read back when a change
//! touches them (why this stays exact: `crate::rollup::evict`).

use super::evict::EvictedRow;
use super::{Engine, Output};
use crate::internal_events as events;
use crate::rollup::{
    Changed, CohortKey, CohortRollupRow, Held, IdleBuckets, ReachKey, ReachRollupRow, RollupRow,
    Rollups, TransitionKey, TransitionRollupRow, MINUTE_MS,
};
use rustc_hash::FxHashMap as HashMap;

/// Rollup rows whose count is a change to a stored count not read yet: the caller reads the
/// stored counts of [`Self::keys`] and hands them to [`Engine::resolve`] before writing.
#[derive(Debug, Default)]
pub struct Unresolved {
    cohort: Vec<(CohortRollupRow, Option<CohortKey>)>,
    reach: Vec<(ReachRollupRow, Option<ReachKey>)>,
    transitions: Vec<(TransitionRollupRow, Option<TransitionKey>)>,
}

impl Unresolved {
    /// The stored keys to read.
    pub fn keys(&self) -> Vec<String> {
        let cohort = self.cohort.iter().map(|(r, _)| r.store_key());
        let reach = self.reach.iter().map(|(r, _)| r.store_key());
        let transitions = self.transitions.iter().map(|(r, _)| r.store_key());
        cohort.chain(reach).chain(transitions).collect()
    }

    /// Rows waiting.
    pub fn len(&self) -> usize {
        self.cohort.len() + self.reach.len() + self.transitions.len()
    }

    /// Whether no row waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A stale row of a bucket that is not held and may be stored: written as its stored count.
    pub(super) fn add_stale(&mut self, stale: Output) {
        self.cohort.extend(without_cell(stale.cohort_rollup));
        self.reach.extend(without_cell(stale.reach_rollup));
        self.transitions
            .extend(without_cell(stale.transition_rollup));
    }
}

/// One bucket count to store.
#[derive(Debug, Clone)]
pub struct EvictedBucket {
    /// Partition of the leads it counts.
    pub partition: u32,
    /// `b:` key (see [`RollupRow::store_key`]).
    pub key: String,
    /// Its count.
    pub count: i64,
}

/// Buckets leaving memory: store [`Self::rows`], then [`Engine::evict_buckets`].
#[derive(Debug, Default)]
pub struct BucketEviction {
    /// What to store.
    pub rows: Vec<EvictedBucket>,
    idle: IdleBuckets,
}

/// A stored count as bytes.
pub fn count_bytes(count: i64) -> [u8; 8] {
    count.to_le_bytes()
}

impl Engine {
    /// The buckets of minutes more than `state.rollup_idle_after` before their partition's
    /// newest event (none unless leads are evicted). Call right after a resolved flush.
    pub fn idle_buckets(&self) -> BucketEviction {
        let Some(idle) = self.evicted.rollup_idle_ms() else {
            return BucketEviction::default();
        };
        let horizons = self
            .own
            .owned()
            .filter(|p| self.newest[*p as usize] != i64::MIN)
            .map(|p| {
                let first_kept = self.newest[p as usize].saturating_sub(idle);
                (p as u16, first_kept.div_euclid(MINUTE_MS) as i32)
            });
        let idle = self.rollups.idle(horizons);
        let mut out = Output::default();
        self.render_rollups(idle.buckets.clone(), &mut out, 0);
        fn stored<R: RollupRow>(rows: &[R]) -> impl Iterator<Item = EvictedBucket> + '_ {
            rows.iter().map(|r| EvictedBucket {
                partition: u32::from(r.at().0),
                key: r.store_key(),
                count: r.count(),
            })
        }
        let rows = stored(&out.cohort_rollup)
            .chain(stored(&out.reach_rollup))
            .chain(stored(&out.transition_rollup))
            .collect();
        BucketEviction { rows, idle }
    }

    /// Drops the buckets of `e` from memory (stored since, nothing changed).
    pub fn evict_buckets(&mut self, e: BucketEviction) {
        self.rollups.evict(e.idle);
    }

    /// The flush's rows of buckets that may be stored, with their changes.
    pub(super) fn unresolved_rows(&self, unknown: Changed, version: u64) -> Unresolved {
        let keys = (
            unknown.cohort.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            unknown.reach.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            unknown
                .transitions
                .iter()
                .map(|(k, _)| *k)
                .collect::<Vec<_>>(),
        );
        let mut out = Output::default();
        self.render_rollups(unknown, &mut out, version);
        Unresolved {
            cohort: with_cells(out.cohort_rollup, keys.0),
            reach: with_cells(out.reach_rollup, keys.1),
            transitions: with_cells(out.transition_rollup, keys.2),
        }
    }

    /// Completes `out.unresolved` with the stored counts `found` (read for its keys) and moves
    /// those rows to the ones to write. Returns how many keys had a stored count of this era.
    pub fn resolve(&mut self, out: &mut Output, found: &[EvictedRow]) -> usize {
        let mut stored: HashMap<&str, i64> = HashMap::default();
        for r in found {
            if !self.evicted.counts(r.partition, r.version) {
                continue;
            }
            match <[u8; 8]>::try_from(r.blob.as_slice()) {
                Ok(b) => stored.insert(&r.key, i64::from_le_bytes(b)),
                Err(_) => {
                    events::bucket_unreadable(&r.key, r.blob.len());
                    continue;
                }
            };
        }
        let u = std::mem::take(&mut out.unresolved);
        let rollups = &mut self.rollups;
        out.cohort_rollup
            .extend(resolved(u.cohort, &stored, rollups));
        out.reach_rollup.extend(resolved(u.reach, &stored, rollups));
        out.transition_rollup
            .extend(resolved(u.transitions, &stored, rollups));
        stored.len()
    }
}

fn without_cell<R, K>(rows: Vec<R>) -> impl Iterator<Item = (R, Option<K>)> {
    rows.into_iter().map(|r| (r, None))
}

fn with_cells<R, K>(rows: Vec<R>, keys: Vec<K>) -> Vec<(R, Option<K>)> {
    debug_assert_eq!(rows.len(), keys.len(), "one row per bucket, in order");
    rows.into_iter().zip(keys.into_iter().map(Some)).collect()
}

fn resolved<R: RollupRow, K: Held>(
    list: Vec<(R, Option<K>)>,
    stored: &HashMap<&str, i64>,
    rollups: &mut Rollups,
) -> Vec<R> {
    list.into_iter()
        .map(|(mut r, key)| {
            let s = stored.get(r.store_key().as_str()).copied().unwrap_or(0);
            let held = key.and_then(|k| rollups.resolve(&k, s));
            debug_assert!(key.is_none() || held.is_some(), "an unknown cell waits");
            r.set_count(held.unwrap_or(r.count() + s));
            r
        })
        .collect()
}
