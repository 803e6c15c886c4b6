//! The rare path of settled events (`fold`): when a lead's kept events cannot absorb an input,
//! every stored event of the lead and of the devices it holds is read back (*unfolded*), and
//! the input is applied to the full history, exactly. Reasons: an input earlier than the fold's
//! instant (a too-late event, a redelivery of a stored one); an input whose event id may be a
//! stored one (the eviction filter holds stored ids: a re-saved copy of a stored event must lose
//! to it); a claim that moves a device between leads (the drops were judged for the old
//! holder's inputs); and every copy, claim or stale row the engine settles against ClickHouse
//! for the lead (`need_lead`). A group put back from eviction is unfolded too (eagerly: whatever
//! input brought it back may need its stored events, and a second read of one group is rare).
//! Unfolding is not a change: the full history replays as the kept events do.

use super::compact::{parse_id, CompactEvent, Role};
use super::fold::{is_row, Entity, SavedFold, Settled};
use super::identity::Claim;
use super::Engine;
use leadstream_schemas::NormalizedEvent;
use rustc_hash::FxHashSet as HashSet;
use smallvec::SmallVec;
use smol_str::SmolStr;

impl Engine {
    /// The entities lead `key`'s replay reads: its entry and the devices whose touches it holds.
    pub(super) fn unit(&self, key: &str) -> SmallVec<[Entity; 2]> {
        let lead = self
            .leads
            .contains_key(key)
            .then(|| Entity::Lead(key.into()));
        let devices = self
            .held_devices(key)
            .map(|(d, _)| Entity::Device(d.into()));
        lead.into_iter().chain(devices).collect()
    }

    pub(super) fn settled_of(&self, e: &Entity) -> Option<&Settled> {
        match e {
            Entity::Lead(k) => self.leads.get(k)?.settled.as_deref(),
            Entity::Device(d) => self.devices.get(d)?.settled.as_deref(),
        }
    }

    /// The events `e` holds and what it has stored, if it is in memory.
    pub(super) fn entity_mut(
        &mut self,
        e: &Entity,
    ) -> Option<(&mut Vec<CompactEvent>, &mut Option<Box<Settled>>)> {
        match e {
            Entity::Lead(k) => self
                .leads
                .get_mut(k)
                .map(|l| (&mut l.events, &mut l.settled)),
            Entity::Device(d) => self
                .devices
                .get_mut(d)
                .map(|d| (&mut d.touches, &mut d.settled)),
        }
    }

    /// Asks for every stored row of `e`.
    fn want_rows(&mut self, e: &Entity) {
        let rows = self.settled_of(e).map_or(0, |s| s.rows);
        for n in 1..=rows {
            self.evicted.want(e.row(n));
        }
    }

    /// The instant before which lead `key`'s replay has stored inputs, if it has any.
    fn unit_settled(&self, key: &str) -> Option<i64> {
        self.unit(key)
            .iter()
            .filter_map(|e| self.settled_of(e))
            .map(|s| s.before_ms)
            .max()
    }

    /// Asks for every stored event of lead `key`'s unit (read back with the evicted groups).
    pub(super) fn want_unfold(&mut self, key: &str) {
        for e in self.unit(key) {
            self.want_rows(&e);
        }
    }

    /// The leads whose stored events `e` needs back before it is applied (see the module doc).
    pub(super) fn unfolds_for(&self, e: &NormalizedEvent) -> SmallVec<[SmolStr; 2]> {
        let mut out = SmallVec::new();
        let t = e.event_time.timestamp_millis();
        let id = parse_id(&e.event_id);
        let role = Role::of(e.event_type);
        let key: SmolStr = match (&e.lead_id, &e.device_id) {
            (None, Some(d)) if role == Role::Touch => match self.devices.get(d.as_str()) {
                Some(dev) => dev.holder_with_touches(d),
                None => return out,
            },
            _ => e.lead_key().into(),
        };
        if let Some(before) = self.unit_settled(&key) {
            if t < before || self.evicted.maybe_id(id) {
                out.push(key.clone());
            }
        }
        if let (Role::Signup, Some(lead), Some(d)) = (role, &e.lead_id, &e.device_id) {
            let Some(dev) = self.devices.get(d.as_str()) else {
                return out;
            };
            let claim = Claim {
                time_ms: t,
                id,
                lead: lead.into(),
            };
            let holder = dev.holder_with_touches(d);
            let moves = dev.won_by(&claim) && holder != lead.as_str();
            if moves
                && (dev.settled.is_some()
                    || self.unit_settled(&holder).is_some()
                    || self.unit_settled(lead).is_some())
            {
                out.push(holder);
                out.push(lead.into());
            }
        }
        out
    }

    /// Puts a fold's row back into its lead or device (asked for by [`Self::want_unfold`]).
    pub(super) fn put_back_fold(&mut self, key: &str, blob: &[u8]) {
        let Some(entity) = Entity::of_row(key) else {
            return;
        };
        let saved: SavedFold = match postcard::from_bytes(blob) {
            Ok(s) => s,
            Err(e) => return crate::internal_events::evicted_unreadable(&e.to_string()),
        };
        let symbols = self.symbols_in(&saved.symbols);
        let events: Vec<CompactEvent> = saved
            .events
            .iter()
            .map(|e| self.load_event(e, &symbols))
            .collect();
        if let Some((held, _)) = self.entity_mut(&entity) {
            held.extend(events);
            held.sort_unstable_by_key(CompactEvent::key);
            held.dedup_by_key(|e| e.id);
        }
    }

    /// After the rows of `asked` were put back: their entities hold all their events again.
    /// Returns the fold rows asked for that were not found (there should be none).
    pub(super) fn unfolded(&mut self, asked: &[String], found: &HashSet<&str>) -> usize {
        let mut missing = 0;
        for key in asked.iter().filter(|k| is_row(k)) {
            if !found.contains(key.as_str()) {
                missing += 1;
                crate::internal_events::fold_row_missing(key);
            }
            let Some(entity) = Entity::of_row(key) else {
                continue;
            };
            if let Some((_, settled)) = self.entity_mut(&entity) {
                *settled = None;
            }
            self.evicted.put_back_recently(entity.name().clone());
        }
        missing
    }

    /// Asks for the stored events of a group just put back (eager: whatever input brought it
    /// back may need them, and a second read of one group is rare).
    pub(super) fn unfold_put_back(&mut self, leads: &[SmolStr], devices: &[SmolStr]) {
        let entities = leads
            .iter()
            .map(|k| Entity::Lead(k.clone()))
            .chain(devices.iter().map(|d| Entity::Device(d.clone())));
        for e in entities {
            self.want_rows(&e);
        }
    }
}
