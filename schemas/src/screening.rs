//! What a message is screened for besides its contract: personal data under any key on any
//! topic (SPEC §4), placeholder ids that would pile unrelated events onto one identity, and
//! nesting deeper than anything downstream should have to parse.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Nesting (objects and arrays) deeper than this is rejected before parsing. Downstream
/// readers (the aggregator's decoder, ClickHouse's JSON functions) parse the normalized event,
/// which nests the extra attributes one level deeper than the source message; serde_json
/// stops at 128, so a message accepted near that limit would be unreadable downstream.
pub const MAX_NESTING: usize = 32;

/// Keys holding personal data on every topic, besides `phone` and `email` (which are hashed).
pub const DEFAULT_PII_KEYS: &[&str] = &[
    "name",
    "full_name",
    "real_name",
    "first_name",
    "last_name",
    "mobile",
    "tel",
    "telephone",
    "id_card",
    "id_number",
    "passport",
    "address",
    "birthday",
    "wechat_id",
];

/// Values that identify nobody: SDKs send them when the real id is unavailable (an iOS IDFA
/// with tracking off is all zeros). Matched case-insensitively; ids made only of `0` and `-`
/// count too.
pub const DEFAULT_PLACEHOLDER_IDS: &[&str] = &[
    "unknown",
    "null",
    "nil",
    "none",
    "undefined",
    "(null)",
    "n/a",
    "na",
    "-",
    "default",
    "test",
];

/// The screening lists of the normalizer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Screening {
    /// Keys dropped wherever they appear (top level and inside nested extra attributes, any
    /// depth), matched case-insensitively. `phone` and `email` are always personal data: they
    /// are normalized and kept only as salted hashes, or dropped where they do not parse.
    pub pii_keys: Vec<String>,
    /// Identity ids (native ids, `device_id`, `user_id`, `lead_id`) that are rejected as
    /// `invalid_id`.
    pub placeholder_ids: Vec<String>,
}

impl Default for Screening {
    fn default() -> Self {
        Self {
            pii_keys: DEFAULT_PII_KEYS.iter().map(|s| s.to_string()).collect(),
            placeholder_ids: DEFAULT_PLACEHOLDER_IDS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

/// The keys whose values are phone numbers and email addresses.
pub const PHONE_KEY: &str = "phone";
/// See [`PHONE_KEY`].
pub const EMAIL_KEY: &str = "email";

impl Screening {
    /// Whether `id` identifies nobody.
    pub fn is_placeholder(&self, id: &str) -> bool {
        let t = id.trim();
        t.bytes().all(|b| b == b'0' || b == b'-')
            || self
                .placeholder_ids
                .iter()
                .any(|p| p.eq_ignore_ascii_case(t))
    }

    fn is_pii(&self, key: &str) -> bool {
        key.eq_ignore_ascii_case(PHONE_KEY)
            || key.eq_ignore_ascii_case(EMAIL_KEY)
            || self.pii_keys.iter().any(|k| k.eq_ignore_ascii_case(key))
    }

    /// Drops every personal-data key of `map`, at any depth; returns how many were dropped.
    pub fn scrub(&self, map: &mut Map<String, Value>) -> usize {
        let before = map.len();
        map.retain(|k, _| !self.is_pii(k));
        let mut dropped = before - map.len();
        for v in map.values_mut() {
            dropped += self.scrub_value(v);
        }
        dropped
    }

    fn scrub_value(&self, v: &mut Value) -> usize {
        match v {
            Value::Object(m) => self.scrub(m),
            Value::Array(items) => items.iter_mut().map(|i| self.scrub_value(i)).sum(),
            _ => 0,
        }
    }
}

/// Whether the JSON text `bytes` nests objects and arrays deeper than `max` (strings are
/// skipped, escapes included). A scan of the raw bytes, so a hostile message costs one pass.
pub fn nests_deeper_than(bytes: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn personal_data_goes_at_any_depth_and_the_rest_stays() {
        let s = Screening::default();
        let mut m = json!({
            "Name": "张三",
            "note": "keep",
            "customer": {"phone": "13800138000", "tier": "gold",
                         "contacts": [{"email": "a@b.cn", "role": "owner"}]},
        })
        .as_object()
        .cloned()
        .unwrap();
        assert_eq!(s.scrub(&mut m), 3);
        assert_eq!(
            Value::Object(m),
            json!({"note": "keep", "customer": {"tier": "gold", "contacts": [{"role": "owner"}]}})
        );
    }

    #[test]
    fn placeholders_are_recognised() {
        let s = Screening::default();
        for p in [
            "unknown",
            "UNKNOWN",
            " null ",
            "00000000-0000-0000-0000-000000000000",
            "0",
        ] {
            assert!(s.is_placeholder(p), "{p}");
        }
        for real in [
            "d-123",
            "a0b0",
            "u-s7-42",
            "6D92078A-8246-4BA4-AE5B-76104861E7DC",
        ] {
            assert!(!s.is_placeholder(real), "{real}");
        }
    }

    #[test]
    fn nesting_is_counted_outside_strings_only() {
        let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
        assert!(nests_deeper_than(deep.as_bytes(), 32));
        assert!(!nests_deeper_than(deep.as_bytes(), 40));
        let quoted = format!(r#"{{"a":"{}\"{}"}}"#, "[".repeat(100), "{".repeat(100));
        assert!(!nests_deeper_than(quoted.as_bytes(), 2));
        assert!(!nests_deeper_than(br#"{"a":[1,{"b":[2]}]}"#, 4));
        assert!(nests_deeper_than(br#"{"a":[1,{"b":[2]}]}"#, 3));
    }
}
