//! One winner per event id: the earliest copy. Copies a lead already holds are judged here;
//! the rest are settled against the ranks ClickHouse stores.

use super::compact::{parse_id, CompactEvent, Role};
use super::identity::{device_lead, DEVICE_PREFIX};
use super::Engine;
use crate::copies::{winner, Check, CopyRecord};
use leadstream_schemas::{EventType, NormalizedEvent};
use smallvec::SmallVec;
use smol_str::SmolStr;

/// How a copy of an event compares with the copy its holder keeps (the earliest copy wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Judged {
    /// Equal for everything the engine reads: a redelivery.
    Same,
    /// Later than the kept copy: it loses.
    Later,
    /// Earlier: it replaces the kept copy.
    Earlier,
    /// Equal time, other content: ClickHouse's ranks decide.
    Tie,
}

pub(super) fn judge(kept: &CompactEvent, new: &CompactEvent, same_device: bool) -> Judged {
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

impl Engine {
    /// The copy of `c`'s event that the holder of `e` already has, if any: a device's touches
    /// for an anonymous touch, else the lead's own events.
    pub(super) fn held_copy(&self, e: &NormalizedEvent, c: &CompactEvent) -> Option<CompactEvent> {
        let same = |v: &[CompactEvent]| v.iter().find(|x| x.id == c.id).copied();
        match (Role::of(e.event_type), &e.lead_id, &e.device_id) {
            (Role::Touch, None, Some(d)) => same(&self.devices.get(d.as_str())?.touches),
            (_, Some(lead), _) => same(&self.leads.get(lead.as_str())?.events),
            _ => same(&self.leads.get(&*e.lead_key())?.events),
        }
    }

    /// Whether `e` names no device, or one its lead's signups already name (a signup copy that
    /// names another device is not a plain redelivery).
    pub(super) fn names_known_device(&self, e: &NormalizedEvent) -> bool {
        match (&e.lead_id, &e.device_id) {
            (Some(lead), Some(d)) if Role::of(e.event_type) == Role::Signup => self
                .leads
                .get(lead.as_str())
                .is_some_and(|l| l.devices.iter().any(|x| x == d)),
            _ => true,
        }
    }

    pub(super) fn want_check(
        &mut self,
        e: &NormalizedEvent,
        tie: Option<(u128, Box<NormalizedEvent>)>,
    ) {
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
    pub(super) fn drop_copy(&mut self, key: &str, id: [u64; 2]) -> Option<CompactEvent> {
        let in_lead = self
            .leads
            .get(key)
            .and_then(|l| l.events.iter().position(|x| x.id == id));
        if let Some(pos) = in_lead {
            let removed = self.lead_for_change(key).events.remove(pos);
            if removed.role() == Role::Signup {
                self.withdraw_claims(key, id);
            }
            return Some(removed);
        }
        let d = key.strip_prefix(DEVICE_PREFIX)?;
        let dev = self.devices.get(d)?;
        let pos = dev.touches.iter().position(|x| x.id == id)?;
        let was_bare = dev.holds_own() && !self.leads.contains_key(key) && self.own.owns(key);
        let dev = self.device_for_change(d, None);
        let removed = dev.touches.remove(pos);
        if was_bare && !dev.holds_own() {
            self.bare_device_leads -= 1;
        }
        Some(removed)
    }

    /// The signup `id` of `lead` no longer counts: the devices it owned lose their owner and
    /// are looked up again (every claim of them, as ClickHouse's winners say).
    pub(super) fn withdraw_claims(&mut self, lead: &str, id: [u64; 2]) {
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
            let bare = !self.leads.contains_key(&*own_key) && self.own.owns(&own_key);
            let dev = self.device_for_change(&d, Some(&own_key));
            dev.owner = None;
            if bare && dev.holds_own() {
                self.bare_device_leads += 1;
            }
            self.want_lookup(&d, 0);
        }
    }

    /// Asks for the evicted leads [`Self::settle`] would read or change with these copies.
    pub fn need_for_settle(&mut self, check: &Check, copies: &[CopyRecord]) {
        for c in copies {
            self.need_lead(&c.lead_key);
        }
        if let Some((_, candidate)) = &check.tie {
            self.need_lead(&candidate.lead_key());
            if let Some(d) = &candidate.device_id {
                self.need_device(d);
            }
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
}
