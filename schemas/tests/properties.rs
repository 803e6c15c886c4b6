//! Property tests: no input, however malformed, panics the normalizer.
#![allow(missing_docs)]

use leadstream_schemas::{
    ChannelRules, Normalizer, NormalizerConfig, Secret, SourceKind, SourceMeta,
};
use proptest::prelude::*;
use serde_json::{Map, Value};

fn normalizer() -> Normalizer {
    Normalizer::new(NormalizerConfig {
        channel_rules: ChannelRules::from_yaml(include_str!("../../config/channels.yaml"))
            .expect("valid"),
        time_zone: chrono_tz::Asia::Shanghai,
        pii_salt: Secret::new("p".into()),
        max_message_bytes: 4096,
        screening: Default::default(),
    })
}

fn kind() -> impl Strategy<Value = SourceKind> {
    prop::sample::select(SourceKind::ALL.to_vec())
}

/// Arbitrary JSON, biased towards the contracts' own keys so deep paths get exercised.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::String),
        prop::sample::select(vec![
            "2025-11-23 12:00:00",
            "1763870400",
            "1763870400123",
            "2025-11-23T04:00:00Z",
            "https://e.com/?utm_source=wechat&ab=B",
            "signed",
            "lost",
            "disqualified",
            "trial_expired",
            "CNY",
            "-1",
            "1.23456"
        ])
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "impression_id",
            "click_id",
            "signup_id",
            "trial_id",
            "call_id",
            "contract_id",
            "order_id",
            "ts",
            "clicked_at",
            "created_at",
            "at",
            "started_at",
            "updated_at",
            "paid_at",
            "platform",
            "campaign_id",
            "device_id",
            "user_id",
            "lead_id",
            "landing_url",
            "cost_micros",
            "phone",
            "email",
            "name",
            "utm",
            "experiment",
            "event",
            "direction",
            "duration_sec",
            "outcome",
            "disqualify_reason",
            "status",
            "amount",
            "currency",
            "lost_reason",
            "amount_cents",
            "source",
            "medium",
            "campaign",
            "id",
            "variant",
        ])
        .prop_map(str::to_string),
        ".{0,8}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(k in kind(), bytes in prop::collection::vec(any::<u8>(), 0..6000)) {
        let meta = SourceMeta { kind: k, partition: 0, offset: 0, received_at: chrono::Utc::now() };
        let _ = normalizer().normalize(&meta, &bytes);
    }

    #[test]
    fn arbitrary_json_objects_never_panic(k in kind(), fields in prop::collection::btree_map(key(), json_value(), 0..20)) {
        let obj: Map<String, Value> = fields.into_iter().collect();
        let bytes = serde_json::to_vec(&Value::Object(obj)).expect("serializable");
        let meta = SourceMeta { kind: k, partition: 0, offset: 0, received_at: chrono::Utc::now() };
        if let Ok(ev) = normalizer().normalize(&meta, &bytes) {
            // Whatever is accepted is well-formed.
            prop_assert_eq!(ev.event_id.len(), 32);
            prop_assert_eq!(ev.channel.is_some(), matches!(k, SourceKind::Exposure | SourceKind::AdClick | SourceKind::Signup));
            prop_assert!(serde_json::to_vec(&ev).is_ok());
        }
    }
}
