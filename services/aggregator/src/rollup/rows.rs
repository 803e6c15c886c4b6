//! The rollup tables' rows, and the bucket each row counts.

use serde::Serialize;
use smol_str::SmolStr;

/// One row of `funnel_cohort_minute`.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Serialize, serde::Deserialize)]
pub struct CohortRollupRow {
    /// Funnel name.
    pub funnel: SmolStr,
    /// Start minute, epoch seconds.
    pub minute: u32,
    /// Partition of the leads' keys.
    pub partition: u16,
    /// First-touch channel.
    pub first_touch: SmolStr,
    /// Last-touch channel.
    pub last_touch: SmolStr,
    /// Variant.
    pub variant: SmolStr,
    /// Furthest main stage index.
    pub furthest_index: i8,
    /// Current main stage index (-1 for none).
    pub current_index: i8,
    /// Current stage (special while in one).
    pub current_stage: SmolStr,
    /// Lost.
    pub lost: u8,
    /// Leads.
    pub leads: i64,
    /// Row version.
    pub version: u64,
    /// 1: the bucket is empty now.
    pub is_deleted: u8,
}

/// One row of `funnel_reach_minute`.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Serialize, serde::Deserialize)]
pub struct ReachRollupRow {
    /// Funnel name.
    pub funnel: SmolStr,
    /// Minute of the first reach, epoch seconds.
    pub minute: u32,
    /// Partition of the leads' keys.
    pub partition: u16,
    /// First-touch channel.
    pub first_touch: SmolStr,
    /// Last-touch channel.
    pub last_touch: SmolStr,
    /// Variant.
    pub variant: SmolStr,
    /// Main stage index.
    pub stage_index: u8,
    /// Main stage name.
    pub stage: SmolStr,
    /// Leads that first reached the stage in this minute.
    pub leads: i64,
    /// Row version.
    pub version: u64,
    /// 1: the bucket is empty now.
    pub is_deleted: u8,
}

/// One row of `funnel_transition_minute`.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Serialize, serde::Deserialize)]
pub struct TransitionRollupRow {
    /// Funnel name.
    pub funnel: SmolStr,
    /// Minute of the transitions, epoch seconds.
    pub minute: u32,
    /// Partition of the leads' keys.
    pub partition: u16,
    /// First-touch channel.
    pub first_touch: SmolStr,
    /// Last-touch channel.
    pub last_touch: SmolStr,
    /// Variant.
    pub variant: SmolStr,
    /// Kind.
    pub kind: SmolStr,
    /// Stage left (empty when entering).
    pub from_stage: SmolStr,
    /// Stage entered (`lost` for a loss).
    pub to_stage: SmolStr,
    /// Reason.
    pub reason: SmolStr,
    /// Transitions.
    pub transitions: i64,
    /// Row version.
    pub version: u64,
    /// 1: the bucket is empty now.
    pub is_deleted: u8,
}

/// Where a rollup row's bucket lives: funnel, minute, partition and attribution.
pub type BucketScope = (SmolStr, u32, u16, SmolStr, SmolStr, SmolStr);
/// A cohort bucket: scope, furthest and current index, current stage, lost.
pub type CohortBucket = (BucketScope, (i8, i8, SmolStr, u8));
/// A reach bucket: scope and stage index.
pub type ReachBucket = (BucketScope, u8);
/// A transition bucket: scope, kind, from and to stage, reason.
pub type TransitionBucket = (BucketScope, (SmolStr, SmolStr, SmolStr, SmolStr));

impl CohortRollupRow {
    /// The bucket this row counts (the table's sorting key): rows with equal buckets replace
    /// each other.
    pub fn bucket(&self) -> CohortBucket {
        (
            scope(
                &self.funnel,
                self.minute,
                self.partition,
                &self.first_touch,
                &self.last_touch,
                &self.variant,
            ),
            (
                self.furthest_index,
                self.current_index,
                self.current_stage.clone(),
                self.lost,
            ),
        )
    }
}

impl ReachRollupRow {
    /// The bucket this row counts (the table's sorting key).
    pub fn bucket(&self) -> ReachBucket {
        (
            scope(
                &self.funnel,
                self.minute,
                self.partition,
                &self.first_touch,
                &self.last_touch,
                &self.variant,
            ),
            self.stage_index,
        )
    }
}

impl TransitionRollupRow {
    /// The bucket this row counts (the table's sorting key).
    pub fn bucket(&self) -> TransitionBucket {
        (
            scope(
                &self.funnel,
                self.minute,
                self.partition,
                &self.first_touch,
                &self.last_touch,
                &self.variant,
            ),
            (
                self.kind.clone(),
                self.from_stage.clone(),
                self.to_stage.clone(),
                self.reason.clone(),
            ),
        )
    }
}

fn scope(
    funnel: &SmolStr,
    minute: u32,
    partition: u16,
    first: &SmolStr,
    last: &SmolStr,
    variant: &SmolStr,
) -> BucketScope {
    (
        funnel.clone(),
        minute,
        partition,
        first.clone(),
        last.clone(),
        variant.clone(),
    )
}

/// Epoch seconds of a minute bucket (clamped to `DateTime`'s range).
pub fn minute_seconds(m: i32) -> u32 {
    (i64::from(m) * 60).clamp(0, i64::from(u32::MAX)) as u32
}

/// What the eviction of buckets needs of a rollup row.
pub trait RollupRow {
    /// The key its bucket is stored under in `aggregator_evicted` (from names, not symbols, so
    /// any engine reads it back).
    fn store_key(&self) -> String;
    /// Partition and epoch minute of its bucket.
    fn at(&self) -> (u16, i32);
    /// Its count.
    fn count(&self) -> i64;
    /// Sets its count (an empty bucket is a tombstone).
    fn set_count(&mut self, n: i64);
    /// Sets its version.
    fn set_version(&mut self, v: u64);
}

macro_rules! rollup_row {
    ($row:ty, $tag:literal, $count:ident) => {
        impl RollupRow for $row {
            fn store_key(&self) -> String {
                format!(concat!("b:", $tag, ":{:?}"), self.bucket())
            }
            fn at(&self) -> (u16, i32) {
                (self.partition, (self.minute / 60) as i32)
            }
            fn count(&self) -> i64 {
                self.$count
            }
            fn set_count(&mut self, n: i64) {
                self.$count = n;
                self.is_deleted = u8::from(n == 0);
            }
            fn set_version(&mut self, v: u64) {
                self.version = v;
            }
        }
    };
}
rollup_row!(CohortRollupRow, "c", leads);
rollup_row!(ReachRollupRow, "r", leads);
rollup_row!(TransitionRollupRow, "t", transitions);
