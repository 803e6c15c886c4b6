//! The engine, fed a generator run in delivery order (late, out of order, duplicated, with
//! malformed messages the normalizer rejects) and flushed at arbitrary points, ends with exactly
//! the generator's truth: the oracle the end-to-end tests also use, without any server.

mod support;

use leadstream_aggregator::Engine;
use leadstream_generator::truth::TruthBuilder;
use leadstream_generator::{GeneratorConfig, Label, Schedule};
use leadstream_schemas::SourceMeta;
use support::{default_funnels, normalizer, FakeStore, ReadModel};

fn run(seed: u64, leads: u64, flush_every: usize) {
    run_with(seed, leads, flush_every, 0.0);
}

/// With `stale_touches` > 0 a second engine that attributes every touch (no lookback) runs
/// alongside and must end somewhere else than the truth: the run exercises the lookback.
fn run_with(seed: u64, leads: u64, flush_every: usize, stale_touches: f64) {
    let mut cfg = GeneratorConfig {
        seed,
        ..Default::default()
    };
    cfg.realism.stale_touch_share = stale_touches;
    cfg.traffic.leads = leads;
    cfg.realism.late_share = 0.2;
    cfg.realism.duplicate_share = 0.05;
    cfg.realism.resend_share = 0.03;
    cfg.realism.rekey_share = 0.02;
    cfg.realism.poison_share = 0.03;
    let norm = normalizer(cfg.time_zone().unwrap(), cfg.realism.max_message_bytes);
    let start = cfg
        .start_time(chrono::Utc::now())
        .unwrap()
        .timestamp_millis();
    let mut engine = Engine::new(default_funnels(), 3_600_000);
    let mut model = ReadModel::default();
    let mut control = Engine::new(default_funnels(), 3_600_000);
    control.set_lookback(i64::MAX);
    let mut control_model = ReadModel::default();
    let mut store = FakeStore::default();
    let mut truth = TruthBuilder::default();
    let mut version = 0;
    for (i, d) in Schedule::new(cfg, start).enumerate() {
        let meta = SourceMeta {
            kind: d.kind,
            partition: 0,
            offset: i as i64,
            received_at: chrono::Utc::now(),
        };
        match (&d.label, norm.normalize(&meta, &d.payload)) {
            (Label::Valid(t), Ok(ev)) => {
                truth.valid((**t).clone(), d.deliver_at_ms);
                store.store(&ev);
                engine.ingest(&ev, d.deliver_at_ms);
                control.ingest(&ev, d.deliver_at_ms);
            }
            (Label::Copy(t), Ok(ev)) => {
                truth.copy((**t).clone());
                store.store(&ev);
                engine.ingest(&ev, d.deliver_at_ms);
                control.ingest(&ev, d.deliver_at_ms);
            }
            (Label::Duplicate, Ok(ev)) => {
                // Usually a no-op; a redelivery of a copy that another lead won is applied
                // again and settled again at the next flush.
                truth.duplicate();
                engine.ingest(&ev, d.deliver_at_ms);
                control.ingest(&ev, d.deliver_at_ms);
            }
            (Label::Poison(c), Err(_)) => truth.poison(*c),
            (label, result) => panic!("unexpected {label:?} -> {result:?}"),
        }
        if i % flush_every == flush_every - 1 {
            version += 1;
            store.answer(&mut engine);
            let out = engine.flush(version);
            store.hide(&out.minute_tombstones);
            model.apply(out);
            if stale_touches > 0.0 {
                store.answer(&mut control);
                control_model.apply(control.flush(version));
            }
        }
    }
    version += 1;
    store.answer(&mut engine);
    let out = engine.flush(version);
    store.hide(&out.minute_tombstones);
    model.apply(out);
    store.answer(&mut control);
    control_model.apply(control.flush(version));
    assert!(
        truth.finish(seed, leads).messages.copies > 100,
        "the run re-sends and re-keys"
    );
    let truth = truth.finish(seed, leads);
    assert_eq!(
        store.live_minutes() as u64,
        truth.messages.valid,
        "the per-minute table shows each event once (losing copies hidden)"
    );
    // The run exercises every kind of transition, so equality below means something.
    let kinds: std::collections::BTreeSet<&String> = truth
        .funnels
        .values()
        .flat_map(|f| f.totals.transitions.keys())
        .collect();
    assert_eq!(kinds.len(), 6, "{kinds:?}");
    assert!(truth.identities.stitched_devices > 0 && truth.identities.anonymous_devices > 0);
    if stale_touches > 0.0 {
        let differs = truth
            .funnels
            .iter()
            .any(|(name, ft)| control_model.cells(name, ft.stages.len()).1 != ft.cells);
        assert!(
            differs,
            "touches before the lookback would have attributed leads"
        );
    }
    for (name, ft) in &truth.funnels {
        let (totals, cells) = model.cells(name, ft.stages.len());
        assert_eq!(totals, ft.totals, "{name} totals");
        assert_eq!(cells.len(), ft.cells.len(), "{name} cell count");
        for (got, want) in cells.iter().zip(&ft.cells) {
            assert_eq!(got, want, "{name} cell");
        }
        // The rollups the API reads give the same answers as the per-lead rows.
        let (rtotals, rcells) = model.rollup_cells(name, ft.stages.len());
        assert_eq!(rtotals, ft.totals, "{name} totals from the rollups");
        assert_eq!(rcells, ft.cells, "{name} cells from the rollups");
    }
}

#[test]
fn a_generated_run_ends_in_the_truth_with_frequent_flushes() {
    run(7, 3000, 97);
}

#[test]
fn a_generated_run_ends_in_the_truth_with_one_flush_at_the_end() {
    run(8, 3000, usize::MAX);
}

#[test]
fn a_20k_lead_run_ends_in_the_truth() {
    run(2026, 20_000, 5000);
}

#[test]
fn touches_before_the_attribution_lookback_do_not_attribute() {
    run_with(11, 3000, 97, 0.1);
}
