//! Every message the generator marks valid passes the collector's normalizer and normalizes to
//! exactly what the generator planned (and the truth counts); every malformed one is rejected with
//! the category it was built for.

use leadstream_generator::config::PRODUCIBLE_POISON;
use leadstream_generator::{GeneratorConfig, Label, Schedule};
use leadstream_schemas::{
    ChannelRules, ErrorCategory, EventType, Normalizer, NormalizerConfig, Secret, SourceKind,
    SourceMeta,
};
use std::collections::{BTreeSet, HashSet};

fn normalizer(cfg: &GeneratorConfig) -> Normalizer {
    let rules = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/channels.yaml"
    ))
    .expect("config/channels.yaml");
    Normalizer::new(NormalizerConfig {
        channel_rules: ChannelRules::from_yaml(&rules).expect("channel rules"),
        time_zone: cfg.time_zone().expect("zone"),
        pii_salt: Secret::new("contract-test".into()),
        max_message_bytes: cfg.realism.max_message_bytes,
        screening: Default::default(),
    })
}

fn config(seed: u64, leads: u64) -> GeneratorConfig {
    let mut cfg = GeneratorConfig {
        seed,
        ..Default::default()
    };
    cfg.traffic.leads = leads;
    // Many more duplicates and malformed messages than by default, to cover every kind often.
    cfg.realism.poison_share = 0.2;
    cfg.realism.duplicate_share = 0.1;
    cfg
}

#[test]
fn valid_messages_normalize_to_the_plan_and_malformed_ones_fail_as_intended() {
    let cfg = config(11, 3000);
    let norm = normalizer(&cfg);
    let start = cfg
        .start_time(chrono::Utc::now())
        .unwrap()
        .timestamp_millis();
    let mut seen_ids = HashSet::new();
    let mut poison_seen = BTreeSet::new();
    let mut types_seen = BTreeSet::new();
    let mut outcomes_seen = BTreeSet::new();
    let (mut valid, mut dups, mut copies, mut poison) = (0, 0, 0, 0);
    for (offset, d) in Schedule::new(cfg, start).enumerate() {
        let meta = SourceMeta {
            kind: d.kind,
            partition: 0,
            offset: offset as i64,
            received_at: chrono::Utc::now(),
        };
        let result = norm.normalize(&meta, &d.payload);
        let text = String::from_utf8_lossy(&d.payload);
        match &d.label {
            Label::Valid(t) => {
                valid += 1;
                let ev = result.unwrap_or_else(|e| panic!("valid message rejected: {e}\n{text}"));
                assert_eq!(ev.event_id, t.event_id, "{text}");
                assert_eq!(ev.event_type, t.event_type, "{text}");
                assert_eq!(ev.event_time.timestamp_millis(), t.time_ms, "{text}");
                assert_eq!(ev.lead_id, t.lead_id, "{text}");
                assert_eq!(ev.device_id, t.device_id, "{text}");
                assert_eq!(
                    ev.channel, t.channel,
                    "channel rules disagree with the generator: {text}"
                );
                assert_eq!(ev.variant, t.variant, "{text}");
                assert_eq!(ev.call_outcome, t.call_outcome, "{text}");
                assert_eq!(ev.reason, t.reason, "{text}");
                assert!(
                    seen_ids.insert(t.event_id.clone()),
                    "event id {} planned twice",
                    t.event_id
                );
                types_seen.insert(t.event_type.as_str());
                if let Some(o) = &t.call_outcome {
                    outcomes_seen.insert(o.clone());
                }
                if ev.event_type == EventType::Signup {
                    assert!(
                        !serde_json::to_string(&ev).unwrap().contains("name"),
                        "a name reached the normalized event"
                    );
                }
            }
            Label::Duplicate => {
                dups += 1;
                let ev = result.unwrap_or_else(|e| panic!("duplicate rejected: {e}\n{text}"));
                assert!(
                    seen_ids.contains(&ev.event_id),
                    "a duplicate came before its original: {text}"
                );
            }
            Label::Copy(t) => {
                copies += 1;
                let ev = result.unwrap_or_else(|e| panic!("copy rejected: {e}\n{text}"));
                assert_eq!(ev.event_id, t.event_id, "{text}");
                assert_eq!(ev.event_time.timestamp_millis(), t.time_ms, "{text}");
                assert_eq!(
                    (&ev.lead_id, &ev.device_id),
                    (&t.lead_id, &t.device_id),
                    "{text}"
                );
                assert!(
                    seen_ids.contains(&ev.event_id),
                    "a copy came before its original: {text}"
                );
            }
            Label::Poison(c) => {
                poison += 1;
                let err = result.expect_err(&format!("malformed message accepted: {text}"));
                assert_eq!(err.category, *c, "{err}\n{text}");
                poison_seen.insert(*c);
            }
        }
    }
    assert!(
        valid > 10_000 && dups > 500 && copies > 100 && poison > 1_000,
        "{valid} {dups} {copies} {poison}"
    );
    let all: BTreeSet<ErrorCategory> = PRODUCIBLE_POISON.into_iter().collect();
    assert_eq!(poison_seen, all, "every malformed kind is produced");
    for t in [
        "exposure",
        "click",
        "signup",
        "trial_started",
        "trial_activated",
        "trial_expired",
        "call",
        "contract_signed",
        "contract_lost",
        "contract_cancelled",
        "order",
    ] {
        assert!(types_seen.contains(t), "no {t} events");
    }
    for o in [
        "connected",
        "no_answer",
        "callback",
        "qualified",
        "disqualified",
    ] {
        assert!(outcomes_seen.contains(o), "no {o} calls");
    }
}

#[test]
fn deliveries_come_in_delivery_time_order_and_late_ones_are_within_the_configured_lateness() {
    let cfg = config(12, 2000);
    let max_late = cfg.realism.max_lateness.as_millis() as i64;
    let start = cfg
        .start_time(chrono::Utc::now())
        .unwrap()
        .timestamp_millis();
    let mut last = i64::MIN;
    let mut late = 0;
    for d in Schedule::new(cfg, start) {
        assert!(d.deliver_at_ms >= last, "delivery order");
        last = d.deliver_at_ms;
        if let Label::Valid(t) = &d.label {
            let lag = d.deliver_at_ms - t.time_ms;
            assert!((0..=max_late).contains(&lag), "lag {lag} ms");
            if lag >= 1000 {
                late += 1;
            }
        }
    }
    assert!(late > 100, "late deliveries: {late}");
}

#[test]
fn free_text_carries_chinese_and_emoji_and_every_timestamp_form() {
    let cfg = config(13, 1500);
    let start = cfg
        .start_time(chrono::Utc::now())
        .unwrap()
        .timestamp_millis();
    let texts: Vec<String> = Schedule::new(cfg, start)
        .filter(|d| matches!(d.label, Label::Valid(_)))
        .map(|d| String::from_utf8(d.payload.to_vec()).unwrap())
        .collect();
    let any = |f: &dyn Fn(&str) -> bool| texts.iter().any(|t| f(t));
    assert!(any(
        &|t| t.contains("\"name\"") && t.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c))
    ));
    assert!(any(&|t| t.chars().any(|c| c as u32 >= 0x1F300)), "emoji");
    type FormTest<'a> = &'a dyn Fn(&serde_json::Value) -> bool;
    let forms: [(&str, FormTest); 7] = [
        ("epoch seconds", &|v| {
            v.as_i64().is_some_and(|n| n < 100_000_000_000)
        }),
        ("epoch seconds string", &|v| {
            v.as_str()
                .is_some_and(|s| s.len() == 10 && s.bytes().all(|b| b.is_ascii_digit()))
        }),
        ("epoch millis", &|v| {
            v.as_i64().is_some_and(|n| n > 100_000_000_000)
        }),
        ("epoch millis string", &|v| {
            v.as_str()
                .is_some_and(|s| s.len() == 13 && s.bytes().all(|b| b.is_ascii_digit()))
        }),
        ("rfc 3339 utc", &|v| {
            v.as_str().is_some_and(|s| s.ends_with('Z'))
        }),
        ("rfc 3339 offset", &|v| {
            v.as_str().is_some_and(|s| s.ends_with("+08:00"))
        }),
        ("naive local", &|v| {
            v.as_str()
                .is_some_and(|s| s.len() >= 19 && s.as_bytes()[10] == b' ')
        }),
    ];
    for (name, test) in forms {
        let found = texts.iter().any(|t| {
            let v: serde_json::Value = serde_json::from_str(t).unwrap();
            SourceKind::ALL
                .iter()
                .any(|k| v.get(k.time_field()).is_some_and(test))
        });
        assert!(found, "no timestamp written as {name}");
    }
}
