//! The truth computation on hand-written lead stories whose results are worked out by hand.

use leadstream_generator::truth::{funnels, Cell, FunnelTruth, Identities, TruthEvent};
use leadstream_schemas::{EventType, SourceKind};
use proptest::prelude::*;
use std::collections::BTreeMap;

const MIN: i64 = 60_000;

/// One event; `who` is a user id, or `dev:<id>` for an anonymous device event.
fn ev(id: &str, t: EventType, minute: i64, who: &str) -> TruthEvent {
    let kind = match t {
        EventType::Exposure => SourceKind::Exposure,
        EventType::Click => SourceKind::AdClick,
        EventType::Signup => SourceKind::Signup,
        EventType::TrialStarted | EventType::TrialActivated | EventType::TrialExpired => {
            SourceKind::Trial
        }
        EventType::Call => SourceKind::Call,
        EventType::ContractSigned | EventType::ContractLost | EventType::ContractCancelled => {
            SourceKind::Contract
        }
        EventType::Order => SourceKind::Order,
    };
    let (lead_id, device_id) = match who.strip_prefix("dev:") {
        Some(d) => (None, Some(d.to_string())),
        None => (Some(who.to_string()), None),
    };
    TruthEvent {
        event_id: id.into(),
        kind,
        event_type: t,
        time_ms: 1_700_000_000_000 + minute * MIN,
        lead_id,
        device_id,
        channel: None,
        variant: None,
        call_outcome: None,
        reason: None,
        amount: None,
    }
}

trait With {
    fn channel(self, c: &str) -> Self;
    fn variant(self, v: &str) -> Self;
    fn device(self, d: &str) -> Self;
    fn outcome(self, o: &str) -> Self;
    fn reason(self, r: &str) -> Self;
}

impl With for TruthEvent {
    fn channel(mut self, c: &str) -> Self {
        self.channel = Some(c.into());
        self
    }
    fn variant(mut self, v: &str) -> Self {
        self.variant = Some(v.into());
        self
    }
    fn device(mut self, d: &str) -> Self {
        self.device_id = Some(d.into());
        self
    }
    fn outcome(mut self, o: &str) -> Self {
        self.call_outcome = Some(o.into());
        self
    }
    fn reason(mut self, r: &str) -> Self {
        self.reason = Some(r.into());
        self
    }
}

fn call(id: &str, minute: i64, who: &str, outcome: &str) -> TruthEvent {
    ev(id, EventType::Call, minute, who).outcome(outcome)
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn nested(from: &str, reasons: &[(&str, u64)]) -> BTreeMap<String, BTreeMap<String, u64>> {
    [(from.to_string(), counts(reasons))].into()
}

fn cell<'a>(f: &'a FunnelTruth, first: &str, last: &str, variant: &str) -> &'a Cell {
    f.cells
        .iter()
        .find(|c| {
            (
                c.first_touch.as_str(),
                c.last_touch.as_str(),
                c.variant.as_str(),
            ) == (first, last, variant)
        })
        .unwrap_or_else(|| panic!("no cell {first}/{last}/{variant} in {:#?}", f.cells))
}

/// Anna: two anonymous exposures (douyin) and a click (wechat, variant B) on her phone, then a
/// signup naming the phone, a trial that expires (backflow), and a purchase later (a skip over
/// trial, which she had reached before).
fn anna() -> Vec<TruthEvent> {
    vec![
        ev("a1", EventType::Exposure, 0, "dev:phone-a").channel("douyin"),
        ev("a2", EventType::Exposure, 5, "dev:phone-a").channel("douyin"),
        ev("a3", EventType::Click, 7, "dev:phone-a")
            .channel("wechat")
            .variant("B"),
        ev("a4", EventType::Signup, 12, "anna")
            .channel("wechat")
            .variant("B")
            .device("phone-a"),
        ev("a5", EventType::TrialStarted, 20, "anna"),
        ev("a6", EventType::TrialExpired, 50, "anna"),
        ev("a7", EventType::Order, 90, "anna"),
    ]
}

/// Bo: an organic signup without a device; sales calls him (no answer, connected, qualified), he
/// signs and then cancels (backflow won → qualified).
fn bo() -> Vec<TruthEvent> {
    vec![
        ev("b1", EventType::Signup, 3, "bo").channel("organic"),
        call("b2", 10, "bo", "no_answer"),
        call("b3", 20, "bo", "connected"),
        call("b4", 30, "bo", "qualified"),
        ev("b5", EventType::ContractSigned, 40, "bo"),
        ev("b6", EventType::ContractCancelled, 70, "bo"),
    ]
}

/// Chen: referral signup; disqualified (lost from contacted), comes back (reactivated into
/// contacted), is qualified, then the contract is lost (lost from qualified). Also buys twice in
/// b2c with no trial (skip to purchase, then repurchase); a trial expiry after buying changes nothing.
fn chen() -> Vec<TruthEvent> {
    vec![
        ev("c1", EventType::Signup, 1, "chen").channel("referral"),
        call("c2", 5, "chen", "callback"),
        call("c3", 9, "chen", "disqualified").reason("预算不足"),
        call("c4", 30, "chen", "callback"),
        call("c5", 35, "chen", "qualified"),
        ev("c6", EventType::ContractLost, 60, "chen").reason("price too high"),
        ev("c7", EventType::Order, 15, "chen"),
        ev("c8", EventType::Order, 25, "chen"),
        ev("c9", EventType::TrialStarted, 26, "chen"),
        ev("c10", EventType::TrialExpired, 27, "chen"),
    ]
}

/// Dee: a connected call and a signed contract (skip over qualified). Plus a tablet whose
/// exposure and click never get linked: an anonymous lead of its own.
fn dee() -> Vec<TruthEvent> {
    vec![
        ev("d1", EventType::Signup, 2, "dee")
            .channel("baidu")
            .variant("A"),
        call("d2", 4, "dee", "connected"),
        ev("d3", EventType::ContractSigned, 8, "dee"),
        ev("d4", EventType::Exposure, 1, "dev:tablet-x").channel("meta"),
        ev("d5", EventType::Click, 2, "dev:tablet-x")
            .channel("meta")
            .variant("A"),
    ]
}

fn all() -> Vec<TruthEvent> {
    [anna(), bo(), chen(), dee()].concat()
}

#[test]
fn anna_stitched_touches_backflow_and_skip() {
    // The signup first, as if it arrived before the anonymous touches: order must not matter.
    let mut events = anna();
    events.rotate_left(3);
    let (f, ids) = funnels(&events);
    assert_eq!(
        ids,
        Identities {
            users: 1,
            stitched_devices: 1,
            anonymous_devices: 0
        }
    );
    let b2c = &f["b2c"];
    let c = cell(b2c, "douyin", "wechat", "B");
    assert_eq!(c.leads, 1);
    assert_eq!(c.reached, vec![1, 1, 1, 1, 1, 0]);
    assert_eq!(c.occupancy, vec![0, 0, 0, 0, 1, 0]);
    assert_eq!(c.backflows, nested("trial", &[("trial_expired", 1)]));
    assert_eq!(
        c.transitions,
        counts(&[("enter", 1), ("advance", 3), ("backflow", 1), ("skip", 1)])
    );
    let sales = &f["sales"];
    assert_eq!(sales.totals.leads, 1);
    assert_eq!(sales.totals.reached, vec![1, 0, 0, 0]);
    assert_eq!(b2c.cells.len(), 1);
}

#[test]
fn bo_cancelled_contract_flows_back_to_qualified() {
    let (f, _) = funnels(&bo());
    let s = cell(&f["sales"], "organic", "organic", "none");
    assert_eq!(s.reached, vec![1, 1, 1, 1]);
    assert_eq!(s.occupancy, vec![0, 0, 1, 0]);
    assert_eq!(s.backflows, nested("won", &[("contract_cancelled", 1)]));
    assert_eq!(
        s.transitions,
        counts(&[("enter", 1), ("advance", 3), ("backflow", 1)])
    );
    let b = cell(&f["b2c"], "organic", "organic", "none");
    // Entered at signup: reaching signup implies passing exposure and click (the CRM convention).
    assert_eq!(b.reached, vec![1, 1, 1, 0, 0, 0]);
    assert_eq!(b.transitions, counts(&[("enter", 1)]));
}

#[test]
fn chen_lost_reactivated_and_lost_again_and_buys_without_a_trial() {
    let (f, _) = funnels(&chen());
    let s = cell(&f["sales"], "referral", "referral", "none");
    assert_eq!(s.reached, vec![1, 1, 1, 0]);
    assert_eq!(s.lost, 1);
    assert_eq!(s.occupancy, vec![0, 0, 0, 0]);
    let mut losses = nested("contacted", &[("预算不足", 1)]);
    losses.extend(nested("qualified", &[("price too high", 1)]));
    assert_eq!(s.losses, losses);
    assert_eq!(
        s.transitions,
        counts(&[
            ("enter", 1),
            ("advance", 2),
            ("lost", 2),
            ("reactivated", 1)
        ])
    );
    let b = cell(&f["b2c"], "referral", "referral", "none");
    // signup → purchase (skip over trial) → repurchase; the later trial and its expiry change nothing.
    assert_eq!(b.reached, vec![1, 1, 1, 1, 1, 1]);
    assert_eq!(b.occupancy, vec![0, 0, 0, 0, 0, 1]);
    assert!(b.backflows.is_empty());
    assert_eq!(
        b.transitions,
        counts(&[("enter", 1), ("skip", 1), ("advance", 1)])
    );
}

#[test]
fn dee_skips_qualified_and_an_unlinked_device_is_its_own_lead() {
    let (f, ids) = funnels(&dee());
    assert_eq!(
        ids,
        Identities {
            users: 1,
            stitched_devices: 0,
            anonymous_devices: 1
        }
    );
    let s = cell(&f["sales"], "baidu", "baidu", "A");
    assert_eq!(s.reached, vec![1, 1, 1, 1]);
    assert_eq!(
        s.transitions,
        counts(&[("enter", 1), ("advance", 1), ("skip", 1)])
    );
    let anon = cell(&f["b2c"], "meta", "meta", "A");
    assert_eq!(anon.reached, vec![1, 1, 0, 0, 0, 0]);
    assert_eq!(anon.occupancy, vec![0, 1, 0, 0, 0, 0]);
    assert_eq!(
        f["sales"].totals.leads, 1,
        "an anonymous device is not a sales lead"
    );
    assert_eq!(f["b2c"].totals.leads, 2);
}

#[test]
fn totals_add_up_and_duplicates_count_once() {
    let mut events = all();
    events.extend(all());
    let (f, _) = funnels(&events);
    let b2c = &f["b2c"].totals;
    assert_eq!(b2c.leads, 5);
    assert_eq!(b2c.reached, vec![5, 5, 4, 2, 2, 1]);
    let sales = &f["sales"].totals;
    assert_eq!(sales.leads, 4);
    assert_eq!(sales.reached, vec![4, 3, 3, 2]);
    for funnel in f.values() {
        let sum: u64 = funnel.cells.iter().map(|c| c.leads).sum();
        assert_eq!(sum, funnel.totals.leads);
    }
}

#[test]
fn the_earliest_signup_owns_a_shared_device() {
    let events = vec![
        ev("e1", EventType::Click, 0, "dev:shared").channel("google"),
        ev("e2", EventType::Signup, 10, "second")
            .channel("organic")
            .device("shared"),
        ev("e3", EventType::Signup, 5, "first")
            .channel("organic")
            .device("shared"),
    ];
    let (f, _) = funnels(&events);
    let b2c = &f["b2c"];
    assert_eq!(cell(b2c, "google", "google", "none").leads, 1);
    assert_eq!(cell(b2c, "organic", "organic", "none").leads, 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Any arrival order gives the same answers: the truth sorts by event time itself.
    #[test]
    fn any_input_order_gives_the_same_truth(seed in any::<u64>()) {
        let mut events = all();
        let reference = funnels(&events);
        let mut s = seed;
        for i in (1..events.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            events.swap(i, (s >> 33) as usize % (i + 1));
        }
        prop_assert_eq!(funnels(&events), reference);
    }
}
