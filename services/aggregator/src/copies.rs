//! One winner per event id inside the engine (README "Duplicates"): the earliest copy of an
//! event is the event, as in `lead_events` and the generator's truth.
//!
//! - A copy of an event its lead already holds is judged at once: an earlier one replaces the
//!   kept copy (a correction), a later one is a loser; equal times with an equal compact form
//!   are plain redeliveries. Equal times that differ (rare) are decided by the copy ranks
//!   stored in ClickHouse, at the next flush.
//! - A copy under another lead key (a source re-sending an id for another lead) is found by a
//!   Bloom filter of the ids this engine holds (with several members, every event is checked:
//!   the other copy may be another member's) and resolved at the next flush against
//!   `lead_event_copies`, which knows every lead key an id came under: the event stays only
//!   with the winner's lead. Whichever copy is stored second is consumed after the first was
//!   stored (the collector stores before it publishes), so its check sees both.
//! - A losing copy in another minute than the winner's gets a tombstone in
//!   `lead_events_by_minute` (the collector's view put it there).

use growable_bloom_filter::GrowableBloom;
use leadstream_schemas::{EventType, NormalizedEvent};
use rustc_hash::FxHashMap as HashMap;
use serde::Serialize;
use smol_str::SmolStr;

/// A copy of an event as `lead_event_copies` records it: the best copy under one lead key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyRecord {
    /// The lead key it came under.
    pub lead_key: SmolStr,
    /// Its event time, epoch ms.
    pub time_ms: i64,
    /// Its copy rank (the highest wins).
    pub rank: u128,
}

/// An event id to settle against ClickHouse at the next flush.
#[derive(Debug, Clone)]
pub struct Check {
    /// The event's type (the tables' key starts with it).
    pub event_type: EventType,
    /// The id, 32 hex characters.
    pub event_id: String,
    /// A copy of equal time but other content than the one its lead holds, with its rank:
    /// it replaces the kept copy if ClickHouse ranks it first.
    pub tie: Option<(u128, Box<NormalizedEvent>)>,
}

/// A row of `lead_events_by_minute` that hides a losing copy's minute. Its version is the
/// highest there is: no copy in a minute later than the winner's can ever become the winner.
/// The columns besides the key and the version are empty (a tombstone shows nothing).
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Serialize)]
pub struct MinuteTombstoneRow {
    /// The losing copy's minute, epoch seconds.
    pub minute: u32,
    /// Event type.
    pub event_type: &'static str,
    /// Event id.
    pub event_id: String,
    /// Event time, epoch ms (the minute's start).
    pub event_time: i64,
    /// Empty.
    pub channel: &'static str,
    /// Empty.
    pub variant: &'static str,
    /// Empty.
    pub currency: &'static str,
    /// None.
    pub amount: Option<i64>,
    /// Empty.
    pub source_topic: &'static str,
    /// The minute's start, epoch ms.
    pub received_at: i64,
    /// `u128::MAX`.
    pub copy_rank: u128,
    /// 1.
    pub is_deleted: u8,
}

/// The minute (epoch seconds) of an event time in epoch ms.
pub fn minute_of(time_ms: i64) -> u32 {
    (time_ms.div_euclid(60_000) * 60).clamp(0, i64::from(u32::MAX)) as u32
}

/// The engine's bookkeeping of copies.
#[derive(Debug)]
pub struct Copies {
    seen: GrowableBloom,
    /// Check every event, not only those the filter flags: other members hold other ids.
    check_all: bool,
    pending: HashMap<[u64; 2], Check>,
    tombstones: Vec<MinuteTombstoneRow>,
}

impl Copies {
    /// Bookkeeping for an engine that owns every partition (`check_all` false) or some.
    pub fn new(check_all: bool) -> Self {
        Self {
            seen: GrowableBloom::new(0.01, 100_000),
            check_all,
            pending: HashMap::default(),
            tombstones: Vec::new(),
        }
    }

    /// Records that the engine now holds `id`; `true` when another copy may be held (or, with
    /// several members, may be another member's): the id wants a check.
    pub fn holds(&mut self, id: [u64; 2]) -> bool {
        // `insert` is false when the filter already had it: one pass of hashing, not two.
        let new = self.seen.insert(id);
        self.check_all || !new
    }

    /// Forgets every id recorded: for an engine that then records the ids it holds again,
    /// when most recorded ids left it (idle eviction keeps those in a filter of its own).
    pub fn forget_ids(&mut self) {
        self.seen = GrowableBloom::new(0.01, 100_000);
    }

    /// Ids recorded since the last [`Self::forget_ids`] (an id recorded again, or one the filter
    /// takes for recorded already, does not count again).
    pub fn ids_recorded(&self) -> usize {
        self.seen.len()
    }

    /// Bytes of the id filter (its serialized size: the bit fields and a few counters).
    pub fn filter_bytes(&self) -> usize {
        postcard::to_stdvec(&self.seen).map_or(0, |b| b.len())
    }

    /// Whether every event is checked (several members).
    pub fn checks_all(&self) -> bool {
        self.check_all
    }

    /// Queues `check` (a tie keeps its candidate; a plain check does not replace one).
    pub fn want(&mut self, id: [u64; 2], check: Check) {
        use std::collections::hash_map::Entry;
        match self.pending.entry(id) {
            Entry::Occupied(mut o) => {
                if check.tie.is_some() {
                    o.insert(check);
                }
            }
            Entry::Vacant(v) => {
                v.insert(check);
            }
        }
    }

    /// The checks for the next flush.
    pub fn take_checks(&mut self) -> Vec<Check> {
        self.pending.drain().map(|(_, c)| c).collect()
    }

    /// Forgets pending checks (a rebuild reads only winners).
    pub fn clear_checks(&mut self) {
        self.pending.clear();
    }

    /// A copy at `loser_ms` lost to one at `winner_ms`: hide its minute when it differs.
    pub fn lost(&mut self, event_type: EventType, event_id: String, loser_ms: i64, winner_ms: i64) {
        let (loser, winner) = (minute_of(loser_ms), minute_of(winner_ms));
        if loser != winner {
            let at = i64::from(loser) * 1000;
            self.tombstones.push(MinuteTombstoneRow {
                minute: loser,
                event_type: event_type.as_str(),
                event_id,
                event_time: at,
                channel: "",
                variant: "",
                currency: "",
                amount: None,
                source_topic: "",
                received_at: at,
                copy_rank: u128::MAX,
                is_deleted: 1,
            });
        }
    }

    /// Tombstones since the last call.
    pub fn take_tombstones(&mut self) -> Vec<MinuteTombstoneRow> {
        std::mem::take(&mut self.tombstones)
    }

    /// Checks waiting.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

/// The winner among an id's copies: the highest rank.
pub fn winner(copies: &[CopyRecord]) -> Option<&CopyRecord> {
    copies.iter().max_by_key(|c| c.rank)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ids_seen_before_want_a_check_with_one_member() {
        let mut c = Copies::new(false);
        assert!(!c.holds([1, 2]));
        assert!(c.holds([1, 2]));
        let mut all = Copies::new(true);
        assert!(all.holds([3, 4]), "several members check every id");
    }

    #[test]
    fn a_loser_in_another_minute_is_hidden_and_one_in_the_winners_minute_is_not() {
        let mut c = Copies::new(false);
        c.lost(EventType::Order, "a".into(), 120_500, 60_000);
        c.lost(EventType::Order, "b".into(), 60_900, 60_000);
        let t = c.take_tombstones();
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].minute, t[0].event_id.as_str()), (120, "a"));
        assert_eq!(t[0].copy_rank, u128::MAX);
    }

    #[test]
    fn the_highest_rank_wins() {
        let r = |k: &str, rank| CopyRecord {
            lead_key: k.into(),
            time_ms: 0,
            rank,
        };
        let copies = [r("u-1", 5), r("u-2", 9), r("u-3", 7)];
        assert_eq!(winner(&copies).map(|w| w.lead_key.as_str()), Some("u-2"));
    }
}
