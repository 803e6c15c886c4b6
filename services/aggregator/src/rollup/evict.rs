//! Bucket eviction: buckets of minutes older than their partition's newest event minus
//! `state.rollup_idle_after` leave memory, their counts stored (`aggregator_evicted`, next to the idle
//! leads), and come back as soon as a change touches them.
//!
//! Why the counts stay exact: a bucket's count is the sum of what the leads counted in it
//! contribute, and a lead can change it at any age (a reloaded lead, a too-late event, a cohort
//! whose leads move on), so a bucket is never assumed final. Per partition a *horizon* says
//! which minutes may be stored; it only grows within an era and travels with the checkpoint.
//! Below it, a bucket not held is either stored or empty, so a change to it creates an
//! *unknown* cell holding just the change; the flush's rows for such cells wait until the
//! caller has read the stored counts (`Engine::resolve`): written count = stored + change.
//! Above it, a bucket not held is empty (nothing above it was ever stored in this era). A known
//! cell below the horizon is kept even at zero until it is stored again, so no stale stored
//! count can come back. Stored counts outside the era's valid versions (before a rebuild from
//! history, or written by a process after the checkpoint a restore came from) do not count: the
//! engine checks the versions like the leads' groups. A bucket read back is not stored again
//! until a checkpoint holding it is written (see [`super::table`]).

use super::table::{below, Bucket, Table};
use super::{Changed, CohortKey, ReachKey, Rollups, TransitionKey};
use rustc_hash::FxHashMap as HashMap;

/// A bucket kind's table in [`Rollups`].
pub trait Held: Bucket {
    /// The table of this kind.
    #[doc(hidden)]
    fn table(r: &mut Rollups) -> &mut Table<Self>;
}

impl Held for CohortKey {
    fn table(r: &mut Rollups) -> &mut Table<Self> {
        &mut r.cohort
    }
}

impl Held for ReachKey {
    fn table(r: &mut Rollups) -> &mut Table<Self> {
        &mut r.reach
    }
}

impl Held for TransitionKey {
    fn table(r: &mut Rollups) -> &mut Table<Self> {
        &mut r.transitions
    }
}

/// Buckets to store and the horizons they leave memory under.
#[derive(Debug, Default)]
pub struct IdleBuckets {
    /// Known, unchanged buckets of minutes below `horizons`, with their count (0 included).
    pub buckets: Changed,
    horizons: HashMap<u16, i32>,
}

impl Rollups {
    /// The buckets that may leave memory now: `horizons` gives, per partition, the first minute
    /// to keep (a horizon never moves back).
    pub fn idle(&self, horizons: impl IntoIterator<Item = (u16, i32)>) -> IdleBuckets {
        let horizons: HashMap<u16, i32> = horizons
            .into_iter()
            .map(|(p, h)| (p, self.horizons.get(&p).map_or(h, |old| h.max(*old))))
            .collect();
        IdleBuckets {
            buckets: Changed {
                cohort: self.cohort.idle(&horizons),
                reach: self.reach.idle(&horizons),
                transitions: self.transitions.idle(&horizons),
            },
            horizons,
        }
    }

    /// Drops the buckets of [`Self::idle`] (stored since, nothing changed) and moves the
    /// horizons.
    pub fn evict(&mut self, idle: IdleBuckets) {
        self.cohort.remove(&idle.buckets.cohort);
        self.reach.remove(&idle.buckets.reach);
        self.transitions.remove(&idle.buckets.transitions);
        self.horizons.extend(idle.horizons);
    }

    /// Adds the stored count to an unknown cell; its count then, or `None` when `key` is not an
    /// unknown cell.
    pub fn resolve<K: Held>(&mut self, key: &K, stored: i64) -> Option<i64> {
        K::table(self).resolve(key, stored)
    }

    /// Whether a bucket of `partition` and `minute` that is not held may be stored.
    pub fn may_be_stored(&self, partition: u16, minute: i32) -> bool {
        below(&self.horizons, partition, minute)
    }

    /// A checkpoint holding the buckets read back was written: they may leave again.
    pub fn checkpoint_written(&mut self) {
        self.cohort.checkpoint_written();
        self.reach.checkpoint_written();
        self.transitions.checkpoint_written();
    }

    /// Whether a cell waits for its stored count.
    pub fn any_unknown(&self) -> bool {
        self.cohort.any_unknown() || self.reach.any_unknown() || self.transitions.any_unknown()
    }
}
