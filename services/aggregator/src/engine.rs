//! The aggregator's state: every lead's distinct events (compact), identity stitching of devices
//! to users, and what was last published per lead. Pure: events go in, ClickHouse rows come out.
//!
//! Why whole-lead replays: a lead has a handful of events, so replaying all of them whenever one
//! arrives costs little and makes late, out-of-order and duplicate events a non-issue: the result
//! is by construction the batch pass over the lead's events sorted by event time. Published rows
//! are replaced (newer version) when a replay changes them, so answers already shown are
//! corrected in place.

use crate::copies::{winner, Check, Copies, CopyRecord, MinuteTombstoneRow};
use crate::funnel::{Funnel, Funnels, Target};
use crate::machine::{replay_into, rule_reason, Kind, Path, Reason, Step};
use crate::rollup::{
    minute_seconds, reason_of, stage_of, write_contribution, Attribution, CohortRollupRow,
    ReachRollupRow, Rollups, TransitionRollupRow,
};
use crate::rows::{LateEventRow, LeadFunnelRow, TransitionRow};
use leadstream_schemas::partition::kafka_partition;
use leadstream_schemas::{EventType, NormalizedEvent};
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use smallvec::SmallVec;
use smol_str::SmolStr;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

/// Breakdown value for a lead without a channel or a variant (matches the generator's truth).
pub const NONE: &str = "none";

/// Interned strings (channels, variants, reasons); symbol 0 is "absent".
#[derive(Debug, Default)]
struct Symbols {
    names: Vec<Box<str>>,
    index: HashMap<Box<str>, u16>,
}

/// Distinct values beyond this share one symbol, so a hostile feed cannot grow the table.
const MAX_SYMBOLS: usize = u16::MAX as usize - 1;
const OVERFLOW: &str = "(too many distinct values)";

impl Symbols {
    fn new() -> Self {
        Self {
            names: vec!["".into()],
            index: HashMap::default(),
        }
    }

    fn intern(&mut self, s: Option<&str>) -> u16 {
        let Some(s) = s.filter(|s| !s.is_empty()) else {
            return 0;
        };
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let s = if self.names.len() >= MAX_SYMBOLS {
            OVERFLOW
        } else {
            s
        };
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.names.len() as u16;
        self.names.push(s.into());
        self.index.insert(s.into(), i);
        i
    }

    fn name(&self, i: u16) -> &str {
        &self.names[i as usize]
    }

    fn or_none(&self, i: u16) -> &str {
        if i == 0 {
            NONE
        } else {
            self.name(i)
        }
    }
}

/// What attribution needs to know of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Role {
    /// Exposure or click.
    Touch,
    /// Signup.
    Signup,
    /// Anything else.
    Other,
}

impl Role {
    fn of(t: EventType) -> Self {
        match t {
            EventType::Exposure | EventType::Click => Role::Touch,
            EventType::Signup => Role::Signup,
            _ => Role::Other,
        }
    }
}

/// One event as the engine keeps it: 32 bytes, since events are most of the memory per lead.
#[derive(Debug, Clone, Copy)]
struct CompactEvent {
    /// Event time in epoch ms shifted left 16 (the contract bounds it to 2000..2100, far inside
    /// 48 bits), then the role (8 bits) and the index in `EventType::ALL` (8 bits).
    packed: i64,
    /// The 128-bit event id (32 hex characters by the collector's contract).
    id: [u64; 2],
    /// Which rules of which funnels match it, interned (see [`Masks`]).
    rules: u16,
    channel: u16,
    variant: u16,
    reason: u16,
}

const _: () = assert!(std::mem::size_of::<CompactEvent>() == 32);

impl CompactEvent {
    fn time_ms(&self) -> i64 {
        self.packed >> 16
    }

    fn role(&self) -> Role {
        match (self.packed >> 8) as u8 {
            0 => Role::Touch,
            1 => Role::Signup,
            _ => Role::Other,
        }
    }

    fn event_type(&self) -> EventType {
        EventType::ALL[(self.packed as u8 as usize).min(EventType::ALL.len() - 1)]
    }

    fn key(&self) -> (i64, [u64; 2]) {
        (self.packed >> 16, self.id)
    }

    fn event_id(&self) -> String {
        format!("{:016x}{:016x}", self.id[0], self.id[1])
    }

    fn step(&self, masks: &Masks) -> Step {
        Step {
            time_ms: self.time_ms(),
            rules: masks.get(self),
            reason: self.reason,
        }
    }
}

/// Rule-match masks interned to 16 bits: a configuration has up to 64 rules, but its events
/// match few distinct sets of them. Events beyond 65535 distinct sets keep theirs by event id.
#[derive(Debug, Default)]
struct Masks {
    list: Vec<u64>,
    index: HashMap<u64, u16>,
    overflow: HashMap<[u64; 2], u64>,
}

const MASK_OVERFLOW: u16 = u16::MAX;

impl Masks {
    fn intern(&mut self, mask: u64, id: [u64; 2]) -> u16 {
        if let Some(&i) = self.index.get(&mask) {
            return i;
        }
        if self.list.len() >= MASK_OVERFLOW as usize {
            self.overflow.insert(id, mask);
            return MASK_OVERFLOW;
        }
        let i = self.list.len() as u16;
        self.list.push(mask);
        self.index.insert(mask, i);
        i
    }

    fn get(&self, e: &CompactEvent) -> u64 {
        match self.list.get(e.rules as usize) {
            Some(&m) => m,
            None => self.overflow.get(&e.id).copied().unwrap_or_default(),
        }
    }
}

/// The event id as two u64 (hex order = numeric order, so sorting by it equals sorting by the
/// id string); ids that are not 32 hex characters are hashed.
fn parse_id(id: &str) -> [u64; 2] {
    // ASCII first: slicing a 32-byte string with multi-byte characters at byte 16 would panic.
    if id.len() == 32 && id.is_ascii() {
        if let (Ok(a), Ok(b)) = (
            u64::from_str_radix(&id[..16], 16),
            u64::from_str_radix(&id[16..], 16),
        ) {
            return [a, b];
        }
    }
    let mut h = std::hash::DefaultHasher::new();
    id.hash(&mut h);
    let a = h.finish();
    a.hash(&mut h);
    [a, h.finish()]
}

/// Inserts `c` in (time, id) order; `None` when the event id is already there.
fn insert_sorted(v: &mut Vec<CompactEvent>, c: CompactEvent) -> Option<usize> {
    if v.iter().any(|x| x.id == c.id) {
        return None;
    }
    // Most leads and devices have a handful of events: grow exactly instead of doubling, which
    // would leave most of a 4- or 8-slot allocation empty (memory per lead is what limits scale).
    if v.len() < 16 {
        v.reserve_exact(1);
    }
    let pos = v.partition_point(|x| x.key() < c.key());
    v.insert(pos, c);
    Some(pos)
}

/// What is written for a lead in one funnel: the replay of its inputs at the last flush.
#[derive(Debug, Clone, Default)]
struct Published {
    fingerprint: u64,
    transitions: u16,
    /// What the lead adds to the rollups (taken back when the lead changes): a range of
    /// [`Snapshots::words`].
    words: std::ops::Range<u32>,
}

/// Never published: no rows, no rollup contribution.
const NEVER_PUBLISHED: Published = Published {
    fingerprint: 0,
    transitions: 0,
    words: 0..0,
};

/// Index in `dirty` of a lead that never published anything.
const NEVER: u32 = u32::MAX;

/// What the leads of the next flush published, one `Published` per funnel each, in two buffers
/// kept across flushes (no allocation per lead).
#[derive(Debug, Default)]
struct Snapshots {
    published: Vec<Published>,
    words: Vec<u32>,
}

impl Snapshots {
    fn of(&self, at: u32, funnel: usize) -> (&Published, &[u32]) {
        if at == NEVER {
            return (&NEVER_PUBLISHED, &[]);
        }
        let p = &self.published[at as usize + funnel];
        (p, &self.words[p.words.start as usize..p.words.end as usize])
    }
}

/// A lead with events of its own. A device lead that only has anonymous touches has no entry
/// (it is the device's touches while no signup claims them): that is most anonymous visitors,
/// and an entry would double what they cost.
#[derive(Debug, Default)]
struct Lead {
    /// The lead's own events (everything but anonymous touches), sorted.
    events: Vec<CompactEvent>,
    /// Devices whose anonymous touches may belong to this lead: the devices its signups name
    /// (the touches count where its claim is the earliest). A device lead's own device is implied
    /// by its key.
    devices: SmallVec<[SmolStr; 1]>,
}

/// A signup that names a device; the earliest (by time, then event id) owns the device.
#[derive(Debug, Clone)]
struct Claim {
    time_ms: i64,
    id: [u64; 2],
    lead: SmolStr,
}

#[derive(Debug, Default)]
struct Device {
    /// For a device this instance owns, every touch consumed; for another instance's device
    /// that an owned lead claims, the touches last read from ClickHouse.
    touches: Vec<CompactEvent>,
    /// The earliest claim; claims are never withdrawn, so only the earliest matters. Boxed:
    /// most devices are never claimed, and every map slot pays for the inline size.
    owner: Option<Box<Claim>>,
}

impl Device {
    /// The lead the device's touches belong to: the owner, else the device as its own lead.
    fn holder(&self, device: &str) -> Option<SmolStr> {
        match &self.owner {
            Some(c) => Some(c.lead.clone()),
            None if !self.touches.is_empty() => Some(device_lead(device).into()),
            None => None,
        }
    }

    /// Whether `lead` holds the device's touches (`holder` without building a key).
    fn held_by(&self, device: &str, lead: &str) -> bool {
        match &self.owner {
            Some(c) => c.lead == lead,
            None => !self.touches.is_empty() && lead.strip_prefix(DEVICE_PREFIX) == Some(device),
        }
    }

    /// Whether `c` is earlier than the current owner's claim (and so takes the device).
    fn won_by(&self, c: &Claim) -> bool {
        self.owner
            .as_ref()
            .is_none_or(|o| (c.time_ms, c.id) < (o.time_ms, o.id))
    }

    /// Whether the device is its own lead by its touches alone: touched, never claimed.
    fn holds_own(&self) -> bool {
        self.owner.is_none() && !self.touches.is_empty()
    }

    /// The lead holding the touches once the device has one: the owner, else the device itself.
    fn holder_with_touches(&self, device: &str) -> SmolStr {
        match &self.owner {
            Some(c) => c.lead.clone(),
            None => device_lead(device).into(),
        }
    }
}

const DEVICE_PREFIX: &str = "device:";

/// Capacity the dirty set keeps between flushes (a regular flush's worth of leads).
const DIRTY_KEPT: usize = 8192;

/// The lead key of a device no signup claimed.
pub fn device_lead(device: &str) -> String {
    format!("{DEVICE_PREFIX}{device}")
}

/// Which leads this instance owns: those whose key lands on a partition of `leads.normalized`
/// assigned to it (the collector publishes with Kafka's murmur2 partitioner, keyed by lead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    partitions: u32,
    owned: Vec<bool>,
}

impl Ownership {
    /// One instance owning everything.
    pub fn all() -> Self {
        Self::new(1, [0])
    }

    /// `owned` out of `partitions` partitions.
    pub fn new(partitions: u32, owned: impl IntoIterator<Item = u32>) -> Self {
        let partitions = partitions.max(1);
        let mut v = vec![false; partitions as usize];
        for p in owned {
            if let Some(x) = v.get_mut(p as usize) {
                *x = true;
            }
        }
        Self {
            partitions,
            owned: v,
        }
    }

    /// The partition of a lead key.
    pub fn partition(&self, key: &str) -> u32 {
        if self.partitions == 1 {
            return 0;
        }
        kafka_partition(key.as_bytes(), self.partitions)
    }

    /// Whether this instance owns the lead `key`.
    pub fn owns(&self, key: &str) -> bool {
        self.owned[self.partition(key) as usize]
    }

    /// Whether every partition is owned (then no other instance exists to talk to).
    pub fn owns_all(&self) -> bool {
        self.owned.iter().all(|o| *o)
    }

    /// Partition count.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The owned partitions.
    pub fn owned(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.partitions).filter(|p| self.owned[*p as usize])
    }
}

/// Why a device's claims (and touches) must be read from ClickHouse before the next flush.
mod trigger {
    /// A touch on an owned device was consumed: its holder may be another instance's lead.
    pub const TOUCH: u8 = 1;
    /// An owned lead's signup claimed the device: the device lead and rival claimants may be
    /// another instance's.
    pub const CLAIM: u8 = 2;
    /// Another instance asked for a recheck.
    pub const RECHECK: u8 = 4;
}

/// A device whose stitching needs what other instances consumed: read every claim of it from
/// ClickHouse (and its touches when `touches`), then [`Engine::learn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// The device id.
    pub device: SmolStr,
    /// The device belongs to another instance: its touches are needed too.
    pub touches: bool,
    triggers: u8,
}

impl Lookup {
    /// A lookup that only brings the state up to date (a rebuild): it asks nobody to recheck.
    pub fn refresh(device: SmolStr, touches: bool) -> Self {
        Self {
            device,
            touches,
            triggers: 0,
        }
    }
}

/// A signup naming a device, as read from ClickHouse.
#[derive(Debug, Clone)]
pub struct ClaimRecord {
    /// The claiming lead.
    pub lead: SmolStr,
    /// Its event time, epoch ms.
    pub time_ms: i64,
    /// Its event id.
    pub event_id: String,
}

/// What happened to one ingested event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    /// Its event id was already known: nothing changes.
    Duplicate,
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
    /// Live transition rows written, by kind (rewrites included), in [`Kind::ALL`] order.
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
}

/// Bytes per part of the engine's state (see [`Engine::footprint`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Footprint {
    /// Lead table slots (key and lead inline).
    pub lead_slots: usize,
    /// Device table slots.
    pub device_slots: usize,
    /// Compact events of leads and devices.
    pub events: usize,
    /// Device claims.
    pub claims: usize,
    /// Rollup bucket tables.
    pub rollups: usize,
    /// Leads waiting for the next flush, with what they published.
    pub pending: usize,
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
}

/// Touches a device keeps unless configured otherwise (`state.max_touches_per_device`).
pub const DEFAULT_TOUCH_CAP: usize = 10_000;

impl Engine {
    /// An empty engine owning every lead; events older than the newest seen minus `lateness_ms`
    /// count as too late.
    pub fn new(funnels: Arc<Funnels>, lateness_ms: i64) -> Self {
        Self::with_ownership(funnels, lateness_ms, Ownership::all())
    }

    /// An empty engine publishing only the leads `own` names.
    pub fn with_ownership(funnels: Arc<Funnels>, lateness_ms: i64, own: Ownership) -> Self {
        let copies = Copies::new(!own.owns_all());
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
        }
    }

    /// Keeps at most `cap` touches per device: a placeholder id the screening missed, or a
    /// bot, would otherwise pile every touch onto one key and replay it on each new one.
    pub fn set_touch_cap(&mut self, cap: usize) {
        self.touch_cap = cap.max(1);
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

    /// Newest event time seen, epoch ms (`i64::MIN` before any).
    pub fn watermark_ms(&self) -> i64 {
        self.newest.iter().copied().max().unwrap_or(i64::MIN)
    }

    /// Leads waiting for the next flush.
    pub fn pending(&self) -> usize {
        self.dirty.len()
    }

    /// Records that `transitions` rows of `lead` in funnel `funnel` are already in ClickHouse
    /// (read back at start), so the next flush rewrites them from the current state and tombstones
    /// any the state no longer has, e.g. a device lead whose signup arrived before a crash.
    pub fn seed_published(&mut self, funnel: &str, lead: &str, transitions: u16) {
        let Some(fi) = self.funnels.funnels.iter().position(|f| f.name == funnel) else {
            return;
        };
        let at = match self.dirty.get(lead) {
            Some(&at) if at != NEVER => at,
            _ => {
                let at = self.snapshots.published.len() as u32;
                let n = self.funnels.funnels.len();
                self.snapshots
                    .published
                    .resize(at as usize + n, NEVER_PUBLISHED);
                self.dirty.insert(lead.into(), at);
                at
            }
        };
        // Fingerprint 1 stands for "unknown": a real one equals it with probability 2^-63, so the
        // lead is rewritten. No contribution: a rebuild rewrites the rollups from scratch.
        self.snapshots.published[at as usize + fi] = Published {
            fingerprint: 1,
            transitions,
            words: 0..0,
        };
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
                Judged::Same => return Ingested::Duplicate,
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
                if self.copies.holds(c.id) {
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

    /// The copy of `c`'s event that the holder of `e` already has, if any: a device's touches
    /// for an anonymous touch, else the lead's own events.
    fn held_copy(&self, e: &NormalizedEvent, c: &CompactEvent) -> Option<CompactEvent> {
        let same = |v: &[CompactEvent]| v.iter().find(|x| x.id == c.id).copied();
        match (Role::of(e.event_type), &e.lead_id, &e.device_id) {
            (Role::Touch, None, Some(d)) => same(&self.devices.get(d.as_str())?.touches),
            (_, Some(lead), _) => same(&self.leads.get(lead.as_str())?.events),
            _ => same(&self.leads.get(&*e.lead_key())?.events),
        }
    }

    /// Whether `e` names no device, or one its lead's signups already name (a signup copy that
    /// names another device is not a plain redelivery).
    fn names_known_device(&self, e: &NormalizedEvent) -> bool {
        match (&e.lead_id, &e.device_id) {
            (Some(lead), Some(d)) if Role::of(e.event_type) == Role::Signup => self
                .leads
                .get(lead.as_str())
                .is_some_and(|l| l.devices.iter().any(|x| x == d)),
            _ => true,
        }
    }

    fn want_check(&mut self, e: &NormalizedEvent, tie: Option<(u128, Box<NormalizedEvent>)>) {
        let id = parse_id(&e.event_id);
        self.copies.want(
            id,
            Check {
                event_type: e.event_type,
                event_id: e.event_id.clone(),
                tie,
            },
        );
    }

    /// Takes the copy `id` out of the inputs of lead `key` (a device's touch when `key` is a
    /// device lead): a better copy replaces it, or another lead won the event. A signup taken
    /// out gives up the devices it owned; their claims are read again from ClickHouse.
    fn drop_copy(&mut self, key: &str, id: [u64; 2]) -> Option<CompactEvent> {
        let in_lead = self
            .leads
            .get(key)
            .and_then(|l| l.events.iter().position(|x| x.id == id));
        if let Some(pos) = in_lead {
            self.before_change(key);
            let removed = self.leads.get_mut(key)?.events.remove(pos);
            if removed.role() == Role::Signup {
                self.withdraw_claims(key, id);
            }
            return Some(removed);
        }
        let d = key.strip_prefix(DEVICE_PREFIX)?;
        let dev = self.devices.get(d)?;
        let pos = dev.touches.iter().position(|x| x.id == id)?;
        let holder = dev.holder_with_touches(d);
        let was_bare = dev.holds_own() && !self.leads.contains_key(key) && self.own.owns(key);
        self.before_change(&holder);
        let dev = self.devices.get_mut(d)?;
        let removed = dev.touches.remove(pos);
        if was_bare && !dev.holds_own() {
            self.bare_device_leads -= 1;
        }
        Some(removed)
    }

    /// The signup `id` of `lead` no longer counts: the devices it owned lose their owner and
    /// are looked up again (every claim of them, as ClickHouse's winners say).
    fn withdraw_claims(&mut self, lead: &str, id: [u64; 2]) {
        let named: SmallVec<[SmolStr; 1]> = self
            .leads
            .get(lead)
            .map(|l| l.devices.clone())
            .unwrap_or_default();
        for d in named {
            let owned_by_it = self
                .devices
                .get(&d)
                .and_then(|dev| dev.owner.as_ref())
                .is_some_and(|o| o.id == id && o.lead == lead);
            if !owned_by_it {
                continue;
            }
            let own_key = device_lead(&d);
            self.before_change(&own_key);
            let bare = !self.leads.contains_key(&*own_key) && self.own.owns(&own_key);
            if let Some(dev) = self.devices.get_mut(&d) {
                dev.owner = None;
                if bare && dev.holds_own() {
                    self.bare_device_leads += 1;
                }
            }
            self.want_lookup(&d, 0);
        }
    }

    /// Settles a checked id with every copy ClickHouse stored (`lead_event_copies`): the
    /// event stays only with the winner's lead; an owned losing lead drops its copy, another
    /// member's is told to; a tie within one lead goes to the copy ClickHouse ranks first.
    pub fn settle(&mut self, check: &Check, copies: &[CopyRecord]) {
        let Some(w) = winner(copies).cloned() else {
            return;
        };
        let id = parse_id(&check.event_id);
        for c in copies.iter().filter(|c| c.lead_key != w.lead_key) {
            if self.own.owns(&c.lead_key) {
                // The copy this engine held may be another one of that lead than its best.
                if let Some(dropped) = self.drop_copy(&c.lead_key, id) {
                    self.copies.lost(
                        check.event_type,
                        check.event_id.clone(),
                        dropped.time_ms(),
                        w.time_ms,
                    );
                }
            } else {
                self.notify_copies.insert((
                    c.lead_key.clone(),
                    check.event_type,
                    check.event_id.clone(),
                ));
            }
            self.copies.lost(
                check.event_type,
                check.event_id.clone(),
                c.time_ms,
                w.time_ms,
            );
        }
        if let Some((rank, candidate)) = &check.tie {
            if *rank == w.rank && self.own.owns(&w.lead_key) {
                let key = candidate.lead_key();
                if self.drop_copy(&key, id).is_some() {
                    self.ingest(candidate, 0);
                }
            }
        }
    }

    /// Ids to settle against ClickHouse before the next flush.
    pub fn take_checks(&mut self) -> Vec<Check> {
        self.copies.take_checks()
    }

    /// Another member found that lead `key` holds a losing copy of `event_id`: check it.
    pub fn recheck_copy(&mut self, key: &str, event_type: EventType, event_id: &str) {
        if self.own.owns(key) {
            self.copies.want(
                parse_id(event_id),
                Check {
                    event_type,
                    event_id: event_id.to_string(),
                    tie: None,
                },
            );
        }
    }

    /// Leads of other members holding a losing copy, since the last call: (lead, type, id).
    pub fn take_copy_notifications(&mut self) -> Vec<(SmolStr, EventType, String)> {
        self.notify_copies.drain().collect()
    }

    /// `Some(landed before the end)` when new.
    fn add_touch(&mut self, device: &str, c: CompactEvent) -> Option<bool> {
        // `becomes_own`: the first touch of an unclaimed device makes it a lead of its own.
        let (holder, becomes_own) = match self.devices.get(device) {
            Some(d) if d.touches.iter().any(|x| x.id == c.id) => return None,
            Some(d) if d.touches.len() >= self.touch_cap => {
                crate::internal_events::touch_capped(device, self.touch_cap);
                return None;
            }
            Some(d) => (
                d.holder_with_touches(device),
                d.owner.is_none() && d.touches.is_empty(),
            ),
            None => (SmolStr::from(device_lead(device)), true),
        };
        self.before_change(&holder);
        if becomes_own && !self.leads.contains_key(&holder) && self.own.owns(&holder) {
            self.bare_device_leads += 1;
        }
        let dev = match self.devices.get_mut(device) {
            Some(d) => d,
            None => self.devices.entry(device.into()).or_default(),
        };
        let pos = insert_sorted(&mut dev.touches, c)?;
        Some(pos + 1 < dev.touches.len())
    }

    fn add_lead_event(&mut self, key: &str, device: Option<&str>, c: CompactEvent) -> Option<bool> {
        if let Some(lead) = self.leads.get(key) {
            if lead.events.iter().any(|x| x.id == c.id) {
                return None;
            }
        }
        self.before_change(key);
        let lead = match self.leads.get_mut(key) {
            Some(l) => l,
            None => {
                if let Some(d) = key.strip_prefix(DEVICE_PREFIX) {
                    if self.devices.get(d).is_some_and(Device::holds_own) {
                        self.bare_device_leads -= 1;
                    }
                }
                self.leads.entry(key.into()).or_default()
            }
        };
        let pos = insert_sorted(&mut lead.events, c)?;
        let correction = pos + 1 < lead.events.len();
        if let (Role::Signup, Some(d)) = (c.role(), device) {
            if !lead.devices.iter().any(|x| x == d) {
                lead.devices.push(d.into());
            }
        }
        if let (Role::Signup, Some(d)) = (c.role(), device) {
            self.claim(
                d,
                Claim {
                    time_ms: c.time_ms(),
                    id: c.id,
                    lead: key.into(),
                },
            );
        }
        Some(correction)
    }

    /// Records a claim of `device`; the holders before and after replay if they changed.
    fn claim(&mut self, device: &str, c: Claim) {
        let dev = self.devices.entry(device.into()).or_default();
        if !dev.won_by(&c) {
            return;
        }
        let bare = dev.holds_own();
        if let Some(before) = dev.holder(device) {
            if bare && !self.leads.contains_key(&before) && self.own.owns(&before) {
                self.bare_device_leads -= 1;
            }
            self.before_change(&before);
        }
        self.before_change(&c.lead);
        if let Some(dev) = self.devices.get_mut(device) {
            dev.owner = Some(Box::new(c));
        }
    }

    /// Queues an owned lead for the next flush, recording first what it published: the replay
    /// of its inputs as they stand. Must run before anything the lead's replay reads changes.
    fn before_change(&mut self, key: &str) {
        if self.dirty.contains_key(key) || !self.own.owns(key) {
            return;
        }
        let mut merged = std::mem::take(&mut self.merged);
        self.inputs(key, &mut merged);
        // No inputs: never published (a rebuild seeds every lead that has rows).
        let at = if merged.is_empty() {
            NEVER
        } else {
            self.snapshot(&merged)
        };
        self.merged = merged;
        self.dirty.insert(key.into(), at);
    }

    /// A lead's replay input: its own events and the touches of the devices it holds, sorted.
    fn inputs(&self, key: &str, merged: &mut Vec<CompactEvent>) {
        merged.clear();
        let own_device = key.strip_prefix(DEVICE_PREFIX);
        let lead = self.leads.get(key);
        if let Some(lead) = lead {
            merged.extend_from_slice(&lead.events);
        }
        let named = lead
            .into_iter()
            .flat_map(|l| l.devices.iter().map(|d| &**d));
        for d in own_device
            .into_iter()
            .chain(named.filter(|d| Some(*d) != own_device))
        {
            if let Some(dev) = self.devices.get(d) {
                if dev.held_by(d, key) {
                    merged.extend_from_slice(&dev.touches);
                }
            }
        }
        merged.sort_unstable_by_key(CompactEvent::key);
    }

    /// Records what a flush of these inputs publishes, per funnel; returns where it starts.
    fn snapshot(&mut self, merged: &[CompactEvent]) -> u32 {
        let at = self.snapshots.published.len() as u32;
        let attribution = attribute(merged);
        let mut path = std::mem::take(&mut self.path);
        for funnel in &self.funnels.funnels {
            replay_into(
                funnel,
                merged.iter().map(|e| e.step(&self.masks)),
                &mut path,
            );
            let words = &mut self.snapshots.words;
            let start = words.len() as u32;
            write_contribution(attribution, &path, words);
            self.snapshots.published.push(Published {
                fingerprint: fingerprint(&path, attribution, merged),
                transitions: path.transitions.len() as u16,
                words: start..words.len() as u32,
            });
        }
        self.path = path;
        at
    }

    fn want_lookup(&mut self, device: &str, why: u8) {
        *self.lookups.entry(device.into()).or_default() |= why;
    }

    /// Devices to read from ClickHouse before the next flush (always empty when this engine owns
    /// every partition: then every claim and touch is consumed here).
    pub fn take_lookups(&mut self) -> Vec<Lookup> {
        let own = &self.own;
        self.lookups
            .drain()
            .map(|(device, triggers)| Lookup {
                touches: !own.owns(&device_lead(&device)),
                device,
                triggers,
            })
            .collect()
    }

    /// Forgets pending lookups and copy checks (a rebuild reads every claim and touch itself,
    /// and only the winning copies).
    pub fn clear_lookups(&mut self) {
        self.lookups.clear();
        self.copies.clear_checks();
    }

    /// Devices this engine knows, with whether another instance owns them (their touches must
    /// be read from ClickHouse).
    pub fn known_devices(&self) -> impl Iterator<Item = (&str, bool)> + '_ {
        self.devices
            .keys()
            .map(|d| (&**d, !self.own.owns(&device_lead(d))))
    }

    /// Applies what ClickHouse holds for a looked-up device: every claim of it and, for another
    /// instance's device, its touches (replacing those read before). Queues rechecks for the
    /// other instances' leads that the triggering event may have changed.
    pub fn learn(&mut self, lookup: &Lookup, claims: &[ClaimRecord], touches: &[NormalizedEvent]) {
        let device = &*lookup.device;
        for c in claims {
            self.claim(
                device,
                Claim {
                    time_ms: c.time_ms,
                    id: parse_id(&c.event_id),
                    lead: c.lead.clone(),
                },
            );
        }
        if lookup.touches {
            let mut fresh: Vec<CompactEvent> = Vec::with_capacity(touches.len());
            for e in touches {
                let c = self.compact(e);
                insert_sorted(&mut fresh, c);
            }
            let dev = self.devices.entry(lookup.device.clone()).or_default();
            let same = dev.touches.len() == fresh.len()
                && dev.touches.iter().zip(&fresh).all(|(a, b)| a.id == b.id);
            if !same {
                // The device is another instance's, so only an owner can be a lead of ours.
                let holder = dev.holder_with_touches(device);
                self.before_change(&holder);
                if let Some(dev) = self.devices.get_mut(device) {
                    dev.touches = fresh;
                }
            }
        }
        let holder = self.devices.get(device).and_then(|d| d.holder(device));
        let tell = |key: SmolStr, own: &Ownership, notify: &mut HashSet<SmolStr>| {
            if !own.owns(&key) {
                notify.insert(key);
            }
        };
        if lookup.triggers & trigger::TOUCH != 0 {
            if let Some(h) = holder {
                tell(h, &self.own, &mut self.notify);
            }
        }
        if lookup.triggers & trigger::CLAIM != 0 {
            tell(device_lead(device).into(), &self.own, &mut self.notify);
            for c in claims {
                tell(c.lead.clone(), &self.own, &mut self.notify);
            }
        }
    }

    /// Another instance changed something `key` depends on: re-read its devices and replay it.
    pub fn recheck(&mut self, key: &str) {
        if !self.own.owns(key) {
            return;
        }
        if let Some(d) = key.strip_prefix(DEVICE_PREFIX) {
            if self.devices.contains_key(d) {
                self.want_lookup(d, trigger::RECHECK);
            }
        }
        let devices: SmallVec<[SmolStr; 1]> = self
            .leads
            .get(key)
            .map(|l| l.devices.clone())
            .unwrap_or_default();
        for d in devices {
            self.want_lookup(&d, trigger::RECHECK);
        }
        self.before_change(key);
    }

    /// Leads of other instances to tell to recheck, since the last call.
    pub fn take_notifications(&mut self) -> Vec<SmolStr> {
        self.notify.drain().collect()
    }

    /// Replays every lead touched since the last flush and returns the rows that changed.
    /// `version` must grow from flush to flush (and across restarts).
    pub fn flush(&mut self, version: u64) -> Output {
        let mut out = Output {
            late_events: std::mem::take(&mut self.late),
            minute_tombstones: self.copies.take_tombstones(),
            ..Output::default()
        };
        let dirty: Vec<(SmolStr, u32)> = self.dirty.drain().collect();
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
            let attribution = attribute(&merged);
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
            if gone {
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
        out
    }

    /// Rows for the rollup buckets that changed since the last flush.
    fn rollup_rows(&mut self, out: &mut Output, version: u64) {
        let changed = self.rollups.take_changed();
        let sym = &self.symbols;
        let funnels = &self.funnels.funnels;
        let attr = |(f, l, v): Attribution| {
            (
                SmolStr::new(sym.or_none(f)),
                SmolStr::new(sym.or_none(l)),
                SmolStr::new(sym.or_none(v)),
            )
        };
        let stage = |funnel: &Funnel, code: u8| {
            stage_of(code).map_or_else(SmolStr::default, |t| SmolStr::new(funnel.stage_name(t)))
        };
        for (k, n) in changed.cohort {
            let f = &funnels[k.scope.funnel as usize];
            let (first_touch, last_touch, variant) = attr(k.scope.attribution);
            out.cohort_rollup.push(CohortRollupRow {
                funnel: SmolStr::new(&f.name),
                minute: minute_seconds(k.minute),
                partition: k.scope.partition,
                first_touch,
                last_touch,
                variant,
                furthest_index: k.furthest,
                current_index: k.current_index,
                current_stage: stage(f, k.current),
                lost: k.lost as u8,
                leads: n,
                version,
                is_deleted: u8::from(n == 0),
            });
        }
        for (k, n) in changed.reach {
            let f = &funnels[k.scope.funnel as usize];
            let (first_touch, last_touch, variant) = attr(k.scope.attribution);
            out.reach_rollup.push(ReachRollupRow {
                funnel: SmolStr::new(&f.name),
                minute: minute_seconds(k.minute),
                partition: k.scope.partition,
                first_touch,
                last_touch,
                variant,
                stage_index: k.stage,
                stage: stage(f, k.stage + 1),
                leads: n,
                version,
                is_deleted: u8::from(n == 0),
            });
        }
        for (k, n) in changed.transitions {
            let f = &funnels[k.scope.funnel as usize];
            let (first_touch, last_touch, variant) = attr(k.scope.attribution);
            let kind = Kind::ALL[k.kind as usize];
            out.transition_rollup.push(TransitionRollupRow {
                funnel: SmolStr::new(&f.name),
                minute: minute_seconds(k.minute),
                partition: k.scope.partition,
                first_touch,
                last_touch,
                variant,
                kind: SmolStr::new_static(kind.as_str()),
                from_stage: stage(f, k.from),
                to_stage: if kind == Kind::Lost {
                    SmolStr::new_static("lost")
                } else {
                    stage(f, k.to)
                },
                reason: match reason_of(k.reason) {
                    Some(Reason::Rule(i)) => SmolStr::new(rule_reason(f, i)),
                    Some(Reason::Event(s)) => SmolStr::new(sym.name(s)),
                    None => SmolStr::default(),
                },
                transitions: n,
                version,
                is_deleted: u8::from(n == 0),
            });
        }
    }

    /// `bare_device_leads` the slow way (checks the count kept along the way).
    fn count_bare_device_leads(&self) -> usize {
        self.devices
            .iter()
            .filter(|(d, dev)| {
                let key = device_lead(d);
                dev.holds_own() && !self.leads.contains_key(&*key) && self.own.owns(&key)
            })
            .count()
    }

    /// Rollup buckets held.
    pub fn rollup_buckets(&self) -> usize {
        self.rollups.len()
    }

    /// Where the state's memory goes, in bytes (from table capacities and event counts; the
    /// benchmark prints it beside the measured heap).
    pub fn footprint(&self) -> Footprint {
        fn slots<K, V>(map: &HashMap<K, V>) -> usize {
            map.capacity() * (std::mem::size_of::<(K, V)>() + 1)
        }
        let event = std::mem::size_of::<CompactEvent>();
        Footprint {
            lead_slots: slots(&self.leads),
            device_slots: slots(&self.devices),
            events: self
                .leads
                .values()
                .map(|l| l.events.capacity() * event)
                .chain(self.devices.values().map(|d| d.touches.capacity() * event))
                .sum(),
            claims: self.devices.values().filter(|d| d.owner.is_some()).count()
                * std::mem::size_of::<Claim>(),
            rollups: self.rollups.table_bytes(),
            pending: slots(&self.dirty)
                + self.snapshots.published.capacity() * std::mem::size_of::<Published>()
                + self.snapshots.words.capacity() * 4,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn emit(
        &self,
        out: &mut Output,
        funnel: &Funnel,
        key: &str,
        events: &[CompactEvent],
        path: &Path,
        (first, last, variant): (u16, u16, u16),
        old_transitions: u16,
        version: u64,
    ) {
        let sym = &self.symbols;
        let (first, last, variant) = (
            SmolStr::new(sym.or_none(first)),
            SmolStr::new(sym.or_none(last)),
            SmolStr::new(sym.or_none(variant)),
        );
        let stage = |t: Option<Target>| t.map(|t| SmolStr::new(funnel.stage_name(t)));
        let reason = |r: Option<Reason>| match r {
            Some(Reason::Rule(i)) => SmolStr::new(rule_reason(funnel, i)),
            Some(Reason::Event(s)) => SmolStr::new(sym.name(s)),
            None => SmolStr::default(),
        };
        let n = path.transitions.len().min(u16::MAX as usize);
        for (seq, t) in path.transitions.iter().take(n).enumerate() {
            let e = &events[t.event as usize];
            out.by_kind[t.kind as usize] += 1;
            out.transitions.push(TransitionRow {
                funnel: SmolStr::new(&funnel.name),
                lead_id: SmolStr::new(key),
                seq: seq as u16,
                at: t.time_ms,
                kind: t.kind.as_str(),
                from_stage: stage(t.from).unwrap_or_default(),
                to_stage: stage(t.to).unwrap_or_else(|| SmolStr::new_static("lost")),
                skipped: t
                    .skipped
                    .clone()
                    .map(|s| SmolStr::new(&funnel.stages[s as usize]))
                    .collect(),
                reason: reason(t.reason),
                dwell_ms: t.dwell_ms,
                first_touch: first.clone(),
                last_touch: last.clone(),
                variant: variant.clone(),
                event_id: e.event_id(),
                event_type: e.event_type().as_str(),
                version,
                is_deleted: 0,
            });
        }
        for seq in n..old_transitions as usize {
            out.transitions.push(TransitionRow {
                funnel: SmolStr::new(&funnel.name),
                lead_id: SmolStr::new(key),
                seq: seq as u16,
                at: 0,
                kind: "",
                from_stage: SmolStr::default(),
                to_stage: SmolStr::default(),
                skipped: Vec::new(),
                reason: SmolStr::default(),
                dwell_ms: None,
                first_touch: SmolStr::default(),
                last_touch: SmolStr::default(),
                variant: SmolStr::default(),
                event_id: String::new(),
                event_type: "",
                version,
                is_deleted: 1,
            });
        }
        let entered = path.entered();
        if !entered && old_transitions == 0 {
            return;
        }
        let lost_reason = match path.transitions.last() {
            Some(t) if path.lost && t.kind == Kind::Lost => reason(t.reason),
            _ => SmolStr::default(),
        };
        let index = |i: Option<u8>| i.map_or(-1, |i| i as i8);
        out.leads.push(LeadFunnelRow {
            funnel: SmolStr::new(&funnel.name),
            lead_id: SmolStr::new(key),
            started_at: path.transitions.first().map_or(0, |t| t.time_ms),
            current_stage: stage(
                path.special
                    .map(Target::Special)
                    .or(path.current.map(Target::Main)),
            )
            .unwrap_or_default(),
            current_index: index(path.current),
            furthest_stage: stage(path.furthest.map(Target::Main)).unwrap_or_default(),
            furthest_index: index(path.furthest),
            reached_at: path.reached_at.clone(),
            specials: (0..funnel.special_stages.len())
                .filter(|i| path.specials_entered & (1 << i) != 0)
                .map(|i| SmolStr::new(&funnel.special_stages[i]))
                .collect(),
            lost: path.lost as u8,
            lost_reason,
            first_touch: first.clone(),
            last_touch: last.clone(),
            variant: variant.clone(),
            transitions: n as u16,
            changed_at: path.transitions.last().map_or(0, |t| t.time_ms),
            version,
            is_deleted: u8::from(!entered),
        });
    }
}

/// (first-touch channel, last-touch channel, variant) symbols of a lead's sorted events, by
/// SPEC §2: first touch = earliest exposure/click, else the signup's channel; last touch = the
/// latest exposure/click not after the (earliest) signup, else the signup's; variant = the first
/// one any event carries.
fn attribute(events: &[CompactEvent]) -> (u16, u16, u16) {
    let signup = events.iter().find(|e| e.role() == Role::Signup);
    let signup_channel = signup.map_or(0, |s| s.channel);
    let first = events
        .iter()
        .find(|e| e.role() == Role::Touch)
        .map_or(signup_channel, |e| e.channel);
    let last = events
        .iter()
        .rev()
        .filter(|e| e.role() == Role::Touch)
        .find(|e| signup.is_none_or(|s| e.time_ms() <= s.time_ms()))
        .map_or(signup_channel, |e| e.channel);
    let variant = events
        .iter()
        .map(|e| e.variant)
        .find(|v| *v != 0)
        .unwrap_or(0);
    (first, last, variant)
}

/// How a copy of an event compares with the copy its holder keeps (the earliest copy wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Judged {
    /// Equal for everything the engine reads: a redelivery.
    Same,
    /// Later than the kept copy: it loses.
    Later,
    /// Earlier: it replaces the kept copy.
    Earlier,
    /// Equal time, other content: ClickHouse's ranks decide.
    Tie,
}

fn judge(kept: &CompactEvent, new: &CompactEvent, same_device: bool) -> Judged {
    use std::cmp::Ordering;
    match new.time_ms().cmp(&kept.time_ms()) {
        Ordering::Less => Judged::Earlier,
        Ordering::Greater => Judged::Later,
        Ordering::Equal => {
            let form = |e: &CompactEvent| (e.packed, e.rules, e.channel, e.variant, e.reason);
            if form(kept) == form(new) && same_device {
                Judged::Same
            } else {
                Judged::Tie
            }
        }
    }
}

/// What the published rows of one lead in one funnel depend on. Transitions point at events by
/// position, so the ids of those events go in too: an event of equal time sorting before another
/// changes the causing event without moving any position.
fn fingerprint(path: &Path, attribution: (u16, u16, u16), events: &[CompactEvent]) -> u64 {
    // foldhash, not SipHash: two fingerprints per replayed lead, and nothing here is keyed by
    // untrusted input that could be steered into collisions of a 64-bit quality hash.
    let mut h = foldhash::quality::FixedState::default().build_hasher();
    path.hash(&mut h);
    attribution.hash(&mut h);
    for t in &path.transitions {
        events[t.event as usize].id.hash(&mut h);
    }
    // 0 is "never published"; a real fingerprint is never 0.
    h.finish() | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(time_ms: i64, role: Role, event_type: u8, id: u64, rules: u16) -> CompactEvent {
        CompactEvent {
            packed: time_ms << 16 | (role as i64) << 8 | i64::from(event_type),
            id: [id, !id],
            rules,
            channel: 0,
            variant: 0,
            reason: 0,
        }
    }

    #[test]
    fn packed_events_give_back_time_role_and_type() {
        for (t, role, ty) in [
            (946_684_800_000, Role::Touch, 0),
            (4_102_444_799_999, Role::Signup, 2),
            (-(1 << 47), Role::Other, (EventType::ALL.len() - 1) as u8),
        ] {
            let e = event(t, role, ty, 7, 0);
            assert_eq!(e.time_ms(), t);
            assert_eq!(e.role(), role);
            assert_eq!(e.event_type(), EventType::ALL[ty as usize]);
            assert_eq!(e.key(), (t, [7, !7]));
        }
    }

    #[test]
    fn masks_beyond_16_bits_are_kept_by_event_id() {
        let mut masks = Masks::default();
        let n = MASK_OVERFLOW as u64 + 10;
        let interned: Vec<u16> = (0..n).map(|m| masks.intern(m << 1, [m, 0])).collect();
        assert_eq!(masks.intern(2, [99, 99]), 1, "a known mask keeps its index");
        for (m, i) in (0..n).zip(interned) {
            let e = CompactEvent {
                id: [m, 0],
                ..event(0, Role::Other, 0, 0, i)
            };
            assert_eq!(masks.get(&e), m << 1, "mask {m}");
        }
        assert_eq!(masks.overflow.len(), 10);
    }
}
