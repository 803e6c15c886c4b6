//! Settled events on the rare paths: the events of a lead older than the newest minus the
//! allowed lateness that its replays can do without leave memory (stored), and come back when
//! an input its summary cannot absorb arrives. Each case runs a folding engine beside one that
//! keeps all history (`support::pair`), and both must publish the same rows.

mod support;

use leadstream_aggregator::Ingested;
use leadstream_schemas::EventType;
use support::events::{call, ev, signup_on, snapshot, touch, with};
use support::pair::Pair;

/// A minute of lateness: events a minute older than the newest are settled.
const LATENESS_MS: i64 = 60_000;

/// Folds every lead with settled inputs.
fn pair() -> Pair {
    Pair::with(LATENESS_MS, Some(1))
}

/// `n` exposures of `device` ten seconds apart from `from`, on `channel`.
fn exposures(p: &mut Pair, device: &str, from: i64, n: i64, channel: &str) {
    for i in 0..n {
        p.arrive(&touch(from + 10 * i, "exposure", device, channel));
    }
}

#[test]
fn settled_exposures_leave_memory_and_a_too_late_one_brings_them_back() {
    let mut p = pair();
    exposures(&mut p, "d0", 0, 30, "douyin");
    p.arrive(&touch(300, "click", "d0", "douyin"));
    p.arrive(&signup_on(310, "u1", "d0"));
    p.arrive(&call(320, "u1", "connected"));
    p.flush();
    // Another lead moves the newest event on: everything of u1 is settled.
    p.arrive(&call(1_000, "u2", "connected"));
    p.flush();
    assert!(
        p.evicted.events_folded >= 25,
        "the repeated exposures left memory"
    );
    assert_eq!(
        p.bounded.events_held() + p.evicted.events_folded,
        p.full.events_held()
    );
    p.assert_same();
    // An exposure on another channel before all of them: the first touch changes, and the
    // exposure stage is reached earlier. Far later than the lateness: the rare path.
    assert_eq!(
        p.arrive(&touch(-5, "exposure", "d0", "baidu")),
        Ingested::Parked
    );
    p.flush();
    assert!(
        p.evicted.fold_rows_read >= 1,
        "u1's stored events came back"
    );
    p.assert_same();
    assert!(
        snapshot(&p.bounded_rows)
            .iter()
            .any(|r| r.starts_with("b2c u1 ") && r.contains(" baidu ")),
        "the new first touch attributes u1"
    );
}

#[test]
fn a_resaved_copy_of_a_stored_event_loses_to_it() {
    let mut p = pair();
    let calls: Vec<_> = (0..5).map(|i| call(10 * i, "u1", "connected")).collect();
    for c in &calls {
        p.arrive(c);
    }
    p.arrive(&with(ev(50, "contract_lost", "u1"), |e| {
        e.reason = Some("price".into())
    }));
    p.arrive(&call(1_000, "u2", "connected"));
    p.flush();
    assert!(
        p.evicted.events_folded >= 3,
        "the repeated calls left memory"
    );
    // A CRM re-saves a stored call with a later time, after the loss: as a new event it would
    // reactivate u1, but it is a copy of an event u1 has, and the earliest copy wins.
    let resaved = with(call(990, "u1", "connected"), |e| {
        e.event_id = calls[2].event_id.clone();
        e.native_id = calls[2].native_id.clone();
    });
    assert_eq!(p.arrive(&resaved), Ingested::Parked);
    p.flush();
    assert!(p.evicted.fold_rows_read >= 1, "u1's stored calls came back");
    p.assert_same();
    assert!(
        snapshot(&p.bounded_rows)
            .iter()
            .all(|r| !r.contains("reactivated")),
        "the losing copy changed nothing"
    );
}

#[test]
fn a_signup_claiming_a_folded_device_brings_its_touches_back() {
    let mut p = pair();
    exposures(&mut p, "d7", 0, 20, "baidu");
    p.arrive(&touch(200, "click", "d7", "baidu"));
    p.arrive(&call(1_000, "u2", "connected"));
    p.flush();
    assert!(
        p.evicted.events_folded >= 15,
        "the device lead's exposures left memory"
    );
    p.assert_same();
    // A signup names the device: its touches move to the user, whose replay reads them all.
    assert_eq!(p.arrive(&signup_on(1_010, "u3", "d7")), Ingested::Parked);
    p.flush();
    assert!(p.evicted.fold_rows_read >= 1);
    p.assert_same();
    assert!(
        snapshot(&p.bounded_rows)
            .iter()
            .any(|r| r.starts_with("b2c u3 ") && r.contains(" baidu ")),
        "the claimed touches attribute the signup"
    );
    assert!(
        !snapshot(&p.bounded_rows)
            .iter()
            .any(|r| r.contains("device:d7 ")),
        "the device's own lead is gone"
    );
}

#[test]
fn a_folded_lead_evicted_and_restored_comes_back_whole_for_a_too_late_event() {
    let mut p = pair();
    exposures(&mut p, "d0", 0, 12, "douyin");
    p.arrive(&signup_on(200, "u1", "d0"));
    p.arrive(&call(210, "u1", "connected"));
    p.arrive(&call(1_000, "u2", "connected"));
    p.flush();
    let folded = p.evicted.events_folded;
    assert!(folded >= 8);
    // Two days on, u1 and its device are idle: their group (with what they stored) leaves.
    p.arrive(&call(2 * 86_400, "u2", "qualified"));
    p.flush();
    assert_eq!(p.bounded.leads_held(), 1, "u1 left memory");
    p.restart();
    // A trial of u1 between its exposures: its group comes back, then its stored events.
    let late = ev(55, "trial_started", "u1");
    assert_eq!(p.arrive(&late), Ingested::Parked);
    p.flush();
    assert_eq!(p.evicted.groups_reloaded, 1);
    assert!(p.evicted.fold_rows_read >= 1);
    p.assert_same();
    assert_eq!(late.event_type, EventType::TrialStarted);
}
