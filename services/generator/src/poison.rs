//! Malformed messages, one kind per rejection category: each starts as a valid message of its
//! topic and breaks exactly one rule, so the collector must reject it with that category.

use crate::story::{Detail, PlannedEvent};
use crate::wire;
use chrono_tz::Tz;
use leadstream_schemas::{ErrorCategory, EventType, SourceKind};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;
use serde_json::{json, Value};

/// Topics where a category can be produced (money only lives on orders and contracts, enums on
/// trials, calls and contracts, and so on).
pub fn topics_for(category: ErrorCategory) -> &'static [SourceKind] {
    use SourceKind::*;
    match category {
        ErrorCategory::InvalidMoney => &[Order, Contract],
        ErrorCategory::InvalidEnum => &[Trial, Call, Contract],
        ErrorCategory::InvalidValue => &[AdClick, Signup, Call, Order],
        _ => &SourceKind::ALL,
    }
}

/// A valid event of `kind` to break, with its own id space (`bad-…`) so it never shares an id
/// with a valid event.
fn template(kind: SourceKind, id: &str, time_ms: i64) -> PlannedEvent {
    let (event_type, detail) = match kind {
        SourceKind::Exposure => (
            EventType::Exposure,
            Detail::Exposure {
                platform: "douyin".into(),
                campaign_id: "c-1".into(),
                creative_id: None,
                cost_micros: Some(1200),
            },
        ),
        SourceKind::AdClick => (
            EventType::Click,
            Detail::Click {
                platform: "wechat".into(),
                landing_url: "https://www.example.cn/landing?utm_source=wechat".into(),
                campaign_id: None,
            },
        ),
        SourceKind::Signup => (
            EventType::Signup,
            Detail::Signup {
                phone: Some("138 0013 8000".into()),
                email: Some("someone@example.com".into()),
                name: Some("李雷 🙂".into()),
                utm: None,
                experiment: None,
                city: None,
            },
        ),
        SourceKind::Trial => (EventType::TrialStarted, Detail::Trial { plan: None }),
        SourceKind::Call => (
            EventType::Call,
            Detail::Call {
                direction: "outbound",
                duration_sec: 60,
                outcome: "connected",
                reason: None,
                agent_id: None,
            },
        ),
        SourceKind::Contract => (
            EventType::ContractSigned,
            Detail::Contract {
                amount: Some(Decimal::new(1_000_000, 2)),
                reason: None,
            },
        ),
        SourceKind::Order => (
            EventType::Order,
            Detail::Order {
                amount: Decimal::new(9_900, 2),
            },
        ),
    };
    let anonymous = matches!(kind, SourceKind::Exposure | SourceKind::AdClick);
    PlannedEvent {
        kind,
        event_type,
        native_id: id.into(),
        time_ms,
        user_id: (!anonymous).then(|| format!("{id}-user")),
        device_id: anonymous.then(|| format!("{id}-device")),
        channel: None,
        variant: None,
        detail,
    }
}

/// Builds a malformed message of `category` for `kind` (one of [`topics_for`]); `None` for the
/// categories no producer can cause (`unknown_topic`, `sink_rejected`).
pub fn malformed(
    category: ErrorCategory,
    kind: SourceKind,
    id: &str,
    time_ms: i64,
    max_message_bytes: usize,
    rng: &mut ChaCha8Rng,
    tz: Tz,
) -> Option<Vec<u8>> {
    let ev = template(kind, id, time_ms);
    let mut o = wire::object(&ev, rng, tz);
    let id_key = kind.id_field();
    let bytes = |o: &serde_json::Map<String, Value>| {
        serde_json::to_vec(o).expect("a json map always serializes")
    };
    let bytes = match category {
        ErrorCategory::Oversized => {
            // Padding in an extra attribute: otherwise a valid message, only too big.
            let pad = max_message_bytes + 1 - bytes(&o).len().min(max_message_bytes);
            o.insert("note".into(), json!("大".repeat(pad / 3 + 1)));
            bytes(&o)
        }
        ErrorCategory::InvalidUtf8 => {
            let mut b = bytes(&o);
            let at = find(&b, id.as_bytes()).expect("the id is in the message");
            b[at] = 0xff;
            b
        }
        ErrorCategory::InvalidJson => {
            let text = String::from_utf8(bytes(&o)).expect("serde_json writes utf-8");
            match rng.random_range(0..3) {
                0 => {
                    // Cut on a char boundary: a cut inside a character would be invalid UTF-8 instead.
                    let mut cut = text.len() / 2;
                    while !text.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    text.as_bytes()[..cut].to_vec()
                }
                1 => text.replace('"', "'").into_bytes(),
                _ => format!("{text},}}").into_bytes(),
            }
        }
        ErrorCategory::NotAnObject => match rng.random_range(0..3) {
            0 => serde_json::to_vec(&json!([Value::Object(o)])).expect("serializes"),
            1 => b"\"just a string\"".to_vec(),
            _ => b"null".to_vec(),
        },
        ErrorCategory::MissingField => {
            let key = if rng.random_bool(0.5) {
                id_key
            } else {
                kind.time_field()
            };
            o.remove(key);
            bytes(&o)
        }
        ErrorCategory::InvalidType => {
            if rng.random_bool(0.5) {
                o.insert(id_key.into(), json!(12345));
            } else {
                o.insert(kind.time_field().into(), json!(true));
            }
            bytes(&o)
        }
        ErrorCategory::InvalidId => {
            let bad = match rng.random_range(0..3) {
                0 => String::new(),
                1 => "   ".into(),
                _ => "x".repeat(leadstream_schemas::normalize::MAX_ID_BYTES + 1),
            };
            o.insert(id_key.into(), json!(bad));
            bytes(&o)
        }
        ErrorCategory::InvalidTimestamp => {
            let bad = [
                "yesterday",
                "2026-13-45 25:61:00",
                "1999-12-31T23:59:59Z",
                "1e400",
            ][rng.random_range(0..4)];
            o.insert(kind.time_field().into(), json!(bad));
            bytes(&o)
        }
        ErrorCategory::InvalidMoney => {
            let bad = ["12.345678", "-5", "¥100", "1,000.00"][rng.random_range(0..4)];
            o.remove("amount_cents");
            o.insert("amount".into(), json!(bad));
            o.insert("currency".into(), json!("CNY"));
            bytes(&o)
        }
        ErrorCategory::InvalidEnum => {
            let (key, bad) = match kind {
                SourceKind::Trial => ("event", "trial_paused"),
                SourceKind::Call if rng.random_bool(0.5) => ("direction", "sideways"),
                SourceKind::Call => ("outcome", "voicemail"),
                _ => ("status", "pending"),
            };
            o.insert(key.into(), json!(bad));
            bytes(&o)
        }
        ErrorCategory::InvalidValue => {
            match kind {
                SourceKind::AdClick => {
                    o.insert("landing_url".into(), json!("点击这里 not a url"));
                }
                SourceKind::Signup if rng.random_bool(0.5) => {
                    o.insert("email".into(), json!("no-at-sign.example.com"));
                }
                SourceKind::Signup => {
                    o.insert("phone".into(), json!("call me 📞"));
                }
                SourceKind::Call => {
                    o.insert("duration_sec".into(), json!(-5));
                }
                _ => {
                    o.insert("currency".into(), json!("RMB¥"));
                }
            }
            bytes(&o)
        }
        // Not producible into a source topic; `validate()` refuses them in the configuration.
        ErrorCategory::UnknownTopic | ErrorCategory::SinkRejected => return None,
    };
    Some(bytes)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
