//! Scale-out: several engines, each owning some partitions of `leads.normalized`, stitching
//! devices to users through recheck messages and ClickHouse lookups, end with exactly the rows
//! one engine owning everything publishes. In-process fakes stand in for the broker (per
//! partition queues) and ClickHouse (the list of events written); the service runs the same
//! calls against the real ones.

mod support;

use leadstream_aggregator::engine::{ClaimRecord, Lookup, Ownership};
use leadstream_aggregator::Engine;
use leadstream_schemas::{EventType, NormalizedEvent};
use proptest::prelude::*;
use smol_str::SmolStr;
use std::collections::HashSet;
use support::events::{snapshot, story};
use support::{default_funnels, ReadModel};

const LATENESS_MS: i64 = 3_600_000;

/// One consumer-group member.
struct Node {
    engine: Engine,
    parts: Vec<u32>,
    /// Read positions (normalized, stitch) per owned partition.
    pos: Vec<(u32, usize, usize)>,
}

struct Cluster {
    partitions: u32,
    /// "ClickHouse": distinct events written so far (the collector writes before it publishes).
    stored: Vec<NormalizedEvent>,
    ids: HashSet<String>,
    normalized: Vec<Vec<NormalizedEvent>>,
    stitch: Vec<Vec<SmolStr>>,
    committed: Vec<(usize, usize)>,
    nodes: Vec<Node>,
    version: u64,
    model: ReadModel,
    rechecks_sent: usize,
    /// Offsets are committed only with checkpoints, and members restore from them.
    checkpointing: bool,
    /// Per partition: the newest checkpoint.
    checkpoints: Vec<Option<Saved>>,
    restored_from_checkpoints: usize,
    /// `state.idle_after` of the members (only a member owning every partition evicts).
    idle_ms: Option<i64>,
    /// `state.rollup_idle_after` of the members (`idle_ms` unless set).
    rollup_idle_ms: Option<i64>,
    evicted: support::evicted::EvictedStore,
    groups_evicted: usize,
    /// Every copy stored, for the copy checks a single evicting member answers.
    copies: support::FakeStore,
    /// `state.allowed_lateness` of the members: settled events are older than the newest
    /// minus this.
    lateness_ms: i64,
    /// `attribution.lookback` of the members and of the engine they are compared with.
    lookback_ms: Option<i64>,
    /// Leads with fewer settled inputs are not folded.
    fold_min: Option<usize>,
}

/// A partition's checkpoint: its bytes, the version of the flush it follows, the positions
/// (normalized, stitch) it covers.
type Saved = (Vec<u8>, u64, (usize, usize));

/// What the checkpoints of this test's configuration are taken under.
const CONFIG: u64 = 7;

fn is_touch(e: &NormalizedEvent) -> bool {
    matches!(e.event_type, EventType::Exposure | EventType::Click) && e.lead_id.is_none()
}

impl Cluster {
    fn new(partitions: u32, members: usize) -> Self {
        Self::with_lateness(partitions, members, LATENESS_MS)
    }

    fn with_lateness(partitions: u32, members: usize, lateness_ms: i64) -> Self {
        let mut c = Self {
            partitions,
            stored: Vec::new(),
            ids: HashSet::new(),
            normalized: vec![Vec::new(); partitions as usize],
            stitch: vec![Vec::new(); partitions as usize],
            committed: vec![(0, 0); partitions as usize],
            nodes: Vec::new(),
            version: 0,
            model: ReadModel::default(),
            rechecks_sent: 0,
            checkpointing: false,
            checkpoints: vec![None; partitions as usize],
            restored_from_checkpoints: 0,
            idle_ms: None,
            rollup_idle_ms: None,
            evicted: Default::default(),
            groups_evicted: 0,
            copies: support::FakeStore::default(),
            lateness_ms,
            lookback_ms: None,
            fold_min: None,
        };
        c.rebalance(members, 0);
        c
    }

    /// One member checkpointing and evicting leads idle for `idle_ms`.
    fn evicting(partitions: u32, idle_ms: i64) -> Self {
        Self::evicting_with(partitions, idle_ms, LATENESS_MS)
    }

    /// [`Self::evicting`] with `state.allowed_lateness` at `lateness_ms`.
    fn evicting_with(partitions: u32, idle_ms: i64, lateness_ms: i64) -> Self {
        let mut c = Self::with_lateness(partitions, 1, lateness_ms);
        c.checkpointing = true;
        c.idle_ms = Some(idle_ms);
        c.configure(0);
        c
    }

    /// Member `m`'s engine gets the eviction settings.
    fn configure(&mut self, m: usize) {
        let mut engine = std::mem::replace(
            &mut self.nodes[m].engine,
            Engine::new(default_funnels(), LATENESS_MS),
        );
        self.configure_engine(&mut engine);
        self.nodes[m].engine = engine;
    }

    fn configure_engine(&self, engine: &mut Engine) {
        engine.set_idle_after(self.idle_ms);
        if let Some(ms) = self.lookback_ms {
            engine.set_lookback(ms);
        }
        if let Some(n) = self.fold_min {
            engine.set_fold_min(n);
        }
        if let Some(ms) = self.rollup_idle_ms {
            engine.set_rollup_idle_after(ms);
        }
    }

    fn partition(&self, key: &str) -> usize {
        everything(self.partitions).partition(key) as usize
    }

    /// The collector: store, then publish keyed by lead.
    fn arrive(&mut self, e: &NormalizedEvent) {
        self.copies.store(e);
        if self.ids.insert(e.event_id.clone()) {
            self.stored.push(e.clone());
        }
        let p = self.partition(&e.lead_key());
        self.normalized[p].push(e.clone());
    }

    fn next_version(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    /// What the service's ClickHouse lookup returns for a device.
    fn lookup(&self, l: &Lookup) -> (Vec<ClaimRecord>, Vec<NormalizedEvent>) {
        let claims = self
            .stored
            .iter()
            .filter(|e| e.event_type == EventType::Signup && e.lead_id.is_some())
            .filter(|e| e.device_id.as_deref() == Some(&*l.device))
            .map(|e| ClaimRecord {
                lead: e.lead_id.as_deref().unwrap_or_default().into(),
                time_ms: e.event_time.timestamp_millis(),
                event_id: e.event_id.clone(),
            })
            .collect();
        let touches = if l.touches {
            self.stored
                .iter()
                .filter(|e| is_touch(e) && e.device_id.as_deref() == Some(&*l.device))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        (claims, touches)
    }

    /// Every member drops its state and rebuilds for a new assignment (an eager rebalance);
    /// `shift` rotates which member gets which partitions.
    fn rebalance(&mut self, members: usize, shift: usize) {
        let members = members.max(1);
        let mut nodes = Vec::new();
        for m in 0..members {
            let parts: Vec<u32> = (0..self.partitions)
                .filter(|p| (*p as usize + shift) % members == m)
                .collect();
            let own = Ownership::new(self.partitions, parts.iter().copied());
            let engine = match self.restore(&own) {
                Some(engine) => engine,
                None => self.rebuild(&own, &parts),
            };
            let pos = parts
                .iter()
                .map(|p| {
                    let (n, s) = self.committed[*p as usize];
                    (*p, n, s)
                })
                .collect();
            nodes.push(Node { engine, parts, pos });
        }
        self.nodes = nodes;
    }

    /// An engine for `own` rebuilt from everything stored (as the service rebuilds from history).
    fn rebuild(&mut self, own: &Ownership, parts: &[u32]) -> Engine {
        let mut engine = Engine::with_ownership(default_funnels(), self.lateness_ms, own.clone());
        self.configure_engine(&mut engine);
        for f in ["b2c", "sales"] {
            for r in self.model.leads(f) {
                if own.owns(&r.lead_id) {
                    engine.seed_published(f, &r.lead_id, r.transitions);
                }
            }
        }
        let mut sorted: Vec<&NormalizedEvent> = self
            .stored
            .iter()
            .filter(|e| own.owns(&e.lead_key()))
            .collect();
        sorted.sort_by_key(|e| e.event_time);
        for e in sorted {
            engine.ingest(e, 0);
        }
        engine.clear_lookups();
        let devices: Vec<(SmolStr, bool)> = engine
            .known_devices()
            .map(|(d, foreign)| (SmolStr::new(d), foreign))
            .collect();
        for (d, foreign) in devices {
            let l = Lookup::refresh(d, foreign);
            let (claims, touches) = self.lookup(&l);
            engine.learn(&l, &claims, &touches);
        }
        let v = self.next_version();
        self.model.tombstone_rollups(parts, v);
        let out = engine.flush(self.next_version());
        self.model.apply(out);
        engine
    }

    /// An engine for `own` from the checkpoints of its partitions (as the service restores),
    /// `None` when one is missing or they disagree.
    fn restore(&mut self, own: &Ownership) -> Option<Engine> {
        if !self.checkpointing {
            return None;
        }
        let mut engine = Engine::with_ownership(default_funnels(), self.lateness_ms, own.clone());
        self.configure_engine(&mut engine);
        let mut since = std::collections::HashMap::new();
        for p in own.owned() {
            let (bytes, version, _) = self.checkpoints[p as usize].as_ref()?;
            engine.load_checkpoint(bytes, CONFIG).ok()?;
            since.insert(p, *version);
        }
        engine.restored();
        let everything = everything(self.partitions);
        let stale = self.model.stale(|k| everything.partition(k), &since);
        engine.need_for_stale(&stale);
        self.reload_into(&mut engine);
        let v = self.next_version();
        let mut fixes = engine.settle_stale(stale, v);
        self.evicted.resolve(&mut engine, &mut fixes);
        self.model.apply(fixes);
        let mut out = engine.flush(self.next_version());
        self.evicted.resolve(&mut engine, &mut out);
        self.model.apply(out);
        self.restored_from_checkpoints += 1;
        Some(engine)
    }

    /// Member `m` checkpoints its partitions (right after a flush) and commits its positions.
    fn checkpoint(&mut self, m: usize) {
        self.flush(m);
        let version = self.version;
        // Idle groups and buckets are stored, then leave memory, before the checkpoint that
        // lacks them.
        self.groups_evicted += self.evicted.evict_idle(&mut self.nodes[m].engine, version);
        let node = &self.nodes[m];
        for (p, bytes) in node.engine.checkpoints(CONFIG) {
            let (_, n, s) = node.pos.iter().find(|(q, _, _)| *q == p).copied().unwrap();
            self.checkpoints[p as usize] = Some((bytes, version, (n, s)));
            self.committed[p as usize] = (n, s);
        }
        self.nodes[m].engine.checkpoint_written();
    }

    /// Member `m` flushes and stores its idle groups, then dies before its checkpoint is
    /// written (every member restarts from the checkpoints before).
    fn evict_then_crash(&mut self, m: usize) {
        self.flush(m);
        self.evicted.store_idle(&self.nodes[m].engine, self.version);
        let members = self.nodes.len();
        self.rebalance(members, 0);
    }

    /// Member `m` consumes up to `k` messages of its partitions.
    fn consume(&mut self, m: usize, k: usize) -> usize {
        let node = &mut self.nodes[m];
        let mut done = 0;
        for (p, n, s) in node.pos.iter_mut() {
            while done < k && *n < self.normalized[*p as usize].len() {
                node.engine.ingest(&self.normalized[*p as usize][*n], 0);
                *n += 1;
                done += 1;
            }
            while done < k && *s < self.stitch[*p as usize].len() {
                node.engine.recheck(&self.stitch[*p as usize][*s]);
                *s += 1;
                done += 1;
            }
        }
        done
    }

    /// Member `m` flushes: lookups, rows, rechecks for the others; then commits its positions.
    fn flush(&mut self, m: usize) {
        self.reload(m);
        // Copy checks are answered where copies under several leads are played (one member).
        if self.idle_ms.is_some() {
            for c in self.nodes[m].engine.take_checks() {
                let copies = self.copies.copies_of(&c);
                self.nodes[m].engine.need_for_settle(&c, &copies);
                self.reload(m);
                self.nodes[m].engine.settle(&c, &copies);
            }
        }
        let lookups = self.nodes[m].engine.take_lookups();
        let found: Vec<_> = match self.idle_ms {
            // Claims among the winners (copies may name other leads).
            Some(_) => lookups.iter().map(|l| self.copies.lookup(l)).collect(),
            None => lookups.iter().map(|l| self.lookup(l)).collect(),
        };
        for (l, (claims, _)) in lookups.iter().zip(&found) {
            self.nodes[m].engine.need_for_learn(l, claims);
        }
        self.reload(m);
        for (l, (claims, touches)) in lookups.iter().zip(found) {
            self.nodes[m].engine.learn(l, &claims, &touches);
        }
        let v = self.next_version();
        let mut out = self.nodes[m].engine.flush(v);
        self.evicted.resolve(&mut self.nodes[m].engine, &mut out);
        self.model.apply(out);
        for key in self.nodes[m].engine.take_notifications() {
            let p = self.partition(&key);
            assert!(
                !self.nodes[m].parts.contains(&(p as u32)),
                "a recheck for an owned lead {key} went out"
            );
            self.stitch[p].push(key);
            self.rechecks_sent += 1;
        }
        if !self.checkpointing {
            for (p, n, s) in self.nodes[m].pos.clone() {
                self.committed[p as usize] = (n, s);
            }
        }
    }

    /// Member `m` reads back the evicted groups its engine asks for, as the service does.
    fn reload(&mut self, m: usize) {
        let mut engine = std::mem::replace(
            &mut self.nodes[m].engine,
            Engine::new(default_funnels(), LATENESS_MS),
        );
        self.reload_into(&mut engine);
        self.nodes[m].engine = engine;
    }

    fn reload_into(&mut self, engine: &mut Engine) {
        self.evicted.reload(engine);
    }

    /// Runs every member until nothing is left to consume.
    fn drain(&mut self) {
        for _ in 0..100 {
            let mut moved = 0;
            for m in 0..self.nodes.len() {
                moved += self.consume(m, usize::MAX);
                self.flush(m);
            }
            if moved == 0 {
                return;
            }
        }
        panic!("rechecks never settled");
    }
}

/// Every one of `partitions` partitions: the mapping of keys alone.
fn everything(partitions: u32) -> Ownership {
    Ownership::new(partitions, 0..partitions)
}

fn single_engine(events: &[NormalizedEvent]) -> ReadModel {
    single_engine_with(events, None)
}

/// One engine holding all history (attribution lookback `lookback_ms` if given), fed the
/// events in time order.
fn single_engine_with(events: &[NormalizedEvent], lookback_ms: Option<i64>) -> ReadModel {
    let mut sorted = events.to_vec();
    sorted.sort_by(|a, b| (a.event_time, &a.event_id).cmp(&(b.event_time, &b.event_id)));
    let mut engine = Engine::new(default_funnels(), LATENESS_MS);
    if let Some(ms) = lookback_ms {
        engine.set_lookback(ms);
    }
    let mut store = support::FakeStore::default();
    for e in &sorted {
        store.store(e);
        engine.ingest(e, 0);
    }
    // Copies of one id under several leads: the earliest stays (settling may queue lookups).
    store.answer(&mut engine);
    store.answer(&mut engine);
    let mut model = ReadModel::default();
    model.apply(engine.flush(1));
    model
}

/// Plays `schedule` on `c` (events arrive a few at a time while members consume, flush,
/// checkpoint or rebalance), delivers the rest, drains, and compares with one engine.
fn play(
    mut c: Cluster,
    events: &[NormalizedEvent],
    dups: &[proptest::sample::Index],
    schedule: Vec<(usize, usize, u8)>,
    members: usize,
) -> Result<(), TestCaseError> {
    let want = single_engine_with(events, c.lookback_ms);
    let mut arrivals = events.to_vec();
    for d in dups {
        arrivals.push(events[d.index(events.len())].clone());
    }
    let mut next = 0;
    for (m, k, action) in schedule {
        for e in arrivals.iter().skip(next).take(2) {
            c.arrive(e);
        }
        next = (next + 2).min(arrivals.len());
        let m = m % c.nodes.len();
        c.consume(m, k);
        match action {
            // A rebalance drops what was consumed but not committed (it is read again).
            0 => c.rebalance(members, k),
            1 => c.rebalance((members - 1).max(1), k),
            2..=4 => c.flush(m),
            5..=6 if c.checkpointing => c.checkpoint(m),
            5..=6 => c.flush(m),
            7 if c.idle_ms.is_some() => c.evict_then_crash(m),
            _ => {}
        }
    }
    for e in arrivals.iter().skip(next) {
        c.arrive(e);
    }
    c.drain();
    prop_assert_eq!(snapshot(&c.model), snapshot(&want));
    // Rollup buckets written by several members (per partition) sum to one engine's.
    for (f, n) in [("b2c", 6), ("sales", 4)] {
        prop_assert_eq!(c.model.rollup_cells(f, n), want.rollup_cells(f, n));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn members_of_one_group_publish_what_one_engine_publishes(
        events in story(),
        members in 2usize..4,
        partitions in 2u32..6,
        schedule in proptest::collection::vec((0usize..4, 1usize..6, 0u8..10), 1..60),
        dups in proptest::collection::vec(any::<proptest::sample::Index>(), 0..6),
    ) {
        play(Cluster::new(partitions, members), &events, &dups, schedule, members)?;
    }

    /// Offsets committed only with checkpoints, members restoring from them on every
    /// rebalance (a crash drops everything since the last one): still one engine's rows, and
    /// rows written after a checkpoint by flushes that never reached the next are settled.
    #[test]
    fn members_restoring_from_checkpoints_publish_what_one_engine_publishes(
        events in story(),
        members in 1usize..4,
        partitions in 1u32..5,
        schedule in proptest::collection::vec((0usize..4, 1usize..6, 0u8..10), 1..60),
        dups in proptest::collection::vec(any::<proptest::sample::Index>(), 0..6),
    ) {
        let mut c = Cluster::new(partitions, members);
        c.checkpointing = true;
        play(c, &events, &dups, schedule, members)?;
    }
}

/// Copies of some events under other leads and devices, at other times (one winner per id:
/// the earliest), some of them copies of an evicted lead's or a stored settled event.
fn with_moved_copies(
    mut events: Vec<NormalizedEvent>,
    moved: Vec<(proptest::sample::Index, i64, u8)>,
) -> Vec<NormalizedEvent> {
    for (i, shift, whom) in moved {
        let e = &events[i.index(events.len())];
        let copy = support::events::with(e.clone(), |c| {
            c.event_time += chrono::Duration::seconds(shift);
            match (&c.lead_id, &c.device_id) {
                (Some(_), _) => c.lead_id = Some(format!("u{}", 4 + whom)),
                (None, Some(_)) => c.device_id = Some(format!("d{}", 3 + whom)),
                _ => {}
            }
        });
        events.push(copy);
    }
    events
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    /// One member evicting idle leads at its checkpoints and reading them back when an event or
    /// a claim for them arrives (across restores from checkpoints too): still exactly what one
    /// engine holding all history publishes.
    #[test]
    fn an_engine_evicting_idle_leads_publishes_what_one_holding_all_history_publishes(
        events in story(),
        partitions in 1u32..4,
        idle_secs in 20i64..200,
        rollup_idle_secs in proptest::option::of(1i64..200),
        schedule in proptest::collection::vec((0usize..1, 1usize..6, 0u8..10), 1..60),
        dups in proptest::collection::vec(any::<proptest::sample::Index>(), 0..6),
        moved in proptest::collection::vec((any::<proptest::sample::Index>(), -300i64..300, 0u8..2), 0..4),
    ) {
        let mut c = Cluster::evicting(partitions, idle_secs * 1000);
        if let Some(s) = rollup_idle_secs {
            c.rollup_idle_ms = Some(s * 1000);
            c.configure(0);
        }
        play(c, &with_moved_copies(events, moved), &dups, schedule, 1)?;
    }

    /// The same member folding settled events (older than the newest minus a lateness of a
    /// few seconds to minutes, so most stories settle) into what the replays still need, and
    /// reading them back when an input its summary cannot absorb arrives: too late, a copy of
    /// a stored event, a claim moving a device: still exactly what one engine holding all
    /// history publishes, whatever the attribution lookback.
    #[test]
    fn an_engine_folding_settled_events_publishes_what_one_holding_all_history_publishes(
        events in story(),
        partitions in 1u32..4,
        idle_secs in 20i64..600,
        lateness_secs in 1i64..200,
        lookback_secs in proptest::option::of(1i64..400),
        fold_min in 1usize..4,
        schedule in proptest::collection::vec((0usize..1, 1usize..6, 0u8..10), 1..60),
        dups in proptest::collection::vec(any::<proptest::sample::Index>(), 0..6),
        moved in proptest::collection::vec((any::<proptest::sample::Index>(), -300i64..300, 0u8..2), 0..4),
    ) {
        let mut c = Cluster::evicting_with(partitions, idle_secs * 1000, lateness_secs * 1000);
        c.lookback_ms = lookback_secs.map(|s| s * 1000);
        c.fold_min = Some(fold_min);
        c.configure(0);
        play(c, &with_moved_copies(events, moved), &dups, schedule, 1)?;
    }
}

/// That test's schedules do evict and reload (not only keep everything).
#[test]
fn idle_leads_leave_memory_and_come_back_for_a_new_event() {
    use support::events::{call, signup_on, touch};
    let events = vec![
        touch(0, "exposure", "d0", "douyin"),
        signup_on(10, "u1", "d0"),
        call(20, "u1", "connected"),
        // Much later: u1 and d0 are idle when another lead moves the watermark on.
        call(1_000, "u2", "qualified"),
        // u1 comes back, with a touch on its device and a call.
        touch(1_010, "click", "d0", "douyin"),
        call(1_020, "u1", "qualified"),
    ];
    let want = single_engine(&events);
    let mut c = Cluster::evicting(2, 100_000);
    for e in &events[..4] {
        c.arrive(e);
    }
    c.consume(0, usize::MAX);
    c.checkpoint(0);
    let held = c.nodes[0].engine.leads_held();
    assert_eq!(c.groups_evicted, 1, "u1 with d0 left memory");
    assert_eq!(held, 1, "only u2 is held");
    // A restart in between: the restored engine knows what was evicted.
    c.rebalance(1, 0);
    assert_eq!(c.restored_from_checkpoints, 1);
    for e in &events[4..] {
        c.arrive(e);
    }
    c.drain();
    assert_eq!(c.evicted.groups_reloaded, 1, "the group came back once");
    support::assert_same_answers(&c.model, &want);
}

/// A lead evicted at a checkpoint, read back and rewritten by a flush that never reached the
/// next checkpoint: the restore from that checkpoint reads it back before settling its rows.
#[test]
fn rows_of_an_evicted_lead_written_after_its_checkpoint_are_settled_on_restore() {
    use support::events::{call, signup_on, touch};
    let events = vec![
        touch(0, "exposure", "d0", "douyin"),
        signup_on(10, "u1", "d0"),
        call(20, "u1", "connected"),
        call(1_000, "u2", "qualified"),
        call(1_020, "u1", "qualified"),
    ];
    let want = single_engine(&events);
    let mut c = Cluster::evicting(1, 100_000);
    for e in &events[..4] {
        c.arrive(e);
    }
    c.consume(0, usize::MAX);
    c.checkpoint(0);
    assert_eq!(c.groups_evicted, 1);
    let at_checkpoint = snapshot(&c.model);
    c.arrive(&events[4]);
    c.consume(0, usize::MAX);
    c.flush(0);
    assert_eq!(c.evicted.groups_reloaded, 1);
    // Lost before the next checkpoint: the restore finds u1's newer rows.
    c.rebalance(1, 0);
    assert_eq!(c.restored_from_checkpoints, 1);
    assert_eq!(
        snapshot(&c.model),
        at_checkpoint,
        "the restore puts u1's rows back as the checkpoint had them (it reads u1 back)"
    );
    c.drain();
    support::assert_same_answers(&c.model, &want);
}

/// A lead evicted, read back by an event later than the lateness (so still idle), evicted again
/// by a checkpoint that never got written: the restore from the checkpoint before reads the lead
/// as that checkpoint left it, not as the failed one stored it.
#[test]
fn an_eviction_whose_checkpoint_failed_is_not_read_back() {
    use support::events::{call, signup_on, touch};
    let events = vec![
        touch(0, "exposure", "d0", "douyin"),
        signup_on(10, "u1", "d0"),
        call(20, "u1", "connected"),
        call(1_000, "u2", "qualified"),
        // Late for u1 (older than its idle horizon): u1 comes back and is still idle.
        call(30, "u1", "qualified"),
    ];
    let want = single_engine(&events);
    let mut c = Cluster::evicting(1, 100_000);
    for e in &events[..4] {
        c.arrive(e);
    }
    c.consume(0, usize::MAX);
    c.checkpoint(0);
    assert_eq!(c.groups_evicted, 1);
    c.arrive(&events[4]);
    c.consume(0, usize::MAX);
    c.evict_then_crash(0);
    assert_eq!(c.restored_from_checkpoints, 1);
    c.drain();
    support::assert_same_answers(&c.model, &want);
}

/// Restores do come from checkpoints in that test's schedules (not only from rebuilds).
#[test]
fn a_checkpoint_restore_carries_on_from_the_checkpoint() {
    use support::events::{signup_on, touch};
    let events = vec![
        touch(0, "exposure", "d0", "douyin"),
        touch(10, "click", "d0", "douyin"),
        signup_on(20, "u1", "d0"),
        touch(30, "click", "d1", "wechat"),
    ];
    let want = single_engine(&events);
    let mut c = Cluster::new(3, 2);
    c.checkpointing = true;
    for e in &events[..3] {
        c.arrive(e);
    }
    c.consume(0, usize::MAX);
    c.consume(1, usize::MAX);
    c.checkpoint(0);
    c.checkpoint(1);
    // Past the checkpoint: consumed and flushed, never checkpointed, then lost.
    c.arrive(&events[3]);
    c.consume(0, usize::MAX);
    c.consume(1, usize::MAX);
    c.flush(0);
    c.flush(1);
    c.rebalance(2, 1);
    assert_eq!(
        c.restored_from_checkpoints, 2,
        "both members restored from checkpoints"
    );
    c.drain();
    assert_eq!(snapshot(&c.model), snapshot(&want));
}

#[test]
fn a_device_and_its_claiming_signup_on_different_members_meet() {
    use support::events::{signup_on, touch};
    // Pick a device and a user that land on different partitions of two.
    let own = everything(2);
    let user = (0..100)
        .map(|i| format!("u{i}"))
        .find(|u| own.partition(u) != own.partition("device:d0"))
        .expect("a user on the other partition");
    let events = vec![
        touch(0, "exposure", "d0", "douyin"),
        touch(10, "click", "d0", "douyin"),
        signup_on(20, &user, "d0"),
        touch(30, "click", "d0", "douyin"),
    ];
    let want = single_engine(&events);
    // Touches first, the signup after: the device lead is published, then tombstoned.
    let mut c = Cluster::new(2, 2);
    for e in &events[..2] {
        c.arrive(e);
    }
    c.drain();
    assert!(
        snapshot(&c.model).iter().any(|r| r.contains("device:d0")),
        "the unclaimed device is a lead of its own"
    );
    for e in &events[2..] {
        c.arrive(e);
    }
    c.drain();
    assert_eq!(snapshot(&c.model), snapshot(&want));
    assert!(c.rechecks_sent > 0, "the members had to talk");
    assert!(
        !snapshot(&c.model).iter().any(|r| r.contains("device:d0")),
        "the claimed device's own lead is gone"
    );
}

/// A winner redelivered after a rebuild that already loaded it is checked again: the member
/// holding the losing copy checked it before the winner was stored, and the engine that consumed
/// the winner first was dropped before its flush, so this is the only chance to settle it.
#[test]
fn a_winner_redelivered_after_a_rebuild_still_settles_the_loser_another_member_holds() {
    use support::events::{call, with};
    let parts = 4;
    let lead_on = |p: u32| {
        (0..)
            .map(|i| format!("user-{i}"))
            .find(|k| everything(parts).partition(k) == p)
            .unwrap()
    };
    let (l1, l2) = (lead_on(0), lead_on(1));
    // One event id under two leads: the copy under l2 is 10 minutes earlier, so it wins.
    let loser = call(600, &l1, "connected");
    let winner = with(call(0, &l2, "connected"), |e| {
        e.event_id = loser.event_id.clone();
        e.native_id = loser.native_id.clone();
    });
    let mut store = support::FakeStore::default();
    let mut a = Engine::with_ownership(default_funnels(), LATENESS_MS, Ownership::new(parts, [0]));
    store.store(&loser);
    a.ingest(&loser, 0);
    store.answer(&mut a);
    store.hide(&a.flush(1).minute_tombstones);
    assert!(a.take_copy_notifications().is_empty(), "alone in the store");
    store.store(&winner);
    // B's rebuild reads the winner from the store (its first engine consumed it and was dropped
    // unflushed), then the tail after the committed offset delivers it again.
    let mut b = Engine::with_ownership(default_funnels(), LATENESS_MS, Ownership::new(parts, [1]));
    b.ingest(&winner, 0);
    b.clear_lookups();
    store.hide(&b.flush(2).minute_tombstones);
    assert_eq!(
        store.live_minutes(),
        2,
        "before the redelivery both minutes show"
    );
    b.ingest(&winner, 0);
    store.answer(&mut b);
    store.hide(&b.flush(3).minute_tombstones);
    assert_eq!(store.live_minutes(), 1, "the loser's minute is hidden");
    let told = b.take_copy_notifications();
    assert_eq!(told.len(), 1);
    assert_eq!(
        told[0].0.as_str(),
        l1,
        "the loser's member is told to drop it"
    );
}

#[test]
fn checkpoints_that_cannot_continue_exactly_are_refused() {
    use leadstream_aggregator::engine::CheckpointError;
    use support::events::{signup_on, touch};
    let own = everything(2);
    let mut engine = Engine::with_ownership(default_funnels(), LATENESS_MS, own.clone());
    for e in [
        touch(0, "exposure", "d0", "douyin"),
        signup_on(20, "u1", "d0"),
    ] {
        engine.ingest(&e, 0);
    }
    engine.flush(1);
    let saved = engine.checkpoints(CONFIG);
    assert_eq!(saved.iter().map(|(p, _)| *p).collect::<Vec<_>>(), [0, 1]);
    let fresh = |parts: &[u32]| {
        Engine::with_ownership(
            default_funnels(),
            LATENESS_MS,
            Ownership::new(2, parts.iter().copied()),
        )
    };
    let (p, bytes) = &saved[0];
    assert_eq!(
        fresh(&[0, 1]).load_checkpoint(bytes, CONFIG + 1),
        Err(CheckpointError::Config(*p)),
        "another configuration"
    );
    let other = 1 - *p;
    assert_eq!(
        fresh(&[other]).load_checkpoint(bytes, CONFIG),
        Err(CheckpointError::NotOwned(*p))
    );
    assert!(matches!(
        fresh(&[0, 1]).load_checkpoint(&bytes[..bytes.len() / 2], CONFIG),
        Err(CheckpointError::Unreadable(_))
    ));
    // Both, loaded into one engine, give back the state: a new event changes exactly what it
    // changes in the engine that wrote them.
    let mut restored = fresh(&[0, 1]);
    for (_, b) in &saved {
        restored.load_checkpoint(b, CONFIG).expect("loads");
    }
    restored.restored();
    assert_eq!(restored.leads_held(), engine.leads_held());
    let late = touch(10, "click", "d0", "douyin");
    engine.ingest(&late, 0);
    restored.ingest(&late, 0);
    let (mut a, mut b) = (ReadModel::default(), ReadModel::default());
    a.apply(engine.flush(2));
    b.apply(restored.flush(2));
    assert!(!snapshot(&a).is_empty());
    assert_eq!(snapshot(&a), snapshot(&b));
}
