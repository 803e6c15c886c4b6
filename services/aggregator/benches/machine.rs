//! Stage-machine figures (no assertions): events/s through the engine on one core, with the
//! replays and row building of regular flushes, and memory per tracked lead.
//!
//! `cargo bench -p leadstream-aggregator --bench machine [-- LEADS]` (default 50000 leads). The
//! memory figure includes the flush's working buffers (about 1 MiB, not growing with leads), so
//! a larger LEADS shows the state per lead alone. `ROUNDS=N` runs N throughput rounds (default
//! 3) and then stops, skipping the bounded-state part: for comparing two builds round by round,
//! or counting instructions under `valgrind --tool=callgrind` (`--toggle-collect` on
//! `leadstream_aggregator::engine::Engine::ingest` and `::flush`), which a shared machine's
//! noise does not move.
//!
//! Then the bounded state over a long history: an exposure-heavy feed (five times the default
//! exposures per ad lead) of one new lead every 36 s of event time, through an engine evicting
//! at the service's defaults (`state.idle_after` 30 days, `state.rollup_idle_after` 1 day) into
//! an in-process store, for 60 and for 240 days of history: the live heap per lead held should
//! not grow with the history.

#[path = "../tests/support/evicted.rs"]
#[allow(dead_code, missing_docs)]
mod evicted;

use leadstream_aggregator::{Engine, Funnels};
use leadstream_generator::{GeneratorConfig, Label, Schedule};
use leadstream_schemas::{ChannelRules, Normalizer, NormalizerConfig, Secret, SourceMeta};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::sync::Arc;
use std::time::Instant;

/// Counts live heap bytes, so the state's size is measured without the allocator's retained
/// free memory (RSS growth also holds the dropped flush rows the allocator keeps).
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// CPU seconds this thread has run (user and system): unlike wall time, not inflated by the
/// time a shared machine's other tenants take the core.
fn thread_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the parenthesized command name; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// The normalized events of `cfg`'s feed, in delivery order.
fn feed(
    cfg: GeneratorConfig,
    root: &str,
) -> impl Iterator<Item = leadstream_schemas::NormalizedEvent> {
    let norm = Normalizer::new(NormalizerConfig {
        channel_rules: ChannelRules::from_yaml(
            &std::fs::read_to_string(format!("{root}/channels.yaml")).expect("channels"),
        )
        .expect("channel rules"),
        time_zone: cfg.time_zone().expect("zone"),
        pii_salt: Secret::new("bench".into()),
        max_message_bytes: cfg.realism.max_message_bytes,
        screening: Default::default(),
    });
    let start = cfg
        .start_time(chrono::Utc::now())
        .expect("start")
        .timestamp_millis();
    Schedule::new(cfg, start)
        .filter(|d| !matches!(d.label, Label::Poison(_)))
        .enumerate()
        .filter_map(move |(i, d)| {
            let meta = SourceMeta {
                kind: d.kind,
                partition: 0,
                offset: i as i64,
                received_at: chrono::Utc::now(),
            };
            norm.normalize(&meta, &d.payload).ok()
        })
}

/// The live heap of an evicting engine after `days` of an exposure-heavy history.
fn bounded(funnels: &Arc<Funnels>, root: &str, days: u64) {
    let mut cfg = GeneratorConfig {
        seed: 7,
        ..Default::default()
    };
    cfg.traffic.rate = 1.0 / 36.0;
    cfg.traffic.leads = days * 2_400;
    // No copies under other event times or keys: their checks need ClickHouse's answers.
    cfg.realism.resend_share = 0.0;
    cfg.realism.rekey_share = 0.0;
    for c in &mut cfg.channels {
        c.min_exposures = (c.min_exposures * 5).min(1000);
        c.max_exposures = (c.max_exposures * 5).min(1000);
    }
    let region = Region::new(GLOBAL);
    let mut engine = Engine::new(funnels.clone(), 3_600_000);
    engine.set_idle_after(Some(30 * 86_400_000));
    engine.set_rollup_idle_after(86_400_000);
    let mut store = evicted::EvictedStore::default();
    let (mut n, mut version, mut evicted) = (0u64, 0u64, 0usize);
    let t = Instant::now();
    for e in feed(cfg, root) {
        engine.ingest(&e, 0);
        n += 1;
        if n % 20_000 == 0 {
            version += 1;
            store.reload(&mut engine);
            // Nothing is copied under another key here, so a check (a filter's false
            // positive) finds no other copy: the service's read would settle nothing.
            drop(engine.take_checks());
            let mut out = engine.flush(version);
            store.resolve(&mut engine, &mut out);
            drop(out);
            evicted += store.evict_idle(&mut engine, version);
            engine.checkpoint_written();
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let stored = store.groups_reloaded;
    drop(store);
    let stats = region.change();
    let live = stats.bytes_allocated as i64 - stats.bytes_deallocated as i64;
    let held = engine.leads_held().max(1);
    let checkpoint: usize = engine.checkpoints(0).iter().map(|(_, b)| b.len()).sum();
    println!(
        "  bounded, {days} days of history: {n} events ({:.0}/s incl. generating, normalizing \
         and evicting), {evicted} groups evicted, {stored} read back; {held} leads, {} devices, \
         {} rollup buckets held; live heap {:.1} MiB = {:.0} bytes per lead held; checkpoint \
         {:.0} bytes per lead held",
        n as f64 / secs,
        engine.devices_held(),
        engine.rollup_buckets(),
        live as f64 / 1048576.0,
        live as f64 / held as f64,
        checkpoint as f64 / held as f64
    );
    print_footprint(&engine);
}

fn print_footprint(engine: &Engine) {
    let held = engine.leads_held().max(1);
    let f = engine.footprint();
    let per = |b: usize| b as f64 / held as f64;
    println!(
        "    per lead: lead slots {:.0}, device slots {:.0}, events {:.0}, claims {:.0}, \
         rollup tables {:.0} ({} buckets), pending {:.0}, filters {:.0}",
        per(f.lead_slots),
        per(f.device_slots),
        per(f.events),
        per(f.claims),
        per(f.rollups),
        engine.rollup_buckets(),
        per(f.pending),
        per(f.filters)
    );
}

fn main() {
    let leads: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(50_000);
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config");
    let funnels = Arc::new(Funnels::load(format!("{root}/funnel.yaml").as_ref()).expect("funnels"));
    let mut cfg = GeneratorConfig {
        seed: 42,
        ..Default::default()
    };
    cfg.traffic.leads = leads;
    let events: Vec<_> = feed(cfg, root).collect();
    println!(
        "stage machine: {} normalized events ({} leads generated), 2 funnels",
        events.len(),
        leads
    );

    // Memory: RSS growth while the state is built, per lead held (events of all its devices
    // included), after the rows were dropped. Measured first, before
    // other rounds leave freed memory in the allocator.
    let before = rss_bytes();
    let region = Region::new(GLOBAL);
    let mut engine = Engine::new(funnels.clone(), 3_600_000);
    for (i, e) in events.iter().enumerate() {
        engine.ingest(e, 0);
        if i % 5000 == 4999 {
            drop(engine.flush(i as u64));
        }
    }
    drop(engine.flush(u64::MAX));
    let after = rss_bytes();
    let stats = region.change();
    // Growth by realloc is already in bytes_allocated / bytes_deallocated.
    let live = stats.bytes_allocated as i64 - stats.bytes_deallocated as i64;
    let held = engine.leads_held().max(1);
    println!(
        "  memory: {} leads held, {} devices; live heap {:.1} MiB = {:.0} bytes per lead \
         (requested sizes); RSS +{:.1} MiB = {:.0} bytes per lead",
        held,
        engine.devices_held(),
        live as f64 / 1048576.0,
        live as f64 / held as f64,
        (after.saturating_sub(before)) as f64 / 1048576.0,
        after.saturating_sub(before) as f64 / held as f64
    );
    print_footprint(&engine);
    drop(engine);

    // Throughput: ingest + a flush (replay + rows) every 5000 events, as the service batches.
    let only_rounds = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse::<usize>().ok());
    for round in 0..only_rounds.unwrap_or(3) {
        let mut engine = Engine::new(funnels.clone(), 3_600_000);
        let (t, cpu) = (Instant::now(), thread_cpu_secs());
        let mut rows = 0usize;
        for (i, e) in events.iter().enumerate() {
            engine.ingest(e, 0);
            if i % 5000 == 4999 {
                let out = engine.flush(i as u64);
                rows += out.transitions.len() + out.leads.len();
            }
        }
        rows += engine.flush(u64::MAX).transitions.len();
        let secs = t.elapsed().as_secs_f64();
        let cpu = thread_cpu_secs() - cpu;
        println!(
            "  round {round}: {:.0} events/s on one core ({:.2} s, {rows} rows built); {:.0} \
             events per CPU-second ({cpu:.2} s)",
            events.len() as f64 / secs,
            secs,
            events.len() as f64 / cpu.max(0.01),
        );
    }
    drop(events);
    if only_rounds.is_some() {
        return;
    }
    for days in [60, 240] {
        bounded(&funnels, root, days);
    }
}
