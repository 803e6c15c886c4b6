//! Exact per-minute rollups of the funnel answers, kept by the engine as absolute counts per
//! partition of `leads.normalized`.
//!
//! Why absolute counts and not ± deltas: published rows are corrected in place (a late event
//! rewrites a lead), and a delta stream written at-least-once would double-count on every replay.
//! Instead the engine keeps, per lead and funnel, what the lead contributes to each rollup; when
//! a replay changes the lead it subtracts the old contribution and adds the new one, and writes
//! the buckets whose count changed with a newer version (`ReplacingMergeTree`, readers `FINAL`).
//! A replay writes the same absolute counts again, so it changes nothing. Buckets carry the
//! partition, so every bucket has exactly one writer at a time even with several aggregators;
//! readers sum over partitions.

use crate::funnel::Target;
use crate::machine::{Kind, Path, Reason};
use rustc_hash::FxHashMap as HashMap;
use serde::Serialize;
use smol_str::SmolStr;

/// Bucket width.
pub const MINUTE_MS: i64 = 60_000;

fn minute(ms: i64) -> i32 {
    ms.div_euclid(MINUTE_MS) as i32
}

/// A stage as one byte: 0 none, 1..=127 main stage + 1, 128.. special stage + 128.
fn stage_code(t: Option<Target>) -> u8 {
    match t {
        None => 0,
        Some(Target::Main(i)) => i + 1,
        Some(Target::Special(i)) => 128 + i,
    }
}

/// The stage a code stands for.
pub fn stage_of(code: u8) -> Option<Target> {
    match code {
        0 => None,
        c if c < 128 => Some(Target::Main(c - 1)),
        c => Some(Target::Special(c - 128)),
    }
}

/// A reason as four bytes: 0 none, rule index + 1 in the high half, event symbol in the low half.
fn reason_code(r: Option<Reason>) -> u32 {
    match r {
        None => 0,
        Some(Reason::Rule(i)) => (u32::from(i) + 1) << 16,
        Some(Reason::Event(s)) => u32::from(s),
    }
}

/// The reason a code stands for.
pub fn reason_of(code: u32) -> Option<Reason> {
    match (code >> 16, code & 0xffff) {
        (0, 0) => None,
        (0, s) => Some(Reason::Event(s as u16)),
        (r, _) => Some(Reason::Rule((r - 1) as u8)),
    }
}

/// First touch, last touch and variant symbols.
pub type Attribution = (u16, u16, u16);

/// Where a lead is counted: its partition, the funnel and its attribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub struct Scope {
    /// Partition of the lead's key.
    pub partition: u16,
    /// Funnel index.
    pub funnel: u8,
    /// Attribution.
    pub attribution: Attribution,
}

/// Cohort bucket: leads by start minute, furthest stage, current stage and lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub struct CohortKey {
    /// Where.
    pub scope: Scope,
    /// Start minute (epoch minutes).
    pub minute: i32,
    /// Furthest main stage index.
    pub furthest: i8,
    /// Current main stage index (-1 for none).
    pub current_index: i8,
    /// Current stage code (special while in one).
    pub current: u8,
    /// Currently lost.
    pub lost: bool,
}

/// Reach bucket: leads that first reached a main stage in a minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub struct ReachKey {
    /// Where.
    pub scope: Scope,
    /// Minute of the first reach.
    pub minute: i32,
    /// Main stage index.
    pub stage: u8,
}

/// Transition bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub struct TransitionKey {
    /// Where.
    pub scope: Scope,
    /// Minute of the transition.
    pub minute: i32,
    /// Kind index in [`Kind::ALL`].
    pub kind: u8,
    /// Stage left (code).
    pub from: u8,
    /// Stage entered (code; 0 for lost).
    pub to: u8,
    /// Reason code.
    pub reason: u32,
}

/// What one lead adds to the rollups of one funnel, as 32-bit words, so it can be taken back:
/// `[started minute, first | last << 16, variant | furthest << 16 | current_index << 24,
///   current | lost << 8 | reaches << 9 | steps << 16, reach minutes…, (minute, reason,
///   kind | from << 8 | to << 16) per step…]`; no words when the lead never entered the funnel.
/// Appended to a caller's buffer: the engine keeps them only for the leads of one flush.
pub fn write_contribution((first, last, variant): Attribution, path: &Path, w: &mut Vec<u32>) {
    let Some(start) = path.transitions.first() else {
        return;
    };
    // Main stages are at most 127 (stage codes); transitions are capped like the rows.
    let reaches = path.reached_at.len().min(127);
    let steps = path.transitions.len().min(u16::MAX as usize);
    w.reserve(HEADER + reaches + 3 * steps);
    let byte = |v: i8| u32::from(v as u8);
    w.push(minute(start.time_ms) as u32);
    w.push(u32::from(first) | u32::from(last) << 16);
    w.push(
        u32::from(variant)
            | byte(path.furthest.map_or(-1, |f| f as i8)) << 16
            | byte(path.current.map_or(-1, |c| c as i8)) << 24,
    );
    let current = stage_code(
        path.special
            .map(Target::Special)
            .or(path.current.map(Target::Main)),
    );
    w.push(
        u32::from(current)
            | u32::from(path.lost) << 8
            | (reaches as u32) << 9
            | (steps as u32) << 16,
    );
    w.extend(path.reached_at[..reaches].iter().map(|t| minute(*t) as u32));
    for t in &path.transitions[..steps] {
        let kind = Kind::ALL.iter().position(|k| *k == t.kind).unwrap_or(0) as u32;
        w.push(minute(t.time_ms) as u32);
        w.push(reason_code(t.reason));
        w.push(kind | u32::from(stage_code(t.from)) << 8 | u32::from(stage_code(t.to)) << 16);
    }
}

const HEADER: usize = 4;

#[derive(Debug, Default, Clone, Copy)]
struct Cell {
    count: i64,
    /// Changed since the last [`Rollups::take_changed`].
    dirty: bool,
}

/// Every bucket of the owned partitions.
#[derive(Debug, Default)]
pub struct Rollups {
    cohort: HashMap<CohortKey, Cell>,
    reach: HashMap<ReachKey, Cell>,
    transitions: HashMap<TransitionKey, Cell>,
}

fn add<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Cell>, key: K, by: i64) {
    let c = map.entry(key).or_default();
    c.count += by;
    c.dirty = true;
}

/// Buckets whose count changed, with their new count (0: the bucket is gone).
#[derive(Debug, Default)]
pub struct Changed {
    /// Cohort buckets.
    pub cohort: Vec<(CohortKey, i64)>,
    /// Reach buckets.
    pub reach: Vec<(ReachKey, i64)>,
    /// Transition buckets.
    pub transitions: Vec<(TransitionKey, i64)>,
}

fn drain_dirty<K: Copy + std::hash::Hash + Eq>(map: &mut HashMap<K, Cell>) -> Vec<(K, i64)> {
    let mut out = Vec::new();
    map.retain(|k, c| {
        if c.dirty {
            out.push((*k, c.count));
            c.dirty = false;
        }
        c.count != 0
    });
    out
}

/// The buckets of one partition as a checkpoint holds them (symbols as the writer interned them).
#[derive(Debug, Default, Serialize, serde::Deserialize)]
pub struct SavedRollups {
    cohort: Vec<(CohortKey, i64)>,
    reach: Vec<(ReachKey, i64)>,
    transitions: Vec<(TransitionKey, i64)>,
}

fn export<K: Copy>(
    map: &HashMap<K, Cell>,
    partition: impl Fn(&K) -> u16,
    out: &mut HashMap<u16, SavedRollups>,
    list: impl Fn(&mut SavedRollups) -> &mut Vec<(K, i64)>,
) {
    for (k, c) in map {
        list(out.entry(partition(k)).or_default()).push((*k, c.count));
    }
}

impl Scope {
    fn remapped(self, symbol: &impl Fn(u16) -> u16) -> Self {
        let (first, last, variant) = self.attribution;
        Self {
            attribution: (symbol(first), symbol(last), symbol(variant)),
            ..self
        }
    }
}

impl Rollups {
    /// Adds (`sign` 1) or takes back (`sign` -1) a lead's contribution to funnel `funnel`;
    /// `partition` is the lead key's.
    pub fn apply(&mut self, partition: u16, funnel: u8, w: &[u32], sign: i64) {
        if w.len() < HEADER {
            return;
        }
        let scope = Scope {
            partition,
            funnel,
            attribution: (w[1] as u16, (w[1] >> 16) as u16, w[2] as u16),
        };
        let (reaches, steps) = ((w[3] >> 9 & 0x7f) as usize, (w[3] >> 16) as usize);
        add(
            &mut self.cohort,
            CohortKey {
                scope,
                minute: w[0] as i32,
                furthest: (w[2] >> 16) as u8 as i8,
                current_index: (w[2] >> 24) as u8 as i8,
                current: w[3] as u8,
                lost: (w[3] >> 8) & 1 == 1,
            },
            sign,
        );
        for (stage, minute) in w[HEADER..HEADER + reaches].iter().enumerate() {
            add(
                &mut self.reach,
                ReachKey {
                    scope,
                    minute: *minute as i32,
                    stage: stage as u8,
                },
                sign,
            );
        }
        for s in w[HEADER + reaches..HEADER + reaches + 3 * steps].chunks_exact(3) {
            add(
                &mut self.transitions,
                TransitionKey {
                    scope,
                    minute: s[0] as i32,
                    kind: s[2] as u8,
                    from: (s[2] >> 8) as u8,
                    to: (s[2] >> 16) as u8,
                    reason: s[1],
                },
                sign,
            );
        }
    }

    /// The buckets changed since the last call (a change that cancelled out is included once
    /// more; writing an unchanged count is harmless).
    pub fn take_changed(&mut self) -> Changed {
        Changed {
            cohort: drain_dirty(&mut self.cohort),
            reach: drain_dirty(&mut self.reach),
            transitions: drain_dirty(&mut self.transitions),
        }
    }

    /// Every bucket, by partition (for checkpoints).
    pub fn export(&self) -> HashMap<u16, SavedRollups> {
        let mut out = HashMap::default();
        export(
            &self.cohort,
            |k| k.scope.partition,
            &mut out,
            |s| &mut s.cohort,
        );
        export(
            &self.reach,
            |k| k.scope.partition,
            &mut out,
            |s| &mut s.reach,
        );
        export(
            &self.transitions,
            |k| k.scope.partition,
            &mut out,
            |s| &mut s.transitions,
        );
        out
    }

    /// Adds a checkpoint's buckets, their symbols mapped to this engine's by `symbol`; they
    /// count as written (not changed).
    pub fn import(&mut self, saved: SavedRollups, symbol: impl Fn(u16) -> u16) {
        let cell = |count| Cell {
            count,
            dirty: false,
        };
        for (k, n) in saved.cohort {
            let scope = k.scope.remapped(&symbol);
            self.cohort.insert(CohortKey { scope, ..k }, cell(n));
        }
        for (k, n) in saved.reach {
            let scope = k.scope.remapped(&symbol);
            self.reach.insert(ReachKey { scope, ..k }, cell(n));
        }
        for (k, n) in saved.transitions {
            let scope = k.scope.remapped(&symbol);
            // An event's reason is a symbol too (a rule's is its index: the configuration, which
            // the checkpoint must match).
            let reason = match k.reason >> 16 {
                0 => u32::from(symbol(k.reason as u16)),
                _ => k.reason,
            };
            self.transitions
                .insert(TransitionKey { scope, reason, ..k }, cell(n));
        }
    }

    /// Every bucket with its count (what a restore compares stale rows with).
    pub fn all(&self) -> Changed {
        fn of<K: Copy>(map: &HashMap<K, Cell>) -> Vec<(K, i64)> {
            map.iter().map(|(k, c)| (*k, c.count)).collect()
        }
        Changed {
            cohort: of(&self.cohort),
            reach: of(&self.reach),
            transitions: of(&self.transitions),
        }
    }

    /// Buckets held.
    pub fn len(&self) -> usize {
        self.cohort.len() + self.reach.len() + self.transitions.len()
    }

    /// Bytes the bucket tables hold (slots of their capacity; what a benchmark reports).
    pub fn table_bytes(&self) -> usize {
        fn of<K>(map: &HashMap<K, Cell>) -> usize {
            map.capacity() * (std::mem::size_of::<(K, Cell)>() + 1)
        }
        of(&self.cohort) + of(&self.reach) + of(&self.transitions)
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

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
