//! Idle eviction: a lead with no event for `state.idle_after` of event time leaves memory with
//! the devices whose touches it holds (its *group*: exactly what its replay reads), as bytes
//! stored per key in ClickHouse; an event, copy or claim for it brings the group back before it
//! is applied.
//!
//! Why this stays exact: a group is evicted right after a flush, when what it published is the
//! replay of what it holds (nothing is dirty), and it is evicted whole, so no member of it is
//! ever in memory without the others. Nothing changes a group while it is out: every input that
//! would read or change one of its keys is parked ([`Engine::ingest`] returns
//! [`super::Ingested::Parked`]) or asked for ([`Engine::need_lead`], [`Engine::need_device`])
//! until the caller reloads it (`take_reloads`, then [`Engine::reload`]). Loaded back, the group
//! is the state it published, so the ledger's snapshot before its next change is right, and its
//! rollup share is taken back exactly (from buckets read back first if they left memory too:
//! `evict_buckets`). A reload brings every event back, so an
//! event later than the allowed lateness for an evicted lead is applied on its full history.
//!
//! Which keys were evicted is kept per partition in a Bloom filter (saved in the checkpoint),
//! together with the event ids of evicted groups, so that a copy of an evicted event under
//! another lead is still checked. A key the filter flags by mistake costs one read that finds
//! nothing. Only rows that describe this state count (`valid`): not those of before a rebuild
//! from history (whose state holds every lead), nor those a process wrote after the checkpoint a
//! restore came from. And a group put back is not evicted again until a checkpoint holding it is
//! written: otherwise a checkpoint that failed after its evictions were stored would leave a
//! newer row (replacing the one the checkpoint before relies on) for a key that one lacks.
//!
//! Only an engine owning every partition evicts: a member of several holds copies of other
//! members' devices, which its group boundaries would not cover.

use super::identity::{device_lead, Device, Lead, DEVICE_PREFIX};
use super::reload::Parked;
use super::saved::{SavedDevice, SavedLead, SymbolsOut};
use super::Engine;
use growable_bloom_filter::GrowableBloom;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use serde::{Deserialize, Serialize};
use smol_str::SmolStr;

/// One idle group leaving memory: stored as one row per key, each holding the whole group, so
/// that any of its keys brings it back in one read.
#[derive(Debug, Clone)]
pub struct EvictedGroup {
    /// The partition of the lead holding the group.
    pub partition: u32,
    /// Its keys: `l:` and a lead key, `d:` and a device id.
    pub keys: Vec<String>,
    /// The group's leads and devices.
    pub blob: Vec<u8>,
}

/// A stored group, as read back for one key.
#[derive(Debug, Clone)]
pub struct EvictedRow {
    /// The key it was read for.
    pub key: String,
    /// The partition it was evicted from.
    pub partition: u32,
    /// The version it was written with.
    pub version: u64,
    /// [`EvictedGroup::blob`].
    pub blob: Vec<u8>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct SavedGroup {
    pub(super) symbols: Vec<String>,
    pub(super) leads: Vec<SavedLead>,
    pub(super) devices: Vec<SavedDevice>,
}

/// What a partition's checkpoint carries of its evictions.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct SavedEvicted {
    valid: Vec<(u64, u64)>,
    filter: Option<GrowableBloom>,
}

impl SavedEvicted {
    /// Nothing of the partition was evicted.
    pub(super) fn is_empty(&self) -> bool {
        self.filter.is_none()
    }
}

#[derive(Debug, Default)]
pub(super) struct Evicted {
    /// `state.idle_after` in ms; `None`: nothing is evicted.
    idle_ms: Option<i64>,
    /// `state.rollup_idle_after` in ms (`idle_ms` unless set).
    rollup_idle_ms: Option<i64>,
    /// Per partition: the versions whose rows describe this state (inclusive ranges): from
    /// the first flush after a rebuild on, less what dead processes wrote after the checkpoint
    /// a restore came from. Empty: no row counts yet.
    valid: Vec<Vec<(u64, u64)>>,
    /// Version of the last flush (evictions are written with it).
    flushed_at: u64,
    /// Keys put back since the last checkpoint written: not evicted again before one is, so a
    /// failed checkpoint never leaves a newer row for a key the one before lacks.
    pub(super) recent: HashSet<SmolStr>,
    /// Per partition: keys and event ids evicted in this era.
    filters: Vec<Option<GrowableBloom>>,
    pub(super) wanted: HashSet<String>,
    /// Keys read back since the last flush (loaded, or not stored after all).
    pub(super) confirmed: HashSet<String>,
    pub(super) parked: Vec<Parked>,
}

pub(super) fn lead_key(key: &str) -> String {
    format!("l:{key}")
}

pub(super) fn device_key(device: &str) -> String {
    format!("d:{device}")
}

impl Evicted {
    pub(super) fn new(partitions: u32) -> Self {
        Self {
            valid: vec![Vec::new(); partitions as usize],
            filters: (0..partitions).map(|_| None).collect(),
            ..Self::default()
        }
    }

    /// Whether anything may be out of memory.
    pub(super) fn any(&self) -> bool {
        self.filters.iter().any(Option::is_some)
    }

    /// Whether `key` may be out of memory and was not read back since the last flush.
    pub(super) fn maybe(&self, partition: u32, key: &str) -> bool {
        !self.confirmed.contains(key) && self.flagged(partition, key)
    }

    /// Whether `key` may have been evicted in this era (read back since or not).
    fn flagged(&self, partition: u32, key: &str) -> bool {
        self.filters[partition as usize]
            .as_ref()
            .is_some_and(|f| f.contains(key))
    }

    /// Whether a copy of `id` may be held by an evicted group.
    pub(super) fn maybe_id(&self, id: [u64; 2]) -> bool {
        self.filters.iter().flatten().any(|f| f.contains(id))
    }

    /// What a checkpoint taken now carries: rows written after it (by a process that dies
    /// before the next one) do not describe the state it holds.
    pub(super) fn save(&self, partition: u32) -> SavedEvicted {
        let valid = self.valid[partition as usize]
            .iter()
            .filter(|(lo, _)| *lo <= self.flushed_at)
            .map(|&(lo, hi)| (lo, hi.min(self.flushed_at)))
            .collect();
        SavedEvicted {
            valid,
            filter: self.filters[partition as usize].clone(),
        }
    }

    pub(super) fn load(&mut self, partition: u32, saved: SavedEvicted) {
        self.valid[partition as usize] = saved.valid;
        self.filters[partition as usize] = saved.filter;
    }

    /// Every flush: the rows this process writes from its first flush on describe its state
    /// (after a rebuild, rows of before describe leads the rebuild holds anyway).
    pub(super) fn begin(&mut self, version: u64) {
        for v in &mut self.valid {
            if v.last().is_none_or(|&(_, hi)| hi != u64::MAX) {
                v.push((version, u64::MAX));
            }
        }
        self.flushed_at = version;
    }

    pub(super) fn counts(&self, partition: u32, version: u64) -> bool {
        self.valid
            .get(partition as usize)
            .is_some_and(|v| v.iter().any(|&(lo, hi)| (lo..=hi).contains(&version)))
    }

    pub(super) fn parked(&self) -> usize {
        self.parked.len()
    }

    /// Bytes of the filters of evicted keys and ids (serialized size).
    pub(super) fn filter_bytes(&self) -> usize {
        self.filters
            .iter()
            .flatten()
            .map(|f| postcard::to_stdvec(f).map_or(0, |b| b.len()))
            .sum()
    }

    /// `state.rollup_idle_after` in ms, when anything is evicted.
    pub(super) fn rollup_idle_ms(&self) -> Option<i64> {
        self.idle_ms.and(self.rollup_idle_ms.or(self.idle_ms))
    }

    pub(super) fn filter(&mut self, partition: u32) -> &mut GrowableBloom {
        self.filters[partition as usize].get_or_insert_with(|| GrowableBloom::new(0.01, 100_000))
    }

    /// Whether idle leads leave memory (and settled events: `fold`).
    pub(super) fn evicting(&self) -> bool {
        self.idle_ms.is_some()
    }

    /// Asks for `key` at the next reload.
    pub(super) fn want(&mut self, key: String) {
        self.wanted.insert(key);
    }

    /// Whether `key` (a lead key or a device id) was put back since the last checkpoint.
    pub(super) fn is_recent(&self, key: &str) -> bool {
        self.recent.contains(key)
    }

    /// `key` (a lead key or a device id) was put back: it does not leave again before a
    /// checkpoint holding it is written.
    pub(super) fn put_back_recently(&mut self, key: SmolStr) {
        self.recent.insert(key);
    }

    /// Forgets which keys were read back: the next time one is flagged, it is read again.
    pub(super) fn flushed(&mut self) {
        debug_assert!(self.parked.is_empty(), "reloads come before a flush");
        self.confirmed.clear();
    }
}

impl Engine {
    /// Lets leads idle for `ms` of event time leave memory (only with every partition owned).
    pub fn set_idle_after(&mut self, ms: Option<i64>) {
        self.evicted.idle_ms = ms.filter(|_| self.own.owns_all()).map(|m| m.max(1));
    }

    /// Lets rollup buckets of minutes `ms` older than their partition's newest event leave
    /// memory (only where leads are evicted; the lead setting unless this is called).
    pub fn set_rollup_idle_after(&mut self, ms: i64) {
        self.evicted.rollup_idle_ms = Some(ms.max(1));
    }

    /// Whether lead `key`, now without events, must keep an (empty) entry: one evicted earlier
    /// would otherwise be read back as it was then.
    pub(super) fn keeps_empty(&self, key: &str) -> bool {
        self.evicted
            .flagged(self.own.partition(key), &lead_key(key))
    }

    /// Whether device `d` is a lead of its own held without an entry in `leads`.
    pub(super) fn is_bare(&self, d: &str) -> bool {
        let key = device_lead(d);
        self.devices.get(d).is_some_and(Device::holds_own)
            && !self.leads.contains_key(&*key)
            && self.own.owns(&key)
    }

    /// The groups whose newest event is more than `state.idle_after` older than their
    /// partition's newest. Call right after a flush; store them, then [`Self::evict`] them.
    pub fn idle_groups(&self) -> Vec<EvictedGroup> {
        let Some(idle) = self.evicted.idle_ms else {
            return Vec::new();
        };
        let holder = |d: &str, dev: &Device| -> SmolStr {
            dev.holder(d).unwrap_or_else(|| device_lead(d).into())
        };
        // A device's own lead goes with the device (whoever holds its touches): changing the
        // device's owner changes what that lead reads. Followed a few steps, for a device
        // claimed by another device's own lead.
        let group_of = |key: &SmolStr| -> SmolStr {
            let mut k = key.clone();
            for _ in 0..8 {
                let next = k
                    .strip_prefix(DEVICE_PREFIX)
                    .and_then(|d| self.devices.get(d).map(|dev| holder(d, dev)));
                match next {
                    Some(h) if h != k => k = h,
                    _ => break,
                }
            }
            k
        };
        let mut newest: HashMap<SmolStr, i64> = HashMap::default();
        let mut note = |key: SmolStr, t: Option<i64>| {
            let n = newest.entry(key).or_insert(i64::MIN);
            *n = (*n).max(t.unwrap_or(i64::MIN));
        };
        for (d, dev) in &self.devices {
            let t = dev.touches.last().map(|e| e.time_ms());
            note(group_of(&holder(d, dev)), t);
        }
        for (k, l) in &self.leads {
            note(group_of(k), l.events.last().map(|e| e.time_ms()));
        }
        let idle_keys: HashSet<SmolStr> = newest
            .into_iter()
            .filter(|(k, t)| {
                let watermark = self.newest[self.own.partition(k) as usize];
                *t < watermark.saturating_sub(idle)
            })
            .map(|(k, _)| k)
            .collect();
        if idle_keys.is_empty() {
            return Vec::new();
        }
        let mut idle_keys = idle_keys;
        // A group put back since the last checkpoint written stays until one is.
        for k in &self.evicted.recent {
            if self.leads.contains_key(k) {
                idle_keys.remove(&group_of(k));
            }
            if let Some(dev) = self.devices.get(k) {
                idle_keys.remove(&group_of(&holder(k, dev)));
            }
        }
        type Members<'a> = (Vec<(&'a str, &'a Lead)>, Vec<(&'a str, &'a Device)>);
        let mut groups: HashMap<&SmolStr, Members> = HashMap::default();
        for (k, l) in &self.leads {
            if let Some(g) = idle_keys.get(&group_of(k)) {
                groups.entry(g).or_default().0.push((k, l));
            }
        }
        for (d, dev) in &self.devices {
            if let Some(g) = idle_keys.get(&group_of(&holder(d, dev))) {
                groups.entry(g).or_default().1.push((d, dev));
            }
        }
        groups
            .into_iter()
            .map(|(key, (leads, devices))| {
                let mut out = SymbolsOut::used();
                let leads: Vec<SavedLead> = leads
                    .iter()
                    .map(|(k, l)| self.save_lead(k, l, &mut out))
                    .collect();
                let devices: Vec<SavedDevice> = devices
                    .iter()
                    .map(|(d, dev)| self.save_device(d, dev, &mut out))
                    .collect();
                let keys = leads
                    .iter()
                    .map(|l| lead_key(&l.key))
                    .chain(devices.iter().map(|d| device_key(&d.id)))
                    .collect();
                let g = SavedGroup {
                    symbols: out.names(self),
                    leads,
                    devices,
                };
                EvictedGroup {
                    partition: self.own.partition(key),
                    keys,
                    blob: postcard::to_stdvec(&g).expect("a group always serializes"),
                }
            })
            .collect()
    }

    /// Drops stored groups from memory (from [`Self::idle_groups`], nothing changed since).
    /// Each key goes in its own partition's filter (where an event for it looks), the event ids
    /// in the group's.
    pub fn evict(&mut self, groups: &[EvictedGroup]) {
        for g in groups {
            let bare = g
                .keys
                .iter()
                .filter_map(|k| k.strip_prefix("d:"))
                .filter(|d| self.is_bare(d))
                .count();
            self.bare_device_leads -= bare;
            for k in &g.keys {
                let (events, partition) = match (k.strip_prefix("l:"), k.strip_prefix("d:")) {
                    (Some(l), _) => (
                        self.leads.remove(l).map(|l| l.events),
                        self.own.partition(l),
                    ),
                    (_, Some(d)) => (
                        self.devices.remove(d).map(|d| d.touches),
                        self.own.partition(&device_lead(d)),
                    ),
                    _ => continue,
                };
                let ids = self.evicted.filter(g.partition);
                for e in events.iter().flatten() {
                    ids.insert(e.id);
                }
                self.evicted.filter(partition).insert(k.as_str());
            }
        }
        if !groups.is_empty() {
            self.forget_evicted_ids();
        }
    }

    /// The checkpoint taken after the last [`Self::evict`] was written: groups put back before
    /// it may leave again.
    pub fn checkpoint_written(&mut self) {
        self.evicted.recent.clear();
        self.rollups.checkpoint_written();
    }

    /// Events parked for a reload.
    pub(super) fn parked(&self) -> usize {
        self.evicted.parked()
    }
}
