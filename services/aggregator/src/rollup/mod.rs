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
use table::{Bucket, Table};

mod evict;
mod rows;
pub mod table;

pub use evict::{Held, IdleBuckets};
pub use rows::*;

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

/// Every bucket of the owned partitions.
#[derive(Debug, Default)]
pub struct Rollups {
    cohort: Table<CohortKey>,
    reach: Table<ReachKey>,
    transitions: Table<TransitionKey>,
    /// Per partition: buckets of earlier minutes may be stored (`evict`); none: all are held.
    horizons: HashMap<u16, i32>,
}

/// Buckets with a count: changed ones, ones to store, or all.
#[derive(Debug, Default, Clone)]
pub struct Changed {
    /// Cohort buckets.
    pub cohort: Vec<(CohortKey, i64)>,
    /// Reach buckets.
    pub reach: Vec<(ReachKey, i64)>,
    /// Transition buckets.
    pub transitions: Vec<(TransitionKey, i64)>,
}

/// The buckets of one partition as a checkpoint holds them (symbols as the writer interned them).
#[derive(Debug, Default, Serialize, serde::Deserialize)]
pub struct SavedRollups {
    cohort: Vec<(CohortKey, i64)>,
    reach: Vec<(ReachKey, i64)>,
    transitions: Vec<(TransitionKey, i64)>,
    /// Buckets of earlier minutes may be stored.
    horizon: Option<i32>,
}

impl SavedRollups {
    /// Whether buckets of the partition were stored.
    pub fn evicted(&self) -> bool {
        self.horizon.is_some()
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

macro_rules! bucket {
    ($key:ty) => {
        impl Bucket for $key {
            fn partition(&self) -> u16 {
                self.scope.partition
            }
            fn minute(&self) -> i32 {
                self.minute
            }
        }
    };
}
bucket!(CohortKey);
bucket!(ReachKey);
bucket!(TransitionKey);

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
        self.cohort.add(
            CohortKey {
                scope,
                minute: w[0] as i32,
                furthest: (w[2] >> 16) as u8 as i8,
                current_index: (w[2] >> 24) as u8 as i8,
                current: w[3] as u8,
                lost: (w[3] >> 8) & 1 == 1,
            },
            sign,
            &self.horizons,
        );
        for (stage, minute) in w[HEADER..HEADER + reaches].iter().enumerate() {
            self.reach.add(
                ReachKey {
                    scope,
                    minute: *minute as i32,
                    stage: stage as u8,
                },
                sign,
                &self.horizons,
            );
        }
        for s in w[HEADER + reaches..HEADER + reaches + 3 * steps].chunks_exact(3) {
            self.transitions.add(
                TransitionKey {
                    scope,
                    minute: s[0] as i32,
                    kind: s[2] as u8,
                    from: (s[2] >> 8) as u8,
                    to: (s[2] >> 16) as u8,
                    reason: s[1],
                },
                sign,
                &self.horizons,
            );
        }
    }

    /// The buckets changed since the last call (a change that cancelled out is included once
    /// more; writing an unchanged count is harmless): `(known, unknown)`, the unknown ones with
    /// the change to add to their stored count (see `evict`).
    pub fn take_changed(&mut self) -> (Changed, Changed) {
        let (cohort, cohort_unknown) = self.cohort.drain_changed(&self.horizons);
        let (reach, reach_unknown) = self.reach.drain_changed(&self.horizons);
        let (transitions, transitions_unknown) = self.transitions.drain_changed(&self.horizons);
        (
            Changed {
                cohort,
                reach,
                transitions,
            },
            Changed {
                cohort: cohort_unknown,
                reach: reach_unknown,
                transitions: transitions_unknown,
            },
        )
    }

    /// Every bucket held, by partition (for checkpoints; nothing is unknown right after a
    /// flush was resolved).
    pub fn export(&self) -> HashMap<u16, SavedRollups> {
        debug_assert!(!self.any_unknown(), "a checkpoint follows a resolved flush");
        let mut out: HashMap<u16, SavedRollups> = HashMap::default();
        for (k, n) in self.cohort.iter() {
            out.entry(k.scope.partition)
                .or_default()
                .cohort
                .push((k, n));
        }
        for (k, n) in self.reach.iter() {
            out.entry(k.scope.partition).or_default().reach.push((k, n));
        }
        for (k, n) in self.transitions.iter() {
            out.entry(k.scope.partition)
                .or_default()
                .transitions
                .push((k, n));
        }
        for (p, h) in &self.horizons {
            out.entry(*p).or_default().horizon = Some(*h);
        }
        out
    }

    /// Adds a checkpoint's buckets of `partition`, their symbols mapped to this engine's by
    /// `symbol`; they count as written (not changed).
    pub fn import(&mut self, partition: u16, saved: SavedRollups, symbol: impl Fn(u16) -> u16) {
        match saved.horizon {
            Some(h) => self.horizons.insert(partition, h),
            None => self.horizons.remove(&partition),
        };
        for (k, n) in saved.cohort {
            let scope = k.scope.remapped(&symbol);
            self.cohort.insert(CohortKey { scope, ..k }, n);
        }
        for (k, n) in saved.reach {
            let scope = k.scope.remapped(&symbol);
            self.reach.insert(ReachKey { scope, ..k }, n);
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
                .insert(TransitionKey { scope, reason, ..k }, n);
        }
    }

    /// Every bucket held with its count (what a restore compares stale rows with).
    pub fn all(&self) -> Changed {
        Changed {
            cohort: self.cohort.iter().collect(),
            reach: self.reach.iter().collect(),
            transitions: self.transitions.iter().collect(),
        }
    }

    /// Buckets held.
    pub fn len(&self) -> usize {
        self.cohort.len() + self.reach.len() + self.transitions.len()
    }

    /// Bytes the bucket tables hold (slots of their capacity; what a benchmark reports).
    pub fn table_bytes(&self) -> usize {
        self.cohort.bytes() + self.reach.bytes() + self.transitions.bytes()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
