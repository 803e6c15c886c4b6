//! Leads, devices and claims: which events make up a lead's replay input, and the stitching of
//! a device's anonymous touches to the earliest signup that names it.

use super::compact::{insert_sorted, CompactEvent, Role};
use super::fold::Settled;
use super::Engine;
use smallvec::SmallVec;
use smol_str::SmolStr;

/// A lead with events of its own. A device lead that only has anonymous touches has no entry
/// (it is the device's touches while no signup claims them): that is most anonymous visitors,
/// and an entry would double what they cost.
#[derive(Debug, Default)]
pub(super) struct Lead {
    /// The lead's own events (everything but anonymous touches), sorted.
    pub(super) events: Vec<CompactEvent>,
    /// Devices whose anonymous touches may belong to this lead: the devices its signups name
    /// (the touches count where its claim is the earliest). A device lead's own device is implied
    /// by its key.
    pub(super) devices: SmallVec<[SmolStr; 1]>,
    /// Its settled events stored instead of held (`fold`).
    pub(super) settled: Option<Box<Settled>>,
}

/// A signup that names a device; the earliest (by time, then event id) owns the device.
#[derive(Debug, Clone)]
pub(super) struct Claim {
    pub(super) time_ms: i64,
    pub(super) id: [u64; 2],
    pub(super) lead: SmolStr,
}

#[derive(Debug, Default)]
pub(super) struct Device {
    /// For a device this instance owns, every touch consumed; for another instance's device
    /// that an owned lead claims, the touches last read from ClickHouse.
    pub(super) touches: Vec<CompactEvent>,
    /// The earliest claim; claims are never withdrawn, so only the earliest matters. Boxed:
    /// most devices are never claimed, and every map slot pays for the inline size.
    pub(super) owner: Option<Box<Claim>>,
    /// Its settled touches stored instead of held (`fold`).
    pub(super) settled: Option<Box<Settled>>,
}

impl Device {
    /// The lead the device's touches belong to: the owner, else the device as its own lead.
    pub(super) fn holder(&self, device: &str) -> Option<SmolStr> {
        match &self.owner {
            Some(c) => Some(c.lead.clone()),
            None if self.has_touches() => Some(device_lead(device).into()),
            None => None,
        }
    }

    /// Touches stored instead of held (they count against the touch cap like held ones).
    pub(super) fn settled_events(&self) -> usize {
        self.settled.as_ref().map_or(0, |s| s.events as usize)
    }

    /// Whether `lead` holds the device's touches (`holder` without building a key).
    pub(super) fn held_by(&self, device: &str, lead: &str) -> bool {
        match &self.owner {
            Some(c) => c.lead == lead,
            None => self.has_touches() && lead.strip_prefix(DEVICE_PREFIX) == Some(device),
        }
    }

    /// Whether `c` is earlier than the current owner's claim (and so takes the device).
    pub(super) fn won_by(&self, c: &Claim) -> bool {
        self.owner
            .as_ref()
            .is_none_or(|o| (c.time_ms, c.id) < (o.time_ms, o.id))
    }

    /// Whether the device is its own lead by its touches alone: touched, never claimed.
    pub(super) fn holds_own(&self) -> bool {
        self.owner.is_none() && self.has_touches()
    }

    /// Whether it has touches, held or stored.
    fn has_touches(&self) -> bool {
        !self.touches.is_empty() || self.settled.is_some()
    }

    /// The lead holding the touches once the device has one: the owner, else the device itself.
    pub(super) fn holder_with_touches(&self, device: &str) -> SmolStr {
        let mut key = String::new();
        holder_key_into(Some(self), device, &mut key);
        key.into()
    }
}

/// [`Device::holder_with_touches`] of `dev` written into `key` (a device not in memory yet is its
/// own holder): the ledger asks it for every touch, in a buffer it keeps, since a device lead's
/// key is longer than a `SmolStr` holds inline.
pub(super) fn holder_key_into(dev: Option<&Device>, device: &str, key: &mut String) {
    key.clear();
    match dev.and_then(|d| d.owner.as_ref()) {
        Some(c) => key.push_str(&c.lead),
        None => {
            key.push_str(DEVICE_PREFIX);
            key.push_str(device);
        }
    }
}

pub(super) const DEVICE_PREFIX: &str = "device:";

/// The lead key of a device no signup claimed.
pub fn device_lead(device: &str) -> String {
    format!("{DEVICE_PREFIX}{device}")
}

impl Engine {
    /// `Some(landed before the end)` when new. [`Engine::ingest`] has looked for a copy of the
    /// event among the device's touches already (`held_copy`); `insert_sorted` still refuses one.
    pub(super) fn add_touch(&mut self, device: &str, c: CompactEvent) -> Option<bool> {
        // `becomes_own`: the first touch of an unclaimed device makes it a lead of its own.
        let becomes_own = match self.devices.get(device) {
            Some(d) if d.touches.len() + d.settled_events() >= self.touch_cap => {
                crate::internal_events::touch_capped(device, self.touch_cap);
                return None;
            }
            Some(d) => d.owner.is_none() && !d.has_touches(),
            None => true,
        };
        let dev = self.device_for_change(device, None);
        let pos = insert_sorted(&mut dev.touches, c)?;
        let correction = pos + 1 < dev.touches.len();
        if becomes_own {
            let own = device_lead(device);
            if !self.leads.contains_key(&*own) && self.own.owns(&own) {
                self.bare_device_leads += 1;
            }
        }
        Some(correction)
    }

    pub(super) fn add_lead_event(
        &mut self,
        key: &str,
        device: Option<&str>,
        c: CompactEvent,
    ) -> Option<bool> {
        // A copy among the lead's events was looked for already, as for `add_touch`.
        if !self.leads.contains_key(key) {
            if let Some(d) = key.strip_prefix(DEVICE_PREFIX) {
                if self.devices.get(d).is_some_and(Device::holds_own) {
                    self.bare_device_leads -= 1;
                }
            }
        }
        let lead = self.lead_for_change(key);
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
    pub(super) fn claim(&mut self, device: &str, c: Claim) {
        if let Some(dev) = self.devices.get(device) {
            if !dev.won_by(&c) {
                return;
            }
            if dev.holds_own() {
                let own = device_lead(device);
                if !self.leads.contains_key(&*own) && self.own.owns(&own) {
                    self.bare_device_leads -= 1;
                }
            }
        }
        let gaining = c.lead.clone();
        self.device_for_change(device, Some(&gaining)).owner = Some(Box::new(c));
    }

    /// The devices whose touches lead `key` holds: for a device lead its own device, then the
    /// devices its signups named where its claim is the owner.
    pub(super) fn held_devices<'a>(
        &'a self,
        key: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a Device)> + 'a {
        let own_device = key.strip_prefix(DEVICE_PREFIX);
        let named = self
            .leads
            .get(key)
            .into_iter()
            .flat_map(|l| l.devices.iter().map(|d| &**d));
        own_device
            .into_iter()
            .chain(named.filter(move |d| Some(*d) != own_device))
            .filter_map(move |d| Some((d, self.devices.get(d)?)))
            .filter(move |(d, dev)| dev.held_by(d, key))
    }

    /// A lead's replay input: its own events and the touches of the devices it holds, sorted.
    pub(super) fn inputs(&self, key: &str, merged: &mut Vec<CompactEvent>) {
        merged.clear();
        if let Some(lead) = self.leads.get(key) {
            merged.extend_from_slice(&lead.events);
        }
        for (_, dev) in self.held_devices(key) {
            merged.extend_from_slice(&dev.touches);
        }
        merged.sort_unstable_by_key(CompactEvent::key);
    }

    /// `bare_device_leads` the slow way (checks the count kept along the way).
    pub(super) fn count_bare_device_leads(&self) -> usize {
        self.devices
            .iter()
            .filter(|(d, dev)| {
                let key = device_lead(d);
                dev.holds_own() && !self.leads.contains_key(&*key) && self.own.owns(&key)
            })
            .count()
    }
}
