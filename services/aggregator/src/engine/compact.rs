//! How the engine holds an event: 32 bytes, with its strings and rule matches interned.

use super::NONE;
use crate::machine::Step;
use leadstream_schemas::EventType;
use rustc_hash::FxHashMap as HashMap;
use std::hash::{Hash, Hasher};

/// Interned strings (channels, variants, reasons); symbol 0 is "absent".
#[derive(Debug, Default)]
pub(super) struct Symbols {
    pub(super) names: Vec<Box<str>>,
    pub(super) index: HashMap<Box<str>, u16>,
}

/// Distinct values beyond this share one symbol, so a hostile feed cannot grow the table.
pub(super) const MAX_SYMBOLS: usize = u16::MAX as usize - 1;
pub(super) const OVERFLOW: &str = "(too many distinct values)";

impl Symbols {
    pub(super) fn new() -> Self {
        Self {
            names: vec!["".into()],
            index: HashMap::default(),
        }
    }

    pub(super) fn intern(&mut self, s: Option<&str>) -> u16 {
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

    pub(super) fn name(&self, i: u16) -> &str {
        &self.names[i as usize]
    }

    pub(super) fn or_none(&self, i: u16) -> &str {
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
pub(super) enum Role {
    /// Exposure or click.
    Touch,
    /// Signup.
    Signup,
    /// Anything else.
    Other,
}

impl Role {
    pub(super) fn of(t: EventType) -> Self {
        match t {
            EventType::Exposure | EventType::Click => Role::Touch,
            EventType::Signup => Role::Signup,
            _ => Role::Other,
        }
    }
}

/// One event as the engine keeps it: 32 bytes, since events are most of the memory per lead.
#[derive(Debug, Clone, Copy)]
pub(super) struct CompactEvent {
    /// Event time in epoch ms shifted left 16 (the contract bounds it to 2000..2100, far inside
    /// 48 bits), then the role (8 bits) and the index in `EventType::ALL` (8 bits).
    pub(super) packed: i64,
    /// The 128-bit event id (32 hex characters by the collector's contract).
    pub(super) id: [u64; 2],
    /// Which rules of which funnels match it, interned (see [`Masks`]).
    pub(super) rules: u16,
    pub(super) channel: u16,
    pub(super) variant: u16,
    pub(super) reason: u16,
}

const _: () = assert!(std::mem::size_of::<CompactEvent>() == 32);

impl CompactEvent {
    pub(super) fn time_ms(&self) -> i64 {
        self.packed >> 16
    }

    pub(super) fn role(&self) -> Role {
        match (self.packed >> 8) as u8 {
            0 => Role::Touch,
            1 => Role::Signup,
            _ => Role::Other,
        }
    }

    pub(super) fn event_type(&self) -> EventType {
        EventType::ALL[(self.packed as u8 as usize).min(EventType::ALL.len() - 1)]
    }

    pub(super) fn key(&self) -> (i64, [u64; 2]) {
        (self.packed >> 16, self.id)
    }

    /// The id as the collector wrote it: 32 lowercase hex digits. By hand, not `format!`: one
    /// per transition row, and the formatting machinery was a tenth of a flush.
    pub(super) fn event_id(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(32);
        for word in self.id {
            for shift in (0..16).rev() {
                s.push(HEX[(word >> (shift * 4)) as usize & 0xf] as char);
            }
        }
        s
    }

    pub(super) fn step(&self, masks: &Masks) -> Step {
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
pub(super) struct Masks {
    pub(super) list: Vec<u64>,
    pub(super) index: HashMap<u64, u16>,
    pub(super) overflow: HashMap<[u64; 2], u64>,
}

pub(super) const MASK_OVERFLOW: u16 = u16::MAX;

impl Masks {
    pub(super) fn intern(&mut self, mask: u64, id: [u64; 2]) -> u16 {
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

    pub(super) fn get(&self, e: &CompactEvent) -> u64 {
        match self.list.get(e.rules as usize) {
            Some(&m) => m,
            None => self.overflow.get(&e.id).copied().unwrap_or_default(),
        }
    }
}

/// The event id as two u64 (hex order = numeric order, so sorting by it equals sorting by the
/// id string); ids that are not 32 hex characters are hashed.
pub(super) fn parse_id(id: &str) -> [u64; 2] {
    // By hand: once per event, and `from_str_radix` was a tenth of `ingest`.
    fn word(hex: &[u8]) -> Option<u64> {
        hex.iter().try_fold(0u64, |v, &c| {
            let digit = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return None,
            };
            Some(v << 4 | u64::from(digit))
        })
    }
    let bytes = id.as_bytes();
    if bytes.len() == 32 {
        if let (Some(a), Some(b)) = (word(&bytes[..16]), word(&bytes[16..])) {
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
pub(super) fn insert_sorted(v: &mut Vec<CompactEvent>, c: CompactEvent) -> Option<usize> {
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(super) fn event(
        time_ms: i64,
        role: Role,
        event_type: u8,
        id: u64,
        rules: u16,
    ) -> CompactEvent {
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
    pub(super) fn packed_events_give_back_time_role_and_type() {
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
    fn event_ids_render_back_to_the_collectors_hex() {
        for id in [
            "0123456789abcdeffedcba9876543210",
            "00000000000000000000000000000000",
            "ffffffffffffffff000000000000000a",
        ] {
            let e = CompactEvent {
                id: parse_id(id),
                ..event(0, Role::Other, 0, 0, 0)
            };
            assert_eq!(e.event_id(), id);
            assert_eq!(parse_id(&id.to_uppercase()), parse_id(id));
        }
        // Not the contract's form: hashed, never sliced inside a character.
        let odd = "é0123456789abcdef0123456789abcd";
        assert_eq!(odd.len(), 32);
        assert_eq!(parse_id(odd), parse_id(odd));
        assert_ne!(parse_id(odd), parse_id("00000000000000000000000000000000"));
    }

    #[test]
    pub(super) fn masks_beyond_16_bits_are_kept_by_event_id() {
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
