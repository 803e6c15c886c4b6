//! Stitching across members: devices whose claims (and touches) other members consumed are
//! read from ClickHouse before a flush, and the members whose leads a change affects are told.

use super::compact::{insert_sorted, parse_id, CompactEvent};
use super::identity::{device_lead, Claim, DEVICE_PREFIX};
use super::ownership::Ownership;
use super::Engine;
use leadstream_schemas::NormalizedEvent;
use rustc_hash::FxHashSet as HashSet;
use smallvec::SmallVec;
use smol_str::SmolStr;

/// Why a device's claims (and touches) must be read from ClickHouse before the next flush.
pub(super) mod trigger {
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
    pub(super) triggers: u8,
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

impl Engine {
    pub(super) fn want_lookup(&mut self, device: &str, why: u8) {
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

    /// Asks for the evicted leads and devices [`Self::learn`] would change with these claims.
    pub fn need_for_learn(&mut self, lookup: &Lookup, claims: &[ClaimRecord]) {
        self.need_device(&lookup.device);
        for c in claims {
            self.need_lead(&c.lead);
        }
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
                self.device_for_change(device, None).touches = fresh;
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
        self.replay_at_next_flush(key);
    }

    /// Leads of other instances to tell to recheck, since the last call.
    pub fn take_notifications(&mut self) -> Vec<SmolStr> {
        self.notify.drain().collect()
    }
}
