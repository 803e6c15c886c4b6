//! The aggregator's state: every lead's distinct events (compact), identity stitching of devices
//! to users, and what was last published per lead. Pure: events go in, ClickHouse rows come out.
//!
//! Why whole-lead replays: a lead has a handful of events, so replaying all of them whenever one
//! arrives costs little and makes late, out-of-order and duplicate events a non-issue: the result
//! is by construction the batch pass over the lead's events sorted by event time. Published rows
//! are replaced (newer version) when a replay changes them, so answers already shown are
//! corrected in place.
//!
//! One job per module: `compact` how an event is held, `identity` leads, devices and the
//! claims that stitch them, `stitch` what other members consumed, `winner` one copy per event
//! id, `ledger` what a lead published before its inputs changed, `attribution`, `render`
//! the rows, `memory` the footprint, `evict` and `evict_buckets` idle leads and rollup buckets
//! leaving memory, `fold` and `unfold` settled events leaving it and coming back, `checkpoint` and `saved` the state as
//! bytes. This file is the facade: `ingest` and `flush`.

use self::attribution::attribute;
use self::compact::{parse_id, CompactEvent, Masks, Role, Symbols};
use self::identity::{Device, Lead};
use self::ledger::{fingerprint, Snapshots, DIRTY_KEPT, NEVER};
use self::stitch::trigger;
use self::winner::{judge, Judged};
use crate::copies::{Copies, MinuteTombstoneRow};
use crate::funnel::Funnels;
use crate::machine::{replay_into, Path};
use crate::rollup::{
    write_contribution, CohortRollupRow, ReachRollupRow, Rollups, TransitionRollupRow,
};
use crate::rows::{LateEventRow, LeadFunnelRow, TransitionRow};
use leadstream_schemas::{EventType, NormalizedEvent};
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use smol_str::SmolStr;
use std::sync::Arc;

mod attribution;
mod checkpoint;
mod compact;
mod evict;
mod evict_buckets;
mod fold;
mod identity;
mod ledger;
mod memory;
mod ownership;
mod reload;
mod render;
mod saved;
mod stitch;
mod unfold;
mod winner;

pub use checkpoint::{CheckpointError, Stale, FORMAT as CHECKPOINT_FORMAT};
pub use evict::{EvictedGroup, EvictedRow};
pub use evict_buckets::{count_bytes, BucketEviction, EvictedBucket, Unresolved};
pub use fold::{Folds, DEFAULT_FOLD_MIN, MAX_ROWS as MAX_FOLD_ROWS};
pub use identity::device_lead;
pub use memory::Footprint;
pub use ownership::Ownership;
pub use reload::Reloaded;
pub use stitch::{ClaimRecord, Lookup};

/// Breakdown value for a lead without a channel or a variant (matches the generator's truth).
pub const NONE: &str = "none";

/// What happened to one ingested event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    /// Its event id was already known: nothing changes.
    Duplicate,
    /// A key it reads may be evicted: it is applied when the caller reloads (see `evict`).
    Parked,
    /// Applied.
    Applied {
        /// It sorted before an event its lead already had: published history gets rewritten.
        correction: bool,
        /// Older than the newest event time seen.
        late: bool,
        /// Older than the newest event time seen minus the allowed lateness (also applied, and
        /// recorded in `late_events`).
        too_late: bool,
    },
}

/// Rows a flush produced.
#[derive(Debug, Default)]
pub struct Output {
    /// Transition rows and tombstones.
    pub transitions: Vec<TransitionRow>,
    /// Lead state rows and tombstones.
    pub leads: Vec<LeadFunnelRow>,
    /// Events later than the allowed lateness since the last flush.
    pub late_events: Vec<LateEventRow>,
    /// Live transition rows written, by kind (rewrites included), in [`crate::machine::Kind::ALL`] order.
    pub by_kind: [u64; 6],
    /// Leads replayed.
    pub replayed: u64,
    /// Cohort rollup buckets that changed.
    pub cohort_rollup: Vec<CohortRollupRow>,
    /// Reach rollup buckets that changed.
    pub reach_rollup: Vec<ReachRollupRow>,
    /// Transition rollup buckets that changed.
    pub transition_rollup: Vec<TransitionRollupRow>,
    /// `lead_events_by_minute` rows hiding losing copies.
    pub minute_tombstones: Vec<MinuteTombstoneRow>,
    /// Rollup rows of buckets that may be stored: written once [`Engine::resolve`] completed
    /// them.
    pub unresolved: Unresolved,
}

/// The aggregator's state machine over all leads.
pub struct Engine {
    funnels: Arc<Funnels>,
    symbols: Symbols,
    masks: Masks,
    leads: HashMap<SmolStr, Lead>,
    devices: HashMap<SmolStr, Device>,
    /// Device leads held without an entry in `leads` (see [`Lead`]).
    bare_device_leads: usize,
    /// Leads to replay at the next flush, with what they had published before their inputs
    /// changed. Kept only for these: holding every lead's published rows and rollup
    /// contribution was a third of the memory per lead, and a lead's published state is by
    /// construction the replay of its inputs at the last flush, so it is recomputed (once per
    /// flush) just before the first change.
    /// Values: where the lead's snapshot starts in `snapshots.published`, or [`NEVER`].
    dirty: HashMap<SmolStr, u32>,
    snapshots: Snapshots,
    /// Scratch for a lead's merged inputs, its path and its contribution.
    merged: Vec<CompactEvent>,
    path: Path,
    words: Vec<u32>,
    /// Scratch for building a lead key (`device_for_change`).
    key_scratch: String,
    /// Newest event time per partition: lateness is judged within the event's own partition,
    /// whose messages arrive in order, so partitions catching up at different paces do not make
    /// each other's events look late.
    newest: Vec<i64>,
    lateness_ms: i64,
    late: Vec<LateEventRow>,
    own: Ownership,
    lookups: HashMap<SmolStr, u8>,
    notify: HashSet<SmolStr>,
    /// Copies of event ids under other leads, for their owners to drop: (lead, type, id).
    notify_copies: HashSet<(SmolStr, EventType, String)>,
    rollups: Rollups,
    copies: Copies,
    /// Touches kept per device; more are counted and dropped (a hot key).
    touch_cap: usize,
    /// Touches this long before a signup still attribute it (`attribution.lookback`).
    lookback_ms: i64,
    evicted: evict::Evicted,
    /// Leads with fewer settled inputs are not folded (`fold`).
    fold_min: usize,
}

/// Touches a device keeps unless configured otherwise (`state.max_touches_per_device`).
pub const DEFAULT_TOUCH_CAP: usize = 10_000;

/// The attribution lookback unless configured otherwise (`attribution.lookback`): 30 days.
pub const DEFAULT_LOOKBACK_MS: i64 = 30 * 86_400_000;

impl Engine {
    /// An empty engine owning every lead; events older than the newest seen minus `lateness_ms`
    /// count as too late.
    pub fn new(funnels: Arc<Funnels>, lateness_ms: i64) -> Self {
        Self::with_ownership(funnels, lateness_ms, Ownership::all())
    }

    /// An empty engine publishing only the leads `own` names.
    pub fn with_ownership(funnels: Arc<Funnels>, lateness_ms: i64, own: Ownership) -> Self {
        let copies = Copies::new(!own.owns_all());
        let own_partitions = own.partitions();
        Self {
            funnels,
            symbols: Symbols::new(),
            masks: Masks::default(),
            leads: HashMap::default(),
            devices: HashMap::default(),
            bare_device_leads: 0,
            dirty: HashMap::default(),
            snapshots: Snapshots::default(),
            merged: Vec::new(),
            path: Path::default(),
            words: Vec::new(),
            key_scratch: String::new(),
            newest: vec![i64::MIN; own.partitions() as usize],
            lateness_ms,
            late: Vec::new(),
            own,
            lookups: HashMap::default(),
            notify: HashSet::default(),
            notify_copies: HashSet::default(),
            rollups: Rollups::default(),
            copies,
            touch_cap: DEFAULT_TOUCH_CAP,
            lookback_ms: DEFAULT_LOOKBACK_MS,
            evicted: evict::Evicted::new(own_partitions),
            fold_min: DEFAULT_FOLD_MIN,
        }
    }

    /// Keeps at most `cap` touches per device: a placeholder id the screening missed, or a
    /// bot, would otherwise pile every touch onto one key and replay it on each new one.
    pub fn set_touch_cap(&mut self, cap: usize) {
        self.touch_cap = cap.max(1);
    }

    /// Touches more than `ms` before a lead's signup do not attribute it.
    pub fn set_lookback(&mut self, ms: i64) {
        self.lookback_ms = ms.max(0);
    }

    /// Which leads this engine publishes.
    pub fn ownership(&self) -> &Ownership {
        &self.own
    }

    /// Leads held (users and unclaimed devices).
    pub fn leads_held(&self) -> usize {
        self.leads.len() + self.bare_device_leads
    }

    /// Devices held.
    pub fn devices_held(&self) -> usize {
        self.devices.len()
    }

    /// Events held in memory, of leads and devices (a pass over the state: for checkpoints
    /// and benchmarks, not for every flush).
    pub fn events_held(&self) -> usize {
        let leads: usize = self.leads.values().map(|l| l.events.len()).sum();
        leads
            + self
                .devices
                .values()
                .map(|d| d.touches.len())
                .sum::<usize>()
    }

    /// Newest event time seen, epoch ms (`i64::MIN` before any).
    pub fn watermark_ms(&self) -> i64 {
        self.newest.iter().copied().max().unwrap_or(i64::MIN)
    }

    /// Leads waiting for the next flush, and events waiting for a reload.
    pub fn pending(&self) -> usize {
        self.dirty.len() + self.parked()
    }

    fn compact(&mut self, e: &NormalizedEvent) -> CompactEvent {
        const LIMIT: i64 = 1 << 47;
        let time_ms = e.event_time.timestamp_millis().clamp(-LIMIT, LIMIT - 1);
        let event_type = EventType::ALL
            .iter()
            .position(|t| *t == e.event_type)
            .unwrap_or_default() as i64;
        let id = parse_id(&e.event_id);
        CompactEvent {
            packed: time_ms << 16 | (Role::of(e.event_type) as i64) << 8 | event_type,
            id,
            rules: self.masks.intern(self.funnels.match_mask(e), id),
            channel: self.symbols.intern(e.channel.as_deref()),
            variant: self.symbols.intern(e.variant.as_deref()),
            reason: self.symbols.intern(e.reason.as_deref()),
        }
    }

    /// Adds one normalized event of an owned lead. `received_at_ms` is only recorded for too-late events.
    pub fn ingest(&mut self, e: &NormalizedEvent, received_at_ms: i64) -> Ingested {
        if self.parks(e, received_at_ms) {
            return Ingested::Parked;
        }
        let role = Role::of(e.event_type);
        let c = self.compact(e);
        if !self.own.owns_all() {
            // Duplicates too: a replayed message may be the only chance to tell the other side.
            match (role, &e.lead_id, &e.device_id) {
                (Role::Touch, None, Some(d)) => self.want_lookup(d, trigger::TOUCH),
                (Role::Signup, Some(_), Some(d)) => self.want_lookup(d, trigger::CLAIM),
                _ => {}
            }
        }
        // One winner per event id (`copies`): a copy its holder already has is judged here.
        match self.held_copy(e, &c) {
            Some(kept) => match judge(&kept, &c, self.names_known_device(e)) {
                Judged::Same => {
                    // With several members a redelivery is checked too: it may be the tail a
                    // dropped engine consumed but never settled, whose losing copy another
                    // member holds and checked before this one was stored.
                    if self.copies.checks_all() {
                        self.want_check(e, None);
                    }
                    return Ingested::Duplicate;
                }
                Judged::Later => {
                    self.copies.lost(
                        e.event_type,
                        e.event_id.clone(),
                        c.time_ms(),
                        kept.time_ms(),
                    );
                    return Ingested::Duplicate;
                }
                Judged::Tie => {
                    let tie = Some((e.copy_rank(), Box::new(e.clone())));
                    self.want_check(e, tie);
                    return Ingested::Duplicate;
                }
                Judged::Earlier => {
                    self.copies.lost(
                        e.event_type,
                        e.event_id.clone(),
                        kept.time_ms(),
                        c.time_ms(),
                    );
                    self.drop_copy(&e.lead_key(), kept.id);
                }
            },
            None => {
                if self.copies.holds(c.id) | self.evicted.maybe_id(c.id) {
                    self.want_check(e, None);
                }
            }
        }
        let applied = match (role, &e.lead_id, &e.device_id) {
            (Role::Touch, None, Some(d)) => self.add_touch(d, c),
            (_, Some(lead), _) => self.add_lead_event(lead, e.device_id.as_deref(), c),
            _ => self.add_lead_event(&e.lead_key(), e.device_id.as_deref(), c),
        };
        let Some(correction) = applied else {
            return Ingested::Duplicate;
        };
        // One partition (one instance, or the tests): no key to build and hash per event.
        let partition = match self.own.partitions() {
            1 => 0,
            _ => self.own.partition(&e.lead_key()),
        };
        let newest = &mut self.newest[partition as usize];
        let watermark = *newest;
        let time_ms = c.time_ms();
        let late = time_ms < watermark;
        let too_late = late && time_ms < watermark.saturating_sub(self.lateness_ms);
        if too_late {
            self.late.push(LateEventRow {
                event_id: e.event_id.clone(),
                event_type: e.event_type.as_str(),
                lead_key: e.lead_key().into(),
                event_time: time_ms,
                watermark,
                behind_ms: watermark - time_ms,
                received_at: received_at_ms,
            });
        }
        *newest = watermark.max(time_ms);
        Ingested::Applied {
            correction,
            late,
            too_late,
        }
    }

    /// Replays every lead touched since the last flush and returns the rows that changed.
    /// `version` must grow from flush to flush (and across restarts).
    pub fn flush(&mut self, version: u64) -> Output {
        self.evicted.begin(version);
        let mut out = Output {
            late_events: std::mem::take(&mut self.late),
            minute_tombstones: self.copies.take_tombstones(),
            ..Output::default()
        };
        let dirty: Vec<(SmolStr, u32)> = self.dirty.drain().collect();
        // Rows are large, and growing by doubling copied them over and over: a lead gives about
        // one row per funnel it is in and a transition or two.
        out.leads.reserve(dirty.len());
        out.transitions.reserve(dirty.len() * 2);
        // The first flush after a rebuild holds every lead; do not keep that capacity around.
        if self.dirty.capacity() > 4 * DIRTY_KEPT {
            self.dirty.shrink_to(DIRTY_KEPT);
        }
        let snapshots = std::mem::take(&mut self.snapshots);
        let mut merged = std::mem::take(&mut self.merged);
        let mut path = std::mem::take(&mut self.path);
        let mut words = std::mem::take(&mut self.words);
        for (key, at) in dirty {
            self.inputs(&key, &mut merged);
            let gone = merged.is_empty();
            if gone && at == NEVER {
                continue;
            }
            let attribution = attribute(&merged, self.lookback_ms);
            let partition = self.own.partition(&key) as u16;
            for (fi, funnel) in self.funnels.funnels.iter().enumerate() {
                let (old, old_words) = snapshots.of(at, fi);
                replay_into(
                    funnel,
                    merged.iter().map(|e| e.step(&self.masks)),
                    &mut path,
                );
                let fingerprint = fingerprint(&path, attribution, &merged);
                if fingerprint == old.fingerprint
                    && path.transitions.len() == old.transitions as usize
                {
                    continue;
                }
                words.clear();
                write_contribution(attribution, &path, &mut words);
                if words != old_words {
                    self.rollups.apply(partition, fi as u8, old_words, -1);
                    self.rollups.apply(partition, fi as u8, &words, 1);
                }
                self.emit(
                    &mut out,
                    funnel,
                    &key,
                    &merged,
                    &path,
                    attribution,
                    old.transitions,
                    version,
                );
            }
            out.replayed += 1;
            if gone && !self.keeps_empty(&key) {
                self.leads.remove(&key);
            }
        }
        self.snapshots = snapshots;
        self.snapshots.published.clear();
        self.snapshots.words.clear();
        if self.snapshots.published.capacity() > 16 * DIRTY_KEPT {
            self.snapshots.published.shrink_to(4 * DIRTY_KEPT);
            self.snapshots.words.shrink_to(64 * DIRTY_KEPT);
        }
        self.merged = merged;
        self.path = path;
        self.words = words;
        // Debug builds recount (the engine tests' states are small; the demo's debug binaries
        // would pay a pass over every device per flush, so large states skip it).
        if cfg!(debug_assertions) && self.devices.len() <= 10_000 {
            assert_eq!(self.bare_device_leads, self.count_bare_device_leads());
        }
        self.rollup_rows(&mut out, version);
        self.evicted.flushed();
        out
    }

    /// Rollup buckets held.
    pub fn rollup_buckets(&self) -> usize {
        self.rollups.len()
    }
}
