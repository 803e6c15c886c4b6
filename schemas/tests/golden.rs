//! Golden files: every `fixtures/raw/<kind>__<case>.json` normalizes to `fixtures/normalized/<same name>`,
//! which holds either the normalized event or `{"error": {...}}`. `UPDATE_GOLDEN=1` rewrites them;
//! review the diff before committing.
#![allow(missing_docs)]

use leadstream_schemas::{
    ChannelRules, ErrorCategory, Normalizer, NormalizerConfig, Secret, SourceKind, SourceMeta,
};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn normalizer() -> Normalizer {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("../config/channels.yaml"))
        .expect("config/channels.yaml");
    Normalizer::new(NormalizerConfig {
        channel_rules: ChannelRules::from_yaml(&text).expect("channel rules are valid"),
        time_zone: chrono_tz::Asia::Shanghai,
        pii_salt: Secret::new("golden-salt".to_string()),
        max_message_bytes: leadstream_schemas::DEFAULT_MAX_MESSAGE_BYTES,
        screening: Default::default(),
    })
}

fn meta(kind: SourceKind) -> SourceMeta {
    SourceMeta {
        kind,
        partition: 3,
        offset: 42,
        received_at: chrono::DateTime::parse_from_rfc3339("2025-11-23T06:00:00.123456Z")
            .expect("valid")
            .to_utc(),
    }
}

fn raw_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/raw");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("fixtures/raw")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files
}

fn actual(n: &Normalizer, raw: &Path) -> Value {
    let name = raw
        .file_name()
        .and_then(|s| s.to_str())
        .expect("utf-8 name");
    let kind_name = name.split("__").next().expect("kind prefix");
    let kind = SourceKind::parse(kind_name)
        .unwrap_or_else(|| panic!("{name}: unknown kind prefix {kind_name}"));
    let bytes = std::fs::read(raw).expect("read raw");
    match n.normalize(&meta(kind), &bytes) {
        Ok(ev) => serde_json::to_value(ev).expect("serializable"),
        Err(e) => json!({ "error": e }),
    }
}

#[test]
fn raw_fixtures_match_their_normalized_golden_files() {
    let n = normalizer();
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/normalized");
    let mut mismatches = Vec::new();
    for raw in raw_files() {
        let got = actual(&n, &raw);
        let golden = out_dir.join(raw.file_name().expect("name"));
        if update {
            std::fs::write(
                &golden,
                serde_json::to_string_pretty(&got).expect("json") + "\n",
            )
            .expect("write golden");
            continue;
        }
        let want: Value = serde_json::from_str(
            &std::fs::read_to_string(&golden)
                .unwrap_or_else(|_| panic!("missing golden {golden:?}")),
        )
        .expect("golden is json");
        if got != want {
            mismatches.push(format!("{}:\n  want {want}\n  got  {got}", raw.display()));
        }
    }
    assert!(
        mismatches.is_empty(),
        "golden mismatches:\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn bad_fixtures_are_rejected_and_good_ones_accepted() {
    let n = normalizer();
    let mut categories = BTreeSet::new();
    let mut bad = 0;
    for raw in raw_files() {
        let name = raw
            .file_name()
            .and_then(|s| s.to_str())
            .expect("name")
            .to_string();
        let got = actual(&n, &raw);
        let is_bad = name.contains("__bad_");
        assert_eq!(got.get("error").is_some(), is_bad, "{name}: {got}");
        if is_bad {
            bad += 1;
            categories.insert(
                got["error"]["category"]
                    .as_str()
                    .expect("category")
                    .to_string(),
            );
        }
    }
    assert!(bad >= 15, "at least 15 invalid inputs, found {bad}");
    // Every category the normalizer itself can produce has a fixture (the rest are collector-level).
    for c in ErrorCategory::ALL {
        if matches!(
            c,
            ErrorCategory::Oversized | ErrorCategory::UnknownTopic | ErrorCategory::SinkRejected
        ) {
            continue;
        }
        assert!(
            categories.contains(c.as_str()),
            "no bad fixture for category {c}"
        );
    }
}

#[test]
fn oversized_messages_are_rejected_before_parsing() {
    let n = normalizer();
    // Valid JSON, but 1 byte over the limit: the size check alone must reject it.
    let pad = "x".repeat(leadstream_schemas::DEFAULT_MAX_MESSAGE_BYTES);
    let body = format!(
        r#"{{"impression_id":"i","ts":1763870400,"platform":"douyin","campaign_id":"c","device_id":"d","pad":"{pad}"}}"#
    );
    let e = n
        .normalize(&meta(SourceKind::Exposure), body.as_bytes())
        .expect_err("oversized");
    assert_eq!(e.category, ErrorCategory::Oversized);
    assert!(e.message.contains("limit is 65536"), "{e}");
}

#[test]
fn same_native_id_gives_same_event_id_and_different_status_another() {
    let n = normalizer();
    let signed = br#"{"contract_id":"ct-1","lead_id":"u","status":"signed","amount":"1","currency":"CNY","updated_at":1763870400}"#;
    let signed_again = br#"{"contract_id":"ct-1","lead_id":"u","status":"signed","amount":1,"currency":"cny","updated_at":"1763870400000"}"#;
    let cancelled =
        br#"{"contract_id":"ct-1","lead_id":"u","status":"cancelled","updated_at":1763870500}"#;
    let a = n
        .normalize(&meta(SourceKind::Contract), signed)
        .expect("valid");
    let b = n
        .normalize(&meta(SourceKind::Contract), signed_again)
        .expect("valid");
    let c = n
        .normalize(&meta(SourceKind::Contract), cancelled)
        .expect("valid");
    assert_eq!(a.event_id, b.event_id);
    assert_eq!(a, b);
    assert_ne!(a.event_id, c.event_id);
    // Another topic with the same native id is another event.
    let order = br#"{"order_id":"ct-1","user_id":"u","paid_at":1763870400,"amount_cents":1,"currency":"CNY"}"#;
    assert_ne!(
        n.normalize(&meta(SourceKind::Order), order)
            .expect("valid")
            .event_id,
        a.event_id
    );
}

#[test]
fn personal_data_never_appears_in_output_or_errors() {
    let n = normalizer();
    for raw in raw_files() {
        let text = actual(&n, &raw).to_string();
        for secret in [
            "138-0013-8000",
            "13800138000",
            "Li.Wei",
            "li.wei",
            "李伟",
            "call me maybe",
            "li.wei at",
        ] {
            assert!(
                !text.contains(secret),
                "{}: output leaks {secret:?}: {text}",
                raw.display()
            );
        }
    }
}

/// The JSON Schema files document the same contract the normalizer enforces: every required field
/// they list, when removed from a valid fixture, makes the normalizer reject it as missing.
#[test]
fn json_schemas_agree_with_the_normalizer_on_required_fields() {
    let n = normalizer();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for kind in SourceKind::ALL {
        let path = root.join(format!("json-schema/{}.json", kind.canonical_topic()));
        let schema: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("schema file"))
                .expect("schema json");
        assert_eq!(schema["type"], "object");
        let required: Vec<&str> = schema["required"]
            .as_array()
            .expect("required")
            .iter()
            .map(|v| v.as_str().expect("name"))
            .collect();
        let fixture = raw_files()
            .into_iter()
            .find(|p| {
                let name = p.file_name().and_then(|s| s.to_str()).unwrap_or_default();
                name.starts_with(&format!("{}__", kind.as_str())) && !name.contains("__bad_")
            })
            .expect("a valid fixture per kind");
        let valid: Value =
            serde_json::from_slice(&std::fs::read(&fixture).expect("read")).expect("json");
        for field in required {
            let mut v = valid.clone();
            v.as_object_mut().expect("object").remove(field);
            let e = n
                .normalize(&meta(kind), &serde_json::to_vec(&v).expect("json"))
                .expect_err(field);
            assert_eq!(
                e.category,
                ErrorCategory::MissingField,
                "{}: {field}",
                kind.as_str()
            );
        }
    }
}
