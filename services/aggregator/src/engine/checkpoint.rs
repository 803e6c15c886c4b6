//! Checkpoints: the state of one owned partition as bytes, and an engine restored from them.
//!
//! Why a restored engine continues exactly: a checkpoint is taken right after a flush whose rows
//! ClickHouse acknowledged, and before the offsets that flush covers are committed (offsets are
//! committed only with checkpoints). At that moment every lead it holds has published exactly
//! the replay of the inputs it holds (the ledger's invariant: nothing is dirty after a flush),
//! and the rollup buckets it holds are the counts written. Loading it gives back the engine that
//! wrote it, and the Kafka tail after the committed offsets is what that engine had not yet
//! covered: replaying it gives what that engine would have given. (Rows written after the
//! checkpoint by flushes that never reached the next one are found by their newer versions and
//! rewritten: see `store::checkpoints`.)
//!
//! Devices are shared between partitions (a lead's inputs are its own events and its devices'
//! touches), so each partition's checkpoint holds every device its leads read and every device
//! whose device lead is in it. A device held by two checkpoints must be held the same way by
//! both; checkpoints written by different members at different moments may disagree, and then
//! the restore is refused ([`CheckpointError::Disagree`]) and the caller rebuilds from history.

use super::compact::CompactEvent;
use super::evict::SavedEvicted;
use super::identity::{device_lead, Device, DEVICE_PREFIX};
use super::saved::{SavedDevice, SavedLead, SymbolsOut};
use super::{Engine, Output};
use crate::rollup::RollupRow;
use crate::rollup::SavedRollups;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use serde::{Deserialize, Serialize};
use smol_str::SmolStr;

/// Version of the byte layout; a checkpoint of another one is not read (the caller rebuilds).
pub const FORMAT: u32 = 4;

#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    format: u32,
    config: u64,
    partition: u32,
    newest: i64,
    /// The writer's symbol table (index = symbol).
    symbols: Vec<String>,
    leads: Vec<SavedLead>,
    devices: Vec<SavedDevice>,
    rollups: SavedRollups,
    /// What of the partition was evicted and where its era starts (see `evict`).
    evicted: SavedEvicted,
}

/// Rows written after the restored checkpoints (newer versions than theirs), by flushes that
/// never reached the next checkpoint: a replay of the tail need not rewrite them all (a lead or
/// bucket can end where the checkpoint had it), so [`Engine::settle_stale`] does.
#[derive(Debug, Default)]
pub struct Stale {
    /// `(funnel, lead, transitions)` of leads with such rows (transitions: one past the
    /// highest sequence seen).
    pub leads: Vec<(SmolStr, SmolStr, u16)>,
    /// Such rollup rows (only their buckets matter).
    pub rollups: Output,
}

/// Why a checkpoint was not loaded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckpointError {
    /// The bytes do not decode.
    #[error("a checkpoint does not decode: {0}")]
    Unreadable(String),
    /// Written by a build with another layout: (partition, its format).
    #[error("checkpoint of partition {0} has format {1}; this build reads format {FORMAT}")]
    Format(u32, u32),
    /// Taken under another configuration, under which its events' rule matches or its
    /// partitioning would not hold.
    #[error("checkpoint of partition {0} was taken under another configuration (funnels, lateness, lookback, touch cap or partition count changed since)")]
    Config(u32),
    /// Not one of this engine's partitions.
    #[error("checkpoint of partition {0} is not of an owned partition")]
    NotOwned(u32),
    /// Two checkpoints hold this device differently.
    #[error(
        "checkpoints disagree on device {0} (written by different members at different moments)"
    )]
    Disagree(String),
    /// Holds evicted leads or rollup buckets, which only an engine owning every partition
    /// reloads (a member of several rebuilds from history instead).
    #[error("checkpoint of partition {0} has evicted leads or rollup buckets, which only a single member owning every partition reloads")]
    Evicted(u32),
}

impl Engine {
    /// One checkpoint per owned partition, `(partition, bytes)`; `config` identifies the
    /// configuration the state depends on (see [`Self::load_checkpoint`]). Call it right after
    /// a flush.
    pub fn checkpoints(&self, config: u64) -> Vec<(u32, Vec<u8>)> {
        debug_assert!(
            self.dirty.is_empty(),
            "a checkpoint is taken right after a flush"
        );
        let symbols = SymbolsOut::Engine.names(self);
        let mut saved: HashMap<u32, (Saved, HashSet<&str>)> = self
            .own
            .owned()
            .map(|p| {
                let s = Saved {
                    format: FORMAT,
                    config,
                    partition: p,
                    newest: self.newest[p as usize],
                    symbols: symbols.clone(),
                    leads: Vec::new(),
                    devices: Vec::new(),
                    rollups: SavedRollups::default(),
                    evicted: self.evicted.save(p),
                };
                (p, (s, HashSet::default()))
            })
            .collect();
        for (key, lead) in &self.leads {
            let Some((s, devices)) = saved.get_mut(&self.own.partition(key)) else {
                continue;
            };
            s.leads
                .push(self.save_lead(key, lead, &mut SymbolsOut::Engine));
            devices.extend(lead.devices.iter().map(|d| &**d));
            devices.extend(key.strip_prefix(DEVICE_PREFIX));
        }
        for d in self.devices.keys() {
            if let Some((_, devices)) = saved.get_mut(&self.own.partition(&device_lead(d))) {
                devices.insert(d);
            }
        }
        let mut rollups = self.rollups.export();
        let mut out: Vec<(u32, Vec<u8>)> = saved
            .into_iter()
            .map(|(p, (mut s, devices))| {
                for d in devices {
                    if let Some(dev) = self.devices.get(d) {
                        s.devices
                            .push(self.save_device(d, dev, &mut SymbolsOut::Engine));
                    }
                }
                s.rollups = rollups.remove(&(p as u16)).unwrap_or_default();
                let bytes = postcard::to_stdvec(&s).expect("a checkpoint always serializes");
                (p, bytes)
            })
            .collect();
        out.sort_unstable_by_key(|(p, _)| *p);
        out
    }

    /// Loads one partition's checkpoint into this engine (fresh, or holding other partitions'
    /// checkpoints). `config` must equal the writer's. Call [`Self::restored`] after the last.
    pub fn load_checkpoint(&mut self, bytes: &[u8], config: u64) -> Result<u32, CheckpointError> {
        let s: Saved =
            postcard::from_bytes(bytes).map_err(|e| CheckpointError::Unreadable(e.to_string()))?;
        let partition = s.partition;
        if s.format != FORMAT {
            return Err(CheckpointError::Format(partition, s.format));
        }
        if s.config != config {
            return Err(CheckpointError::Config(partition));
        }
        if !self.own.owned().any(|p| p == partition) {
            return Err(CheckpointError::NotOwned(partition));
        }
        if (!s.evicted.is_empty() || s.rollups.evicted()) && !self.own.owns_all() {
            return Err(CheckpointError::Evicted(partition));
        }
        let map = self.symbols_in(&s.symbols);
        let devices: Vec<(SmolStr, Device)> = s
            .devices
            .iter()
            .map(|d| self.load_device(d, &map))
            .collect();
        let leads: Vec<_> = s.leads.iter().map(|l| self.load_lead(l, &map)).collect();
        for (id, dev) in devices {
            match self.devices.get(&id) {
                Some(held) if !same(held, &dev) => {
                    return Err(CheckpointError::Disagree(id.to_string()))
                }
                Some(_) => {}
                None => {
                    self.devices.insert(id, dev);
                }
            }
        }
        self.leads.extend(leads);
        self.newest[partition as usize] = s.newest;
        let symbol = |i: u16| map.get(i as usize).copied().unwrap_or(0);
        self.rollups.import(partition as u16, s.rollups, symbol);
        self.evicted.load(partition, s.evicted);
        Ok(partition)
    }

    /// Finishes a restore: what is counted or filtered along the way is derived from the state.
    pub fn restored(&mut self) {
        self.bare_device_leads = self.count_bare_device_leads();
        self.record_held_ids();
    }

    /// Records the ids of the events held as the copies' filter's only ones (with one member;
    /// with several, every event is checked and the filter is not used).
    fn record_held_ids(&mut self) {
        if self.copies.checks_all() {
            return;
        }
        self.copies.forget_ids();
        let ids = self
            .leads
            .values()
            .flat_map(|l| l.events.iter())
            .chain(self.devices.values().flat_map(|d| d.touches.iter()))
            .map(|e| e.id);
        for id in ids {
            self.copies.holds(id);
        }
    }

    /// After evictions: when most ids the copies' filter recorded left memory, records only the
    /// held ones again, so the filter stays the size of the state and not of the history. The
    /// evicted ids stay flagged by the eviction filters (`evict`), which the copy check also
    /// asks.
    pub(super) fn forget_evicted_ids(&mut self) {
        if self.copies.checks_all() {
            return;
        }
        let held: usize = self
            .leads
            .values()
            .map(|l| l.events.len())
            .chain(self.devices.values().map(|d| d.touches.len()))
            .sum();
        if self.copies.ids_recorded() > 2 * held + 100_000 {
            self.record_held_ids();
        }
    }
}

impl Engine {
    /// Makes the rows of `stale` what this restored engine holds: its leads are rewritten by the
    /// next flush (see [`Self::seed_stale`]) and its buckets come back with `version`: the
    /// restored count, the stored count where the bucket may be stored (in the returned
    /// output's `unresolved`: [`Self::resolve`] it), else a tombstone. Write the returned rows
    /// before that flush, with a `version` older than the flush's.
    pub fn settle_stale(&mut self, stale: Stale, version: u64) -> Output {
        for (funnel, lead, transitions) in &stale.leads {
            self.seed_stale(funnel, lead, *transitions);
        }
        let held = self.all_rollup_rows(version);
        let stored = |(p, m): (u16, i32)| self.rollups.may_be_stored(p, m);
        let mut read = Output::default();
        let mut out = Output {
            cohort_rollup: settled(
                stale.rollups.cohort_rollup,
                held.cohort_rollup,
                version,
                stored,
                &mut read.cohort_rollup,
            ),
            reach_rollup: settled(
                stale.rollups.reach_rollup,
                held.reach_rollup,
                version,
                stored,
                &mut read.reach_rollup,
            ),
            transition_rollup: settled(
                stale.rollups.transition_rollup,
                held.transition_rollup,
                version,
                stored,
                &mut read.transition_rollup,
            ),
            ..Output::default()
        };
        out.unresolved.add_stale(read);
        out
    }
}

/// One row per bucket of `stale`: the held one, else (the stale one with `version` and no
/// count) into `read` where the bucket may be stored, else a tombstone.
fn settled<R: RollupRow>(
    stale: Vec<R>,
    held: Vec<R>,
    version: u64,
    may_be_stored: impl Fn((u16, i32)) -> bool,
    read: &mut Vec<R>,
) -> Vec<R> {
    let mut held: HashMap<String, R> = held.into_iter().map(|r| (r.store_key(), r)).collect();
    let mut seen: HashSet<String> = HashSet::default();
    let mut out = Vec::new();
    for mut r in stale {
        let k = r.store_key();
        if !seen.insert(k.clone()) {
            continue;
        }
        match held.remove(&k) {
            Some(h) => out.push(h),
            None => {
                r.set_count(0);
                r.set_version(version);
                match may_be_stored(r.at()) {
                    true => read.push(r),
                    false => out.push(r),
                }
            }
        }
    }
    out
}

/// Whether two checkpoints hold a device the same way (their symbols already mapped).
fn same(a: &Device, b: &Device) -> bool {
    let event = |e: &CompactEvent| (e.packed, e.id, e.rules, e.channel, e.variant, e.reason);
    let owner = |d: &Device| d.owner.as_ref().map(|c| (c.time_ms, c.id, c.lead.clone()));
    a.touches.len() == b.touches.len()
        && a.touches.iter().map(event).eq(b.touches.iter().map(event))
        && owner(a) == owner(b)
        && a.settled == b.settled
}
