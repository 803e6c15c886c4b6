//! Settled events: the inputs of a lead older than every partition's newest event minus the
//! allowed lateness are *settled*, and those a replay can do without leave memory, stored in
//! `aggregator_evicted` (one row per lead or device and fold, `s:l:<lead>#n`, `s:d:<device>#n`).
//! What stays of a lead's settled history is its summary: the events that changed its path, the
//! ones its rule counts still need, and the few attribution reads. A lead's memory then grows
//! with its stage changes, not with its events (an ad-heavy device's hundreds of exposures).
//!
//! Why the summary continues exactly. Let P be a lead's settled inputs (sorted), R ⊆ P what is
//! kept, and Q any continuation, every event of which is later than all of P (an input that is
//! not, or a copy of an event that may be a stored one, brings the stored events back first:
//! below). For each funnel (`machine::mark_needed`) an event of P is dropped only when it did
//! not change the path and every rule it matched had already counted up to its
//! `Occurrence::saturation`, from which on counts are admitted alike. The first matches of each
//! rule below its saturation are all kept, so replaying R counts every kept match into the
//! same class as replaying P does: the same rule acts on every kept event, with the same
//! effect, and the dropped ones stay no-ops; R ends in the state P ends in (counts in the same
//! classes), so R·Q replays as P·Q, transition for transition, with the same causing events.
//! Attribution (`attribution::mark_needed`) reads only the first signup, the first event with a
//! variant, and touches: with the first signup in P, the two touches it picks (Q is later than
//! the signup, so none of Q is a last touch); without one, a later signup's lookback may start
//! anywhere, so the first touch and the last touch of every run of touches with one channel are
//! kept: the earliest kept touch at or after any instant has the channel of the earliest touch
//! at or after it. Rows and rollup contributions are functions of the path, its causing events
//! and the attribution, so they do not change: folding is not a change, and needs no flush.
//!
//! When P's summary cannot absorb an input, the stored events come back first (`unfold`). Only
//! an engine owning every partition folds, as only it evicts. A lead put back is not folded
//! again before a checkpoint holding it is written: its next fold's first row replaces the
//! stored one that checkpoint may still refer to. An entity with [`MAX_ROWS`] rows is read
//! back at the next flush, so its next fold writes one.

use super::attribution;
use super::compact::CompactEvent;
use super::evict::EvictedGroup;
use super::identity::device_lead;
use super::saved::{SavedEvent, SymbolsOut};
use super::Engine;
use crate::machine::mark_needed;
use rustc_hash::FxHashSet as HashSet;
use serde::{Deserialize, Serialize};
use smol_str::SmolStr;

/// What a lead or a device has of its events stored instead of held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Settled {
    /// Every event stored is earlier than this (event time, epoch ms).
    pub(super) before_ms: i64,
    /// Events stored (a device's still count against its touch cap).
    pub(super) events: u32,
    /// Rows they are stored in: `#1` to `#rows`.
    pub(super) rows: u16,
}

/// Rows an entity's stored events may span before it is read back and folded into one.
pub const MAX_ROWS: u16 = 16;

/// Units with fewer settled inputs than this are not folded unless configured otherwise: a
/// handful of events costs less to hold than a fold and its reads.
pub const DEFAULT_FOLD_MIN: usize = 8;

/// A lead or a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Entity {
    Lead(SmolStr),
    Device(SmolStr),
}

impl Entity {
    pub(super) fn row(&self, n: u16) -> String {
        match self {
            Self::Lead(k) => format!("s:l:{k}#{n}"),
            Self::Device(d) => format!("s:d:{d}#{n}"),
        }
    }

    pub(super) fn name(&self) -> &SmolStr {
        match self {
            Self::Lead(k) | Self::Device(k) => k,
        }
    }

    /// The entity a row key names, if it is a fold's row.
    pub(super) fn of_row(key: &str) -> Option<Self> {
        let (name, _) = key.rsplit_once('#')?;
        match (name.strip_prefix("s:l:"), name.strip_prefix("s:d:")) {
            (Some(l), _) => Some(Self::Lead(l.into())),
            (_, Some(d)) => Some(Self::Device(d.into())),
            _ => None,
        }
    }
}

/// Whether `key` is a fold's row (`s:…`).
pub(super) fn is_row(key: &str) -> bool {
    key.starts_with("s:")
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct SavedFold {
    pub(super) symbols: Vec<String>,
    pub(super) events: Vec<SavedEvent>,
}

/// Settled events that may leave memory: store [`Self::rows`], then [`Engine::fold`].
#[derive(Debug, Default)]
pub struct Folds {
    /// One row per entity: its key (`s:l:<lead>#n`, `s:d:<device>#n`) and its events.
    pub rows: Vec<EvictedGroup>,
    /// Events the rows hold.
    pub events: usize,
    drops: Vec<(Entity, u32, HashSet<[u64; 2]>)>,
    before_ms: i64,
}

impl Engine {
    /// Folds only units with at least `n` settled inputs.
    pub fn set_fold_min(&mut self, n: usize) {
        self.fold_min = n.max(1);
    }

    /// The events `e`, one of a unit's entities (so in memory), holds.
    fn held_of(&self, e: &Entity) -> &[CompactEvent] {
        match e {
            Entity::Lead(k) => &self.leads[k].events,
            Entity::Device(d) => &self.devices[d].touches,
        }
    }

    /// Every lead this engine replays: its entries and the devices that are leads of their own.
    fn unit_keys(&self) -> Vec<SmolStr> {
        let bare = self
            .devices
            .iter()
            .filter(|(d, dev)| dev.holds_own() && !self.leads.contains_key(&*device_lead(d)))
            .map(|(d, _)| SmolStr::from(device_lead(d)));
        self.leads.keys().cloned().chain(bare).collect()
    }

    /// The settled events that may leave memory now (call right after a flush, and after
    /// [`Self::evict`]); store the rows, then [`Self::fold`].
    pub fn foldable(&self) -> Folds {
        let lateness = self.lateness_ms;
        let Some(before_ms) = self
            .own
            .owned()
            .map(|p| self.newest[p as usize])
            .filter(|n| *n != i64::MIN)
            .min()
            .map(|n| n.saturating_sub(lateness))
        else {
            return Folds::default();
        };
        if !self.evicted.evicting() {
            return Folds::default();
        }
        let mut folds = Folds {
            before_ms,
            ..Folds::default()
        };
        let mut merged: Vec<CompactEvent> = Vec::new();
        let mut needed: Vec<bool> = Vec::new();
        for key in self.unit_keys() {
            let unit = self.unit(&key);
            let held: usize = unit.iter().map(|e| self.held_of(e).len()).sum();
            if held < self.fold_min || unit.iter().any(|e| self.evicted.is_recent(e.name())) {
                continue;
            }
            self.inputs(&key, &mut merged);
            let settled = merged.partition_point(|e| e.time_ms() < before_ms);
            if settled < self.fold_min {
                continue;
            }
            needed.clear();
            needed.resize(merged.len(), false);
            needed[settled..].fill(true);
            for funnel in &self.funnels.funnels {
                mark_needed(
                    funnel,
                    merged.iter().map(|e| e.step(&self.masks)),
                    &mut needed,
                );
            }
            attribution::mark_needed(&merged[..settled], self.lookback_ms, &mut needed);
            // By id: an id held twice in one lead (a copy under two of its keys, until the
            // copies are settled) is dropped only when neither is needed.
            let kept: HashSet<[u64; 2]> = merged
                .iter()
                .zip(&needed)
                .filter(|(_, n)| **n)
                .map(|(e, _)| e.id)
                .collect();
            let dropped: HashSet<[u64; 2]> = merged
                .iter()
                .map(|e| e.id)
                .filter(|id| !kept.contains(id))
                .collect();
            // A lead keeps at least one event (its entry is dropped when it has none).
            if dropped.is_empty() || kept.is_empty() {
                continue;
            }
            let partition = self.own.partition(&key);
            for entity in unit {
                let held = self.held_of(&entity);
                let mut out = SymbolsOut::used();
                let events: Vec<SavedEvent> = held
                    .iter()
                    .filter(|e| dropped.contains(&e.id))
                    .map(|e| self.save_event(e, &mut out))
                    .collect();
                if events.is_empty() {
                    continue;
                }
                let rows = self.settled_of(&entity).map_or(0, |s| s.rows);
                if rows >= MAX_ROWS {
                    continue;
                }
                folds.events += events.len();
                let ids = held
                    .iter()
                    .filter(|e| dropped.contains(&e.id))
                    .map(|e| e.id)
                    .collect();
                let blob = SavedFold {
                    symbols: out.names(self),
                    events,
                };
                folds.rows.push(EvictedGroup {
                    partition,
                    keys: vec![entity.row(rows + 1)],
                    blob: postcard::to_stdvec(&blob).expect("a fold always serializes"),
                });
                folds.drops.push((entity, partition, ids));
            }
        }
        folds
    }

    /// Drops the events of [`Self::foldable`] (stored since, nothing changed) from memory.
    pub fn fold(&mut self, folds: Folds) {
        let before_ms = folds.before_ms;
        let mut full: Vec<Entity> = Vec::new();
        for (entity, partition, ids) in folds.drops {
            let Some((held, settled)) = self.entity_mut(&entity) else {
                continue;
            };
            held.retain(|e| !ids.contains(&e.id));
            held.shrink_to_fit();
            let s = settled.get_or_insert_with(|| {
                Box::new(Settled {
                    before_ms,
                    events: 0,
                    rows: 0,
                })
            });
            s.before_ms = s.before_ms.max(before_ms);
            s.events += ids.len() as u32;
            s.rows += 1;
            if s.rows >= MAX_ROWS {
                full.push(entity.clone());
            }
            let filter = self.evicted.filter(partition);
            for id in ids {
                filter.insert(id);
            }
        }
        for entity in full {
            // Read back at the next flush; folded again, into one row, after a checkpoint.
            let holder = match &entity {
                Entity::Lead(k) => Some(k.clone()),
                Entity::Device(d) => self.devices.get(d).map(|dev| dev.holder_with_touches(d)),
            };
            if let Some(h) = holder {
                self.want_unfold(&h);
            }
        }
        self.forget_evicted_ids();
    }
}
