//! Table-driven tests of the stage machine through the engine (the shipped `config/funnel.yaml`,
//! hand-written events), and a property test that arrival order and duplicates never matter.

mod support;

use leadstream_aggregator::{Engine, Funnels, Ingested};
use leadstream_generator::truth::{funnels, TruthEvent};
use leadstream_schemas::{EventType, NormalizedEvent, SourceKind};
use proptest::prelude::*;
use std::sync::Arc;
use support::events::*;
use support::{default_funnels, ReadModel};

/// Feeds events in the order given, flushing after each, and renders the funnel's transitions
/// per lead as `kind from>to [skipped] (reason)`.
fn run(events: &[NormalizedEvent]) -> ReadModel {
    let mut engine = Engine::new(default_funnels(), 3_600_000);
    let mut model = ReadModel::default();
    for (i, e) in events.iter().enumerate() {
        engine.ingest(e, 0);
        model.apply(engine.flush(i as u64 + 1));
    }
    model
}

fn render(model: &ReadModel, funnel: &str, lead: &str) -> Vec<String> {
    model
        .transitions(funnel)
        .into_iter()
        .filter(|t| t.lead_id == lead)
        .map(|t| {
            let mut s = format!("{} {}>{}", t.kind, t.from_stage, t.to_stage);
            if !t.skipped.is_empty() {
                s += &format!(" [{}]", t.skipped.join(","));
            }
            if !t.reason.is_empty() {
                s += &format!(" ({})", t.reason);
            }
            s
        })
        .collect()
}

struct Case {
    name: &'static str,
    funnel: &'static str,
    lead: &'static str,
    events: Vec<NormalizedEvent>,
    want: &'static [&'static str],
}

#[test]
fn stage_machine_cases() {
    let cases = vec![
        Case {
            name: "advance through every b2c stage, second order is a repurchase",
            funnel: "b2c",
            lead: "u1",
            events: vec![
                touch(0, "exposure", "d1", "douyin"),
                touch(10, "click", "d1", "douyin"),
                signup_on(20, "u1", "d1"),
                ev(30, "trial_started", "u1"),
                ev(40, "order", "u1"),
                ev(50, "order", "u1"),
                ev(60, "order", "u1"),
            ],
            want: &[
                "enter >exposure",
                "advance exposure>click",
                "advance click>signup",
                "advance signup>trial",
                "advance trial>purchase",
                "advance purchase>repurchase",
            ],
        },
        Case {
            name: "skip lists the stages passed over; enter may start past the first stage",
            funnel: "b2c",
            lead: "u2",
            events: vec![ev(0, "signup", "u2"), ev(10, "order", "u2")],
            want: &["enter >signup", "skip signup>purchase [trial]"],
        },
        Case {
            name: "trial expiry flows back to signup with its reason; buying later skips",
            funnel: "b2c",
            lead: "u3",
            events: vec![
                ev(0, "signup", "u3"),
                ev(10, "trial_started", "u3"),
                ev(20, "trial_expired", "u3"),
                ev(30, "order", "u3"),
            ],
            want: &[
                "enter >signup",
                "advance signup>trial",
                "backflow trial>signup (trial_expired)",
                "skip signup>purchase [trial]",
            ],
        },
        Case {
            name: "trial expiry after a purchase changes nothing",
            funnel: "b2c",
            lead: "u4",
            events: vec![
                ev(0, "trial_started", "u4"),
                ev(10, "order", "u4"),
                ev(20, "trial_expired", "u4"),
            ],
            want: &["enter >trial", "advance trial>purchase"],
        },
        Case {
            name: "disqualified call is lost with its reason, a later signed contract reactivates",
            funnel: "sales",
            lead: "s1",
            events: vec![
                ev(0, "signup", "s1"),
                call(10, "s1", "connected"),
                with(call(20, "s1", "disqualified"), |e| {
                    e.reason = Some("no_budget".into())
                }),
                ev(30, "contract_signed", "s1"),
                with(ev(40, "contract_lost", "s1"), |e| {
                    e.reason = Some("price".into())
                }),
            ],
            want: &[
                "enter >lead",
                "advance lead>contacted",
                "lost contacted>lost (no_budget)",
                "reactivated contacted>won",
                "lost won>lost (price)",
            ],
        },
        Case {
            name: "a loss without a reason takes the rule's default; losing twice is one loss",
            funnel: "sales",
            lead: "s2",
            events: vec![
                ev(0, "signup", "s2"),
                ev(10, "contract_lost", "s2"),
                call(20, "s2", "disqualified"),
            ],
            want: &["enter >lead", "lost lead>lost (unspecified)"],
        },
        Case {
            name: "cancelled after signed flows back to qualified; cancelled again does nothing",
            funnel: "sales",
            lead: "s3",
            events: vec![
                ev(0, "signup", "s3"),
                call(10, "s3", "qualified"),
                ev(20, "contract_signed", "s3"),
                ev(30, "contract_cancelled", "s3"),
                ev(40, "contract_cancelled", "s3"),
            ],
            want: &[
                "enter >lead",
                "skip lead>qualified [contacted]",
                "advance qualified>won",
                "backflow won>qualified (contract_cancelled)",
            ],
        },
        Case {
            name: "special stage: an urgent call detours, the next main change leaves it",
            funnel: "sales",
            lead: "s4",
            events: vec![
                ev(0, "signup", "s4"),
                with(call(10, "s4", "connected"), |e| {
                    e.extra.insert("priority".into(), "urgent".into());
                }),
                call(20, "s4", "qualified"),
            ],
            want: &[
                "enter >lead",
                "enter lead>urgent_opportunity",
                "skip urgent_opportunity>qualified [contacted]",
            ],
        },
        Case {
            name: "stitching: touches before the signup (signup arrives first)",
            funnel: "b2c",
            lead: "u5",
            events: vec![
                signup_on(20, "u5", "d5"),
                touch(0, "exposure", "d5", "baidu"),
                touch(10, "click", "d5", "baidu"),
            ],
            want: &[
                "enter >exposure",
                "advance exposure>click",
                "advance click>signup",
            ],
        },
        Case {
            name: "stitching: touches first, then the signup absorbs the device lead",
            funnel: "b2c",
            lead: "u6",
            events: vec![
                touch(0, "exposure", "d6", "wechat"),
                touch(10, "click", "d6", "wechat"),
                signup_on(20, "u6", "d6"),
            ],
            want: &[
                "enter >exposure",
                "advance exposure>click",
                "advance click>signup",
            ],
        },
        Case {
            name: "duplicates (same event id) count once",
            funnel: "b2c",
            lead: "u7",
            events: vec![
                ev(0, "signup", "u7"),
                ev(10, "order", "u7"),
                ev(10, "order", "u7"),
                ev(0, "signup", "u7"),
            ],
            want: &["enter >signup", "skip signup>purchase [trial]"],
        },
        Case {
            name: "a late event rewrites history: the trial arrives after the order",
            funnel: "b2c",
            lead: "u8",
            events: vec![
                ev(0, "signup", "u8"),
                ev(20, "order", "u8"),
                ev(10, "trial_activated", "u8"),
            ],
            want: &[
                "enter >signup",
                "advance signup>trial",
                "advance trial>purchase",
            ],
        },
    ];
    for c in &cases {
        let model = run(&c.events);
        assert_eq!(render(&model, c.funnel, c.lead), c.want, "{}", c.name);
    }
}

/// `match_mask` tries an event only against the rules whose `on` lists its type: it must set
/// exactly the bits of the rules whose matcher matches, over every type and the `when` fields
/// the shipped rules read, and in a second config whose funnels' rules interleave by type.
#[test]
fn the_rule_mask_is_every_matching_rule() {
    let interleaved = Funnels::from_yaml(
        "funnels:\n  a:\n    stages: [x]\n    rules:\n      - {on: order, enter: x}\n  b:\n    stages: [x, y]\n    rules:\n      - {on: call, when: {call_outcome: [connected, qualified]}, enter: y}\n      - {on: [exposure, call], enter: x}\n",
    );
    let configs = [
        default_funnels(),
        Arc::new(interleaved.expect("the second config")),
    ];
    let mut checked = 0;
    for funnels in configs {
        for t in EventType::ALL {
            for outcome in [
                None,
                Some("connected"),
                Some("qualified"),
                Some("no_answer"),
            ] {
                for urgent in [false, true] {
                    let e = with(ev(0, t.as_str(), "u1"), |e| {
                        e.call_outcome = outcome.map(Into::into);
                        if urgent {
                            e.extra.insert("priority".into(), "urgent".into());
                        }
                    });
                    let mut naive = 0u64;
                    for f in &funnels.funnels {
                        for (i, r) in f.rules.iter().enumerate() {
                            if r.matcher.matches(&e) {
                                naive |= 1 << (f.first_bit + i as u32);
                            }
                        }
                    }
                    assert_eq!(funnels.match_mask(&e), naive, "{t:?} {outcome:?} {urgent}");
                    checked += u32::from(naive != 0);
                }
            }
        }
    }
    assert!(checked > 40, "most cases match some rule ({checked})");
}

#[test]
fn a_device_lead_disappears_when_a_signup_claims_the_device() {
    let model = run(&[
        touch(0, "exposure", "d9", "douyin"),
        touch(5, "click", "d9", "google"),
    ]);
    assert_eq!(render(&model, "b2c", "device:d9").len(), 2);
    let model = run(&[
        touch(0, "exposure", "d9", "douyin"),
        touch(5, "click", "d9", "google"),
        signup_on(9, "u9", "d9"),
    ]);
    assert!(render(&model, "b2c", "device:d9").is_empty());
    assert!(model.leads("b2c").iter().all(|l| l.lead_id == "u9"));
    let lead = model.leads("b2c")[0];
    assert_eq!(
        (lead.first_touch.as_str(), lead.last_touch.as_str()),
        ("douyin", "google")
    );
    assert_eq!(lead.reached_at.len(), 3);
}

#[test]
fn touches_more_than_the_lookback_before_the_signup_do_not_attribute() {
    const DAY: i64 = 86_400;
    let lead = |touch_at: i64| {
        let model = run(&[
            touch(touch_at, "exposure", "d7", "baidu"),
            touch(40 * DAY, "click", "d7", "douyin"),
            signup_on(40 * DAY + 60, "u7", "d7"),
        ]);
        let l = model.leads("b2c")[0].clone();
        (
            l.first_touch.to_string(),
            l.last_touch.to_string(),
            l.reached_at.len(),
        )
    };
    // Exactly 30 days before the signup still attributes; a second more does not, and the
    // exposure still counts in the funnel.
    let at_the_edge = 40 * DAY + 60 - 30 * DAY;
    assert_eq!(lead(at_the_edge), ("baidu".into(), "douyin".into(), 3));
    assert_eq!(lead(at_the_edge - 1), ("douyin".into(), "douyin".into(), 3));
    // A lead without a signup attributes to every touch.
    let model = run(&[
        touch(0, "exposure", "d8", "baidu"),
        touch(40 * DAY, "click", "d8", "douyin"),
    ]);
    assert_eq!(model.leads("b2c")[0].first_touch.as_str(), "baidu");
}

#[test]
fn the_earliest_signup_owns_a_shared_device_even_when_it_arrives_last() {
    let model = run(&[
        touch(0, "click", "shared", "baidu"),
        signup_on(50, "late_user", "shared"),
        signup_on(20, "early_user", "shared"),
    ]);
    assert_eq!(
        render(&model, "b2c", "early_user"),
        ["enter >click", "advance click>signup"]
    );
    assert_eq!(render(&model, "b2c", "late_user"), ["enter >signup"]);
}

#[test]
fn too_late_events_are_applied_and_reported() {
    let mut engine = Engine::new(default_funnels(), 60_000);
    engine.ingest(&ev(1000, "signup", "x"), 0);
    assert!(matches!(
        engine.ingest(&ev(990, "exposure", "x"), 0),
        Ingested::Applied {
            late: true,
            too_late: false,
            ..
        }
    ));
    assert!(matches!(
        engine.ingest(&ev(10, "click", "x"), 0),
        Ingested::Applied {
            late: true,
            too_late: true,
            correction: true
        }
    ));
    let out = engine.flush(1);
    assert_eq!(out.late_events.len(), 1);
    assert_eq!(out.late_events[0].behind_ms, 990_000);
}

// ---- property: arrival order and duplicates never matter ----

fn truth_event(e: &NormalizedEvent) -> TruthEvent {
    let kind = match e.event_type {
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
    TruthEvent {
        event_id: e.event_id.clone(),
        kind,
        event_type: e.event_type,
        time_ms: e.event_time.timestamp_millis(),
        lead_id: e.lead_id.clone(),
        device_id: e.device_id.clone(),
        channel: e.channel.clone(),
        variant: e.variant.clone(),
        call_outcome: e.call_outcome.clone(),
        reason: e.reason.clone(),
        amount: e.amount,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn any_arrival_order_with_duplicates_equals_one_sorted_pass(
        events in story(),
        order in any::<proptest::sample::Index>(),
        dups in proptest::collection::vec(any::<proptest::sample::Index>(), 0..10),
        flush_every in 1usize..8,
    ) {
        // One pass over the distinct events sorted by event time, flushed once.
        let mut sorted = events.clone();
        sorted.sort_by(|a, b| (a.event_time, &a.event_id).cmp(&(b.event_time, &b.event_id)));
        sorted.dedup_by(|a, b| a.event_id == b.event_id);
        let mut batch = Engine::new(default_funnels(), 3_600_000);
        for e in &sorted {
            batch.ingest(e, 0);
        }
        let mut want = ReadModel::default();
        want.apply(batch.flush(1));

        // The same events shuffled, with duplicates, flushed as they go.
        let mut shuffled = events.clone();
        for d in &dups {
            shuffled.push(events[d.index(events.len())].clone());
        }
        let n = shuffled.len();
        let start = order.index(n);
        shuffled.rotate_left(start);
        for i in (1..n).rev() {
            let j = (i * 7919 + start) % (i + 1);
            shuffled.swap(i, j);
        }
        let mut stream = Engine::new(default_funnels(), 3_600_000);
        let mut got = ReadModel::default();
        for (i, e) in shuffled.iter().enumerate() {
            stream.ingest(e, 0);
            if i % flush_every == 0 {
                got.apply(stream.flush(i as u64 + 1));
            }
        }
        got.apply(stream.flush(n as u64 + 1));
        prop_assert_eq!(snapshot(&got), snapshot(&want));

        // And the counts equal the generator's independent batch oracle over the same events.
        let truth_events: Vec<TruthEvent> = shuffled.iter().map(truth_event).collect();
        let (oracle, _) = funnels(&truth_events);
        for (name, ft) in &oracle {
            let (totals, cells) = got.cells(name, ft.stages.len());
            prop_assert_eq!(&totals, &ft.totals);
            prop_assert_eq!(&cells, &ft.cells);
            let (rtotals, rcells) = got.rollup_cells(name, ft.stages.len());
            prop_assert_eq!(&rtotals, &ft.totals);
            prop_assert_eq!(&rcells, &ft.cells);
        }
    }
}

/// A hot device (a placeholder id the screening missed, a bot) keeps at most the configured
/// number of touches; the rest are dropped, not replayed on every new one.
#[test]
fn a_device_keeps_at_most_its_touch_cap() {
    let mut engine = Engine::new(default_funnels(), 3_600_000);
    engine.set_touch_cap(3);
    let results: Vec<Ingested> = (0..5)
        .map(|i| {
            let t = with(touch(i, "exposure", "hot-device", "douyin"), |e| {
                e.event_id = format!("{i:032x}");
            });
            engine.ingest(&t, 0)
        })
        .collect();
    let applied = results
        .iter()
        .filter(|r| matches!(r, Ingested::Applied { .. }))
        .count();
    assert_eq!(applied, 3, "{results:?}");
    let out = engine.flush(1);
    assert_eq!(
        out.transitions.len(),
        1,
        "one device lead entered the funnel"
    );
}

// ---- property: the events a replay cannot do without are enough ----

/// A funnel whose rules count occurrences (the N-th call, the N-th and later), backflow,
/// lose, reactivate and enter a special stage.
const COUNTING: &str = r#"
funnels:
  f:
    stages: [a, b, c, d]
    special_stages: [s]
    rules:
      - on: exposure
        enter: a
      - on: call
        occurrence: 2
        enter: b
      - on: call
        occurrence: 3+
        enter: c
      - on: order
        occurrence: 1
        enter: d
      - on: click
        occurrence: 2+
        enter: s
      - on: trial_expired
        backflow: {to: a, from: [b, c, d], reason: expired}
      - on: contract_lost
        lose: {default_reason: gone}
"#;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]
    /// Dropping from a settled prefix every event `mark_needed` does not need leaves the path
    /// of every continuation as it is: the same transitions (caused by the same events), stages,
    /// reach times and special stages.
    #[test]
    fn a_replay_of_the_needed_settled_events_continues_like_all_of_them(
        kinds in proptest::collection::vec(0usize..6, 1..40),
        settled_share in 0usize..=100,
    ) {
        use leadstream_aggregator::machine::{mark_needed, replay, Step};
        let funnels = leadstream_aggregator::Funnels::from_yaml(COUNTING).expect("funnel");
        let funnel = &funnels.funnels[0];
        let types = ["exposure", "click", "call", "order", "trial_expired", "contract_lost"];
        let steps: Vec<Step> = kinds
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let e = ev(i as i64, types[*k], "u1");
                Step {
                    time_ms: e.event_time.timestamp_millis(),
                    rules: funnels.match_mask(&e),
                    reason: 0,
                }
            })
            .collect();
        let settled = steps.len() * settled_share / 100;
        let mut needed = vec![false; steps.len()];
        needed[settled..].fill(true);
        mark_needed(funnel, steps.iter().copied(), &mut needed);
        let kept: Vec<usize> = (0..steps.len()).filter(|i| needed[*i]).collect();
        let all = replay(funnel, steps.iter().copied());
        let fewer = replay(funnel, kept.iter().map(|i| steps[*i]));
        // Transitions name their causing event by position in what was replayed.
        let mut renamed = fewer.clone();
        for t in &mut renamed.transitions {
            t.event = kept[t.event as usize] as u32;
        }
        prop_assert_eq!(renamed, all);
    }
}
