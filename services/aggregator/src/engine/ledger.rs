//! The snapshot ledger: what each lead due for the next flush had published before its inputs
//! changed, so a flush writes only what differs and takes back exactly the old rollup share.

use super::attribution::attribute;
use super::compact::CompactEvent;
use super::identity::{holder_key_into, Device, Lead};
use super::Engine;
use crate::machine::{replay_into, Path};
use crate::rollup::write_contribution;
use std::hash::{BuildHasher, Hash, Hasher};

/// What is written for a lead in one funnel: the replay of its inputs at the last flush.
#[derive(Debug, Clone, Default)]
pub(super) struct Published {
    pub(super) fingerprint: u64,
    pub(super) transitions: u16,
    /// What the lead adds to the rollups (taken back when the lead changes): a range of
    /// [`Snapshots::words`].
    pub(super) words: std::ops::Range<u32>,
}

/// Never published: no rows, no rollup contribution.
pub(super) const NEVER_PUBLISHED: Published = Published {
    fingerprint: 0,
    transitions: 0,
    words: 0..0,
};

/// Index in `dirty` of a lead that never published anything.
pub(super) const NEVER: u32 = u32::MAX;

/// What the leads of the next flush published, one `Published` per funnel each, in two buffers
/// kept across flushes (no allocation per lead).
#[derive(Debug, Default)]
pub(super) struct Snapshots {
    pub(super) published: Vec<Published>,
    pub(super) words: Vec<u32>,
}

impl Snapshots {
    pub(super) fn of(&self, at: u32, funnel: usize) -> (&Published, &[u32]) {
        if at == NEVER {
            return (&NEVER_PUBLISHED, &[]);
        }
        let p = &self.published[at as usize + funnel];
        (p, &self.words[p.words.start as usize..p.words.end as usize])
    }
}

/// Capacity the dirty set keeps between flushes (a regular flush's worth of leads).
pub(super) const DIRTY_KEPT: usize = 8192;

/// What the published rows of one lead in one funnel depend on. Transitions point at events by
/// position, so the ids of those events go in too: an event of equal time sorting before another
/// changes the causing event without moving any position.
pub(super) fn fingerprint(
    path: &Path,
    attribution: (u16, u16, u16),
    events: &[CompactEvent],
) -> u64 {
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

impl Engine {
    /// Records that `transitions` rows of `lead` in funnel `funnel` are already in ClickHouse
    /// (read back at start), so the next flush rewrites them from the current state and tombstones
    /// any the state no longer has, e.g. a device lead whose signup arrived before a crash.
    pub fn seed_published(&mut self, funnel: &str, lead: &str, transitions: u16) {
        let Some(fi) = self.funnels.funnels.iter().position(|f| f.name == funnel) else {
            return;
        };
        let at = self.snapshot_slot(lead);
        // Fingerprint 1 stands for "unknown": a real one equals it with probability 2^-63, so the
        // lead is rewritten. No contribution: a rebuild rewrites the rollups from scratch.
        self.snapshots.published[at as usize + fi] = Published {
            fingerprint: 1,
            transitions,
            words: 0..0,
        };
    }

    /// Records that rows of `lead` in funnel `funnel` (`transitions` of them) were written
    /// after the checkpoint this engine was restored from, by a flush that never reached the
    /// next one: the next flush rewrites them from the restored state (taking back only the
    /// contribution that state has) and tombstones any it no longer has.
    pub fn seed_stale(&mut self, funnel: &str, lead: &str, transitions: u16) {
        let Some(fi) = self.funnels.funnels.iter().position(|f| f.name == funnel) else {
            return;
        };
        if !self.own.owns(lead) {
            return;
        }
        self.before_change(lead);
        let at = self.snapshot_slot(lead);
        let p = &mut self.snapshots.published[at as usize + fi];
        p.fingerprint = 1;
        p.transitions = p.transitions.max(transitions);
    }

    /// Where `lead`'s snapshot starts, making one (published nothing) when it has none.
    fn snapshot_slot(&mut self, lead: &str) -> u32 {
        match self.dirty.get(lead) {
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
        }
    }

    /// Lead `key`, to change its events or devices. What the lead published is recorded first:
    /// every change of what a replay reads goes through here or [`Self::device_for_change`].
    pub(super) fn lead_for_change(&mut self, key: &str) -> &mut Lead {
        self.before_change(key);
        if !self.leads.contains_key(key) {
            self.leads.insert(key.into(), Lead::default());
        }
        self.leads.get_mut(key).expect("inserted above")
    }

    /// Device `device`, to change its touches or its owner. What the lead holding its touches
    /// now published is recorded first, and so is `gaining`'s (a lead about to hold them).
    pub(super) fn device_for_change(&mut self, device: &str, gaining: Option<&str>) -> &mut Device {
        let mut holder = std::mem::take(&mut self.key_scratch);
        holder_key_into(self.devices.get(device), device, &mut holder);
        self.before_change(&holder);
        self.key_scratch = holder;
        if let Some(g) = gaining {
            self.before_change(g);
        }
        if !self.devices.contains_key(device) {
            self.devices.insert(device.into(), Device::default());
        }
        self.devices.get_mut(device).expect("inserted above")
    }

    /// Lead `key` is replayed at the next flush though nothing of it changed here (another
    /// member changed something it depends on).
    pub(super) fn replay_at_next_flush(&mut self, key: &str) {
        self.before_change(key);
    }

    /// Queues an owned lead for the next flush, recording first what it published: the replay
    /// of its inputs as they stand. Must run before anything the lead's replay reads changes,
    /// which is why only the accessors above call it.
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

    /// Records what a flush of these inputs publishes, per funnel; returns where it starts.
    pub(super) fn snapshot(&mut self, merged: &[CompactEvent]) -> u32 {
        let at = self.snapshots.published.len() as u32;
        let attribution = attribute(merged, self.lookback_ms);
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
}
