//! Reading evicted state back: an input that reads a key which may have left memory (`evict`),
//! or settled events a lead's replay needs again (`unfold`), is parked and its keys asked for;
//! the caller reads the stored rows and hands them to [`Engine::reload`], which puts the groups
//! and folds back and then applies the parked inputs in their arrival order.

use super::compact::Role;
use super::evict::{device_key, lead_key, EvictedRow, SavedGroup};
use super::identity::{device_lead, DEVICE_PREFIX};
use super::{Engine, Ingested};
use leadstream_schemas::NormalizedEvent;
use rustc_hash::FxHashSet as HashSet;
use smol_str::SmolStr;
use std::collections::hash_map::Entry;

/// What a [`Engine::reload`] did.
#[derive(Debug)]
pub struct Reloaded {
    /// Groups put back in memory.
    pub groups: usize,
    /// Rows of settled events put back (`fold`).
    pub unfolded: usize,
    /// Keys asked for that had no stored group of this era (the filter flagged them by mistake).
    pub misses: usize,
    /// What each parked event did once applied, by event id.
    pub applied: Vec<(String, Ingested)>,
}

/// An event waiting for its group to come back.
#[derive(Debug)]
pub(super) struct Parked {
    event: Box<NormalizedEvent>,
    received_at_ms: i64,
}

impl Engine {
    fn lead_out(&self, key: &str) -> Option<String> {
        if self.leads.contains_key(key) {
            return None;
        }
        let k = lead_key(key);
        self.evicted.maybe(self.own.partition(key), &k).then_some(k)
    }

    fn device_out(&self, device: &str) -> Option<String> {
        if self.devices.contains_key(device) {
            return None;
        }
        let k = device_key(device);
        self.evicted
            .maybe(self.own.partition(&device_lead(device)), &k)
            .then_some(k)
    }

    /// Parks `e` when a key it reads may be evicted (or an earlier event of it is parked).
    pub(super) fn parks(&mut self, e: &NormalizedEvent, received_at_ms: i64) -> bool {
        if !self.evicted.any() {
            return false;
        }
        // An anonymous touch reads only its device (as `ingest` files it).
        let anonymous_touch =
            e.lead_id.is_none() && e.device_id.is_some() && Role::of(e.event_type) == Role::Touch;
        let lead = (!anonymous_touch)
            .then(|| self.lead_out(&e.lead_key()))
            .flatten();
        let device = e.device_id.as_deref().and_then(|d| self.device_out(d));
        let unfold = self.unfolds_for(e);
        if lead.is_none() && device.is_none() && unfold.is_empty() {
            return false;
        }
        for key in unfold {
            self.want_unfold(&key);
        }
        self.evicted.wanted.extend(lead.into_iter().chain(device));
        self.evicted.parked.push(Parked {
            event: Box::new(e.clone()),
            received_at_ms,
        });
        true
    }

    /// Lead `key` is about to be read or changed outside [`Self::ingest`] (a copy of one of its
    /// events, a claim it made): reload it first if it may be evicted, and its stored settled
    /// events (`fold`).
    pub fn need_lead(&mut self, key: &str) {
        match self.lead_out(key) {
            Some(k) => {
                self.evicted.wanted.insert(k);
            }
            None => self.want_unfold(key),
        }
        // A device's own lead is held by its touches alone, with no entry of its own.
        if let Some(d) = key.strip_prefix(DEVICE_PREFIX) {
            self.need_device(d);
        }
    }

    /// [`Self::need_lead`] for a device.
    pub fn need_device(&mut self, device: &str) {
        match self.device_out(device) {
            Some(k) => {
                self.evicted.wanted.insert(k);
            }
            None => {
                if let Some(dev) = self.devices.get(device) {
                    let holder = dev.holder_with_touches(device);
                    self.want_unfold(&holder);
                }
            }
        }
    }

    /// Asks for the evicted leads that [`Self::settle_stale`] rewrites.
    pub fn need_for_stale(&mut self, stale: &super::Stale) {
        for (_, lead, _) in &stale.leads {
            self.need_lead(lead);
        }
    }

    /// Keys to read back before the next flush (`l:lead`, `d:device`); then [`Self::reload`].
    pub fn take_reloads(&mut self) -> Vec<String> {
        self.evicted.wanted.drain().collect()
    }

    /// Puts back the groups stored for `asked` (`rows`: what was found, any order) and applies
    /// the events parked for them.
    pub fn reload(&mut self, asked: Vec<String>, rows: &[EvictedRow]) -> Reloaded {
        let (mut groups, mut unfolded) = (0, 0);
        let mut found: HashSet<&str> = HashSet::default();
        let mut seen: HashSet<&[u8]> = HashSet::default();
        for r in rows {
            if !self.evicted.counts(r.partition, r.version) {
                continue;
            }
            found.insert(&r.key);
            if super::fold::is_row(&r.key) {
                self.put_back_fold(&r.key, &r.blob);
                unfolded += 1;
                continue;
            }
            if !seen.insert(&r.blob) {
                continue;
            }
            match postcard::from_bytes::<SavedGroup>(&r.blob) {
                Ok(g) => groups += usize::from(self.put_back(&g)),
                Err(e) => crate::internal_events::evicted_unreadable(&e.to_string()),
            }
        }
        let missing = self.unfolded(&asked, &found);
        let misses = asked.iter().filter(|k| !found.contains(k.as_str())).count() - missing;
        self.evicted.confirmed.extend(asked);
        let parked = std::mem::take(&mut self.evicted.parked);
        let applied = parked
            .into_iter()
            .map(|p| {
                let done = self.ingest(&p.event, p.received_at_ms);
                (p.event.event_id, done)
            })
            .collect();
        Reloaded {
            groups,
            unfolded,
            misses,
            applied,
        }
    }

    /// Inserts a group's members that are not in memory; `true` when any was.
    fn put_back(&mut self, g: &SavedGroup) -> bool {
        let symbols = self.symbols_in(&g.symbols);
        let mut any = false;
        let mut back: Vec<SmolStr> = Vec::new();
        for l in &g.leads {
            let (key, lead) = self.load_lead(l, &symbols);
            if let Entry::Vacant(v) = self.leads.entry(key.clone()) {
                v.insert(lead);
                self.evicted.recent.insert(key);
                any = true;
            }
        }
        for d in &g.devices {
            let (id, dev) = self.load_device(d, &symbols);
            if let Entry::Vacant(v) = self.devices.entry(id.clone()) {
                v.insert(dev);
                self.evicted.recent.insert(id.clone());
                back.push(id);
                any = true;
            }
        }
        for d in &back {
            if self.is_bare(d) {
                self.bare_device_leads += 1;
            }
        }
        let leads: Vec<SmolStr> = g.leads.iter().map(|l| SmolStr::new(&l.key)).collect();
        self.unfold_put_back(&leads, &back);
        any
    }
}
