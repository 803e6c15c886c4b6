//! Idle eviction on the rare paths: an event later than the allowed lateness for an evicted
//! lead, and a copy of an evicted lead's event arriving under another lead. Each case runs an
//! engine that evicts beside one that keeps all history, on the same arrivals, flushes and
//! ClickHouse answers (an in-process fake), and both must publish the same rows.

mod support;

use leadstream_aggregator::{Engine, Ingested};
use support::events::{call, signup_on, snapshot, touch, with};
use support::pair::{Pair, LATENESS_MS};
use support::{default_funnels, ReadModel};

const DAY: i64 = 86_400;

#[test]
fn a_too_late_event_for_an_evicted_lead_gives_the_batch_answer() {
    let mut p = Pair::new();
    for e in [
        touch(0, "click", "d0", "douyin"),
        signup_on(10, "u1", "d0"),
        call(20, "u1", "qualified"),
    ] {
        p.arrive(&e);
    }
    p.flush();
    // Two days on, another lead moves the watermark: u1 and its device are idle.
    p.arrive(&call(2 * DAY, "u2", "connected"));
    p.flush();
    assert_eq!(p.bounded.leads_held(), 1, "u1 left memory");
    assert_eq!(p.bounded.devices_held(), 0, "with its device");
    // A contract for u1 dated right after its call: far later than the allowed lateness, and
    // it reorders u1's history (signed before a call that comes after it in event time).
    let late = with(call(15, "u1", "connected"), |e| {
        e.event_type = leadstream_schemas::EventType::ContractSigned;
        e.call_outcome = None;
    });
    assert_eq!(p.arrive(&late), Ingested::Parked);
    let done = p.flush();
    assert_eq!(p.evicted.groups_reloaded, 1);
    assert_eq!(
        done,
        [Ingested::Applied {
            correction: true,
            late: true,
            too_late: true
        }]
    );
    p.assert_same();
    // And what one batch pass over every event gives.
    let mut batch = Engine::new(default_funnels(), LATENESS_MS);
    let mut all = vec![
        touch(0, "click", "d0", "douyin"),
        signup_on(10, "u1", "d0"),
        late,
        call(20, "u1", "qualified"),
        call(2 * DAY, "u2", "connected"),
    ];
    all.sort_by_key(|e| e.event_time);
    for e in &all {
        batch.ingest(e, 0);
    }
    let mut rows = ReadModel::default();
    rows.apply(batch.flush(1));
    assert_eq!(snapshot(&p.bounded_rows), snapshot(&rows));
}

#[test]
fn a_copy_of_an_evicted_event_under_another_lead_is_settled_with_it() {
    let mut p = Pair::new();
    let first = call(0, "u1", "qualified");
    p.arrive(&first);
    p.arrive(&call(10, "u1", "connected"));
    p.flush();
    p.arrive(&call(3 * DAY, "u9", "connected"));
    p.flush();
    assert_eq!(p.bounded.leads_held(), 1, "u1 left memory");
    // Restarted: the ids of u1's events are known only from what the checkpoint says of them.
    p.restart();
    // The same event id under another lead, earlier: it wins, and u1 loses its copy.
    let copy = with(call(-5, "u2", "qualified"), |e| {
        e.event_id = first.event_id.clone();
        e.native_id = first.native_id.clone();
    });
    p.arrive(&copy);
    p.flush();
    assert_eq!(
        p.evicted.groups_reloaded, 1,
        "u1 came back to drop its copy"
    );
    p.assert_same();
    assert!(
        snapshot(&p.bounded_rows).iter().any(|r| r.contains("u2")),
        "the winner's lead is published"
    );
}

#[test]
fn an_anonymous_device_leaves_memory_and_its_later_signup_claims_its_touches() {
    let mut p = Pair::new();
    p.arrive(&touch(0, "exposure", "d7", "baidu"));
    p.arrive(&touch(5, "click", "d7", "baidu"));
    p.flush();
    p.arrive(&call(2 * DAY, "u2", "connected"));
    p.flush();
    assert_eq!(p.bounded.devices_held(), 0, "the idle device left memory");
    // Its signup, within the lookback: the touches attribute it.
    assert_eq!(
        p.arrive(&signup_on(2 * DAY + 10, "u3", "d7")),
        Ingested::Parked
    );
    p.flush();
    assert_eq!(p.evicted.groups_reloaded, 1);
    p.assert_same();
    assert!(
        snapshot(&p.bounded_rows)
            .iter()
            .any(|r| r.contains("u3") && r.contains("baidu")),
        "the claimed touches attribute the signup"
    );
}

#[test]
fn a_copy_of_an_evicted_anonymous_touch_under_another_device_is_settled_with_it() {
    let mut p = Pair::new();
    let first = touch(0, "click", "d1", "douyin");
    p.arrive(&first);
    p.flush();
    p.arrive(&call(3 * DAY, "u9", "connected"));
    p.flush();
    assert_eq!(p.bounded.devices_held(), 0, "d1 left memory");
    p.restart();
    // The same touch re-sent under another device, earlier: it wins, and d1's own lead (held
    // without a lead entry, by its touches alone) loses its only event.
    let moved = with(touch(-5, "click", "d1-moved", "douyin"), |e| {
        e.event_id = first.event_id.clone();
        e.native_id = first.native_id.clone();
    });
    p.arrive(&moved);
    p.flush();
    assert_eq!(
        p.evicted.groups_reloaded, 1,
        "d1 came back to drop its copy"
    );
    p.assert_same();
    assert!(
        !snapshot(&p.bounded_rows)
            .iter()
            .any(|r| r.contains("device:d1 ")),
        "the losing device's lead is gone"
    );
}

#[test]
fn idle_rollup_buckets_leave_memory_and_their_counts_come_back_exactly() {
    let mut p = Pair::new();
    // Two leads starting in the same minute: their cohort bucket counts both.
    p.arrive(&call(0, "u1", "connected"));
    p.arrive(&call(1, "u2", "connected"));
    p.flush();
    let early = p.bounded.rollup_buckets();
    assert!(early > 0);
    p.arrive(&call(3 * DAY, "u9", "connected"));
    p.flush();
    assert_eq!(
        p.evicted.buckets_stored, early,
        "every bucket of minute 0 was stored"
    );
    assert_eq!(
        p.bounded.rollup_buckets(),
        p.full.rollup_buckets() - early,
        "and left memory"
    );
    p.assert_same();
    // Restarted, u1 moves on: its share of the stored cohort bucket (2) is taken back.
    p.restart();
    p.arrive(&call(3 * DAY + 10, "u1", "qualified"));
    p.flush();
    assert_eq!(p.evicted.groups_reloaded, 1);
    assert!(
        p.evicted.buckets_read >= 1,
        "the stored count was read back"
    );
    p.assert_same();
    // Idle again, then u1 and u2 move on: counts read back a second time, u2's for the first.
    p.arrive(&call(6 * DAY, "u9", "qualified"));
    p.flush();
    p.restart();
    p.arrive(&call(6 * DAY + 10, "u1", "lost"));
    p.arrive(&call(6 * DAY + 20, "u2", "qualified"));
    p.flush();
    assert_eq!(p.evicted.groups_reloaded, 3);
    p.assert_same();
}
