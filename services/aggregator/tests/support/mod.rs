//! Test support: a ClickHouse-free read model of the aggregator's rows (replacing semantics, as
//! `FINAL` gives them) and the generator's truth cells computed from it.

#![allow(dead_code)]

pub mod events;
pub mod evicted;
pub mod pair;

use leadstream_aggregator::rollup::{
    CohortBucket, CohortRollupRow, ReachBucket, ReachRollupRow, TransitionBucket,
    TransitionRollupRow,
};
use leadstream_aggregator::rows::{LeadFunnelRow, TransitionRow};
use leadstream_aggregator::{Funnels, Output};
use leadstream_generator::truth::Cell;
use leadstream_schemas::{ChannelRules, Normalizer, NormalizerConfig, Secret};
use smol_str::SmolStr;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The shipped funnels.
pub fn default_funnels() -> Arc<Funnels> {
    Arc::new(
        Funnels::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../config/funnel.yaml"
        )))
        .expect("config/funnel.yaml"),
    )
}

/// The collector's normalizer with the shipped channel rules.
pub fn normalizer(tz: chrono_tz::Tz, max_bytes: usize) -> Normalizer {
    let rules = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/channels.yaml"
    ))
    .expect("config/channels.yaml");
    Normalizer::new(NormalizerConfig {
        channel_rules: ChannelRules::from_yaml(&rules).expect("channel rules"),
        time_zone: tz,
        pii_salt: Secret::new("aggregator-test".into()),
        max_message_bytes: max_bytes,
        screening: Default::default(),
    })
}

/// `got` publishes what `want` publishes: every lead row and transition, and the rollup cells
/// of both shipped funnels.
pub fn assert_same_answers(got: &ReadModel, want: &ReadModel) {
    assert_eq!(events::snapshot(got), events::snapshot(want));
    for (f, n) in [("b2c", 6), ("sales", 4)] {
        assert_eq!(
            got.rollup_cells(f, n),
            want.rollup_cells(f, n),
            "{f} rollups"
        );
    }
}

/// What ClickHouse's `FINAL` shows after all writes: newest version per key, tombstones dropped.
#[derive(Default)]
pub struct ReadModel {
    transitions: HashMap<(SmolStr, SmolStr, u16), TransitionRow>,
    leads: HashMap<(SmolStr, SmolStr), LeadFunnelRow>,
    cohort: HashMap<CohortBucket, CohortRollupRow>,
    reach: HashMap<ReachBucket, ReachRollupRow>,
    moves: HashMap<TransitionBucket, TransitionRollupRow>,
}

/// Keeps the newest version per key (what `FINAL` shows).
fn replace<K: std::hash::Hash + Eq, R>(
    map: &mut HashMap<K, R>,
    key: K,
    row: R,
    version: impl Fn(&R) -> u64,
) {
    match map.get(&key) {
        Some(old) if version(old) > version(&row) => {}
        _ => {
            map.insert(key, row);
        }
    }
}

impl ReadModel {
    /// Applies one flush's rows.
    pub fn apply(&mut self, out: Output) {
        assert!(
            out.unresolved.is_empty(),
            "rows of buckets that may be stored are resolved before they are written"
        );
        for r in out.cohort_rollup {
            replace(&mut self.cohort, r.bucket(), r, |r| r.version);
        }
        for r in out.reach_rollup {
            replace(&mut self.reach, r.bucket(), r, |r| r.version);
        }
        for r in out.transition_rollup {
            replace(&mut self.moves, r.bucket(), r, |r| r.version);
        }
        for r in out.transitions {
            let k = (r.funnel.clone(), r.lead_id.clone(), r.seq);
            replace(&mut self.transitions, k, r, |r| r.version);
        }
        for r in out.leads {
            let k = (r.funnel.clone(), r.lead_id.clone());
            replace(&mut self.leads, k, r, |r| r.version);
        }
    }

    /// Live lead rows of a funnel.
    pub fn leads(&self, funnel: &str) -> Vec<&LeadFunnelRow> {
        let mut v: Vec<_> = self
            .leads
            .values()
            .filter(|r| r.funnel == funnel && r.is_deleted == 0)
            .collect();
        v.sort_by(|a, b| a.lead_id.cmp(&b.lead_id));
        v
    }

    /// Live transitions of a funnel, by lead then seq.
    pub fn transitions(&self, funnel: &str) -> Vec<&TransitionRow> {
        let mut v: Vec<_> = self
            .transitions
            .values()
            .filter(|r| r.funnel == funnel && r.is_deleted == 0)
            .collect();
        v.sort_by(|a, b| (&a.lead_id, a.seq).cmp(&(&b.lead_id, b.seq)));
        v
    }

    /// Rows of the partitions in `since` with a version newer than the partition's there
    /// (what the service reads back before settling a checkpoint restore); `partition_of`
    /// maps a lead key to its partition.
    pub fn stale(
        &self,
        partition_of: impl Fn(&str) -> u32,
        since: &HashMap<u32, u64>,
    ) -> leadstream_aggregator::engine::Stale {
        let newer = |p: u32, v: u64| since.get(&p).is_some_and(|s| v > *s);
        let mut leads: HashMap<(SmolStr, SmolStr), u16> = HashMap::new();
        for r in self.leads.values() {
            if newer(partition_of(&r.lead_id), r.version) {
                let n = leads
                    .entry((r.funnel.clone(), r.lead_id.clone()))
                    .or_default();
                *n = (*n).max(r.transitions);
            }
        }
        for r in self.transitions.values() {
            if newer(partition_of(&r.lead_id), r.version) {
                let n = leads
                    .entry((r.funnel.clone(), r.lead_id.clone()))
                    .or_default();
                *n = (*n).max(r.seq + 1);
            }
        }
        let rollups = Output {
            cohort_rollup: (self.cohort.values())
                .filter(|r| newer(u32::from(r.partition), r.version))
                .cloned()
                .collect(),
            reach_rollup: (self.reach.values())
                .filter(|r| newer(u32::from(r.partition), r.version))
                .cloned()
                .collect(),
            transition_rollup: (self.moves.values())
                .filter(|r| newer(u32::from(r.partition), r.version))
                .cloned()
                .collect(),
            ..Output::default()
        };
        leadstream_aggregator::engine::Stale {
            leads: leads.into_iter().map(|((f, l), n)| (f, l, n)).collect(),
            rollups,
        }
    }

    /// What the service does before a rebuilt engine's first flush: tombstones every live
    /// rollup bucket of the partitions (the flush rewrites those that still exist, newer).
    pub fn tombstone_rollups(&mut self, partitions: &[u32], version: u64) {
        let mine = |p: u16| partitions.contains(&u32::from(p));
        for r in self.cohort.values_mut().filter(|r| mine(r.partition)) {
            (r.leads, r.is_deleted, r.version) = (0, 1, version);
        }
        for r in self.reach.values_mut().filter(|r| mine(r.partition)) {
            (r.leads, r.is_deleted, r.version) = (0, 1, version);
        }
        for r in self.moves.values_mut().filter(|r| mine(r.partition)) {
            (r.transitions, r.is_deleted, r.version) = (0, 1, version);
        }
    }

    /// The same cells as [`ReadModel::cells`], computed from the rollup rows alone; also
    /// checks that the reach rollup counts every lead's first reach of each stage once.
    pub fn rollup_cells(&self, funnel: &str, stages: usize) -> (Cell, Vec<Cell>) {
        let new_cell = |f: &str, l: &str, v: &str| Cell {
            first_touch: f.into(),
            last_touch: l.into(),
            variant: v.into(),
            reached: vec![0; stages],
            occupancy: vec![0; stages],
            ..Cell::default()
        };
        let mut totals = new_cell("*", "*", "*");
        let mut cells: BTreeMap<(String, String, String), Cell> = BTreeMap::new();
        for r in self.cohort.values() {
            if r.funnel != funnel || r.is_deleted == 1 {
                continue;
            }
            assert!(r.leads > 0, "a live cohort bucket counts leads: {r:?}");
            let key = (
                r.first_touch.to_string(),
                r.last_touch.to_string(),
                r.variant.to_string(),
            );
            let cell = cells
                .entry(key.clone())
                .or_insert_with(|| new_cell(&key.0, &key.1, &key.2));
            let n = r.leads as u64;
            for c in [&mut totals, cell] {
                c.leads += n;
                for k in 0..=r.furthest_index {
                    if k >= 0 {
                        c.reached[k as usize] += n;
                    }
                }
                if r.lost == 1 {
                    c.lost += n;
                } else if r.current_index >= 0 {
                    c.occupancy[r.current_index as usize] += n;
                }
            }
        }
        let mut first_reaches = vec![0u64; stages];
        for r in self.reach.values() {
            if r.funnel == funnel && r.is_deleted == 0 {
                first_reaches[r.stage_index as usize] += r.leads as u64;
            }
        }
        assert_eq!(
            first_reaches, totals.reached,
            "{funnel}: first reaches per stage"
        );
        for r in self.moves.values() {
            if r.funnel != funnel || r.is_deleted == 1 {
                continue;
            }
            let key = (
                r.first_touch.to_string(),
                r.last_touch.to_string(),
                r.variant.to_string(),
            );
            let cell = cells
                .get_mut(&key)
                .expect("a transition bucket of a cell without leads");
            let n = r.transitions as u64;
            for c in [&mut totals, cell] {
                *c.transitions.entry(r.kind.to_string()).or_default() += n;
                let from = if r.from_stage.is_empty() {
                    "none".to_string()
                } else {
                    r.from_stage.to_string()
                };
                let slot = match r.kind.as_str() {
                    "lost" => Some(&mut c.losses),
                    "backflow" => Some(&mut c.backflows),
                    _ => None,
                };
                if let Some(m) = slot {
                    *m.entry(from)
                        .or_default()
                        .entry(r.reason.to_string())
                        .or_default() += n;
                }
            }
        }
        (totals, cells.into_values().collect())
    }

    /// Truth-shaped cells per (first touch, last touch, variant), and the totals.
    pub fn cells(&self, funnel: &str, stages: usize) -> (Cell, Vec<Cell>) {
        let new_cell = |f: &str, l: &str, v: &str| Cell {
            first_touch: f.into(),
            last_touch: l.into(),
            variant: v.into(),
            reached: vec![0; stages],
            occupancy: vec![0; stages],
            ..Cell::default()
        };
        let mut totals = new_cell("*", "*", "*");
        let mut cells: BTreeMap<(String, String, String), Cell> = BTreeMap::new();
        let mut by_lead: HashMap<&str, (String, String, String)> = HashMap::new();
        for r in self.leads(funnel) {
            let key = (
                r.first_touch.to_string(),
                r.last_touch.to_string(),
                r.variant.to_string(),
            );
            by_lead.insert(&r.lead_id, key.clone());
            let cell = cells
                .entry(key.clone())
                .or_insert_with(|| new_cell(&key.0, &key.1, &key.2));
            for c in [&mut totals, cell] {
                c.leads += 1;
                for k in 0..=r.furthest_index {
                    if k >= 0 {
                        c.reached[k as usize] += 1;
                    }
                }
                if r.lost == 1 {
                    c.lost += 1;
                } else if r.current_index >= 0 {
                    c.occupancy[r.current_index as usize] += 1;
                }
            }
        }
        for t in self.transitions(funnel) {
            let key = by_lead
                .get(t.lead_id.as_str())
                .unwrap_or_else(|| panic!("transition of lead {} without a lead row", t.lead_id))
                .clone();
            let cell = cells.get_mut(&key).expect("cell");
            for c in [&mut totals, cell] {
                *c.transitions.entry(t.kind.into()).or_default() += 1;
                let from = if t.from_stage.is_empty() {
                    "none".to_string()
                } else {
                    t.from_stage.to_string()
                };
                let slot = match t.kind {
                    "lost" => Some(&mut c.losses),
                    "backflow" => Some(&mut c.backflows),
                    _ => None,
                };
                if let Some(m) = slot {
                    *m.entry(from)
                        .or_default()
                        .entry(t.reason.to_string())
                        .or_default() += 1;
                }
            }
        }
        (totals, cells.into_values().collect())
    }
}

/// What ClickHouse holds of the events for the engine's questions: every copy the collector
/// stored, as `lead_event_copies` (best copy per id and lead key) and `lead_events_unique`
/// (the winner per id) answer them.
#[derive(Default)]
pub struct FakeStore {
    copies: HashMap<String, HashMap<SmolStr, (u128, leadstream_schemas::NormalizedEvent)>>,
    /// `lead_events_by_minute` as FINAL shows it: (minute, id) → (version, deleted).
    minutes: HashMap<(u32, String), (u128, bool)>,
}

impl FakeStore {
    /// The collector stored `e` (before publishing it).
    pub fn store(&mut self, e: &leadstream_schemas::NormalizedEvent) {
        let rank = e.copy_rank();
        let minute = leadstream_aggregator::copies::minute_of(e.event_time.timestamp_millis());
        self.replace_minute(minute, &e.event_id, rank, false);
        let by_lead = self.copies.entry(e.event_id.clone()).or_default();
        let key = SmolStr::new(e.lead_key());
        match by_lead.get(&key) {
            Some((r, _)) if *r >= rank => {}
            _ => {
                by_lead.insert(key, (rank, e.clone()));
            }
        }
    }

    fn replace_minute(&mut self, minute: u32, id: &str, version: u128, deleted: bool) {
        let slot = self
            .minutes
            .entry((minute, id.to_string()))
            .or_insert((0, false));
        if version >= slot.0 {
            *slot = (version, deleted);
        }
    }

    /// Applies the tombstones a flush wrote to `lead_events_by_minute`.
    pub fn hide(&mut self, tombstones: &[leadstream_aggregator::copies::MinuteTombstoneRow]) {
        for t in tombstones {
            self.replace_minute(t.minute, &t.event_id, t.copy_rank, t.is_deleted == 1);
        }
    }

    /// Rows `lead_events_by_minute FINAL` shows.
    pub fn live_minutes(&self) -> usize {
        self.minutes
            .values()
            .filter(|(_, deleted)| !deleted)
            .count()
    }

    fn winners(&self) -> impl Iterator<Item = &leadstream_schemas::NormalizedEvent> {
        self.copies
            .values()
            .filter_map(|m| m.values().max_by_key(|(r, _)| *r).map(|(_, e)| e))
    }

    /// `lead_event_copies` for one check.
    pub fn copies_of(
        &self,
        c: &leadstream_aggregator::copies::Check,
    ) -> Vec<leadstream_aggregator::copies::CopyRecord> {
        self.copies
            .get(&c.event_id)
            .map(|m| {
                m.iter()
                    .map(|(k, (rank, e))| leadstream_aggregator::copies::CopyRecord {
                        lead_key: k.clone(),
                        time_ms: e.event_time.timestamp_millis(),
                        rank: *rank,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// What the service's device lookup reads (claims and anonymous touches among the winners).
    pub fn lookup(
        &self,
        l: &leadstream_aggregator::engine::Lookup,
    ) -> (
        Vec<leadstream_aggregator::engine::ClaimRecord>,
        Vec<leadstream_schemas::NormalizedEvent>,
    ) {
        use leadstream_schemas::EventType;
        let device = Some(&*l.device);
        let claims = self
            .winners()
            .filter(|e| e.event_type == EventType::Signup && e.lead_id.is_some())
            .filter(|e| e.device_id.as_deref() == device)
            .map(|e| leadstream_aggregator::engine::ClaimRecord {
                lead: e.lead_id.as_deref().unwrap_or_default().into(),
                time_ms: e.event_time.timestamp_millis(),
                event_id: e.event_id.clone(),
            })
            .collect();
        let touches = if l.touches {
            self.winners()
                .filter(|e| matches!(e.event_type, EventType::Exposure | EventType::Click))
                .filter(|e| e.lead_id.is_none() && e.device_id.as_deref() == device)
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        (claims, touches)
    }

    /// Answers everything the engine asks before a flush, as the service does.
    pub fn answer(&self, engine: &mut leadstream_aggregator::Engine) {
        for c in engine.take_checks() {
            let copies = self.copies_of(&c);
            engine.settle(&c, &copies);
        }
        for l in engine.take_lookups() {
            let (claims, touches) = self.lookup(&l);
            engine.learn(&l, &claims, &touches);
        }
    }
}
