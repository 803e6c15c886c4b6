//! Reading the messages the aggregator consumes. Whatever arrives on the normalized or the
//! stitching topic (a producer other than the collector, a damaged record, junk) ends as an
//! error for the dead-letter topic, never as a panic or as an event the engine trusts blindly.

use leadstream_schemas::{EventType, NormalizedEvent};
use serde::{Deserialize, Serialize};

/// What a recheck message on the stitching topic carries (its key is the lead key too): the
/// lead whose devices changed, or, with an event, the lead holding a losing copy of it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Recheck {
    /// The lead to recheck.
    pub recheck: String,
    /// The type of the event to settle, when the recheck is about a copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// The event id to settle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
}

/// A recheck as the engine takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecheckRequest {
    /// The lead.
    pub lead: String,
    /// The event whose copies to settle, if the recheck is about one.
    pub copy: Option<(EventType, String)>,
}

/// Longest lead key a recheck may name: `device:` plus a 128-byte id.
const MAX_LEAD_KEY_BYTES: usize = 7 + 128;

/// A message of the normalized topic as the collector writes it.
pub fn normalized(payload: Option<&[u8]>) -> Result<NormalizedEvent, String> {
    let bytes = payload.ok_or("empty payload")?;
    let e: NormalizedEvent =
        serde_json::from_slice(bytes).map_err(|err| format!("not a normalized event: {err}"))?;
    e.check()
        .map_err(|v| format!("not a normalized event: {v}"))?;
    Ok(e)
}

/// A message of the stitching topic.
pub fn recheck(payload: Option<&[u8]>) -> Result<RecheckRequest, String> {
    let bytes = payload.ok_or("empty payload")?;
    let r: Recheck =
        serde_json::from_slice(bytes).map_err(|err| format!("not a recheck message: {err}"))?;
    if r.recheck.is_empty() || r.recheck.len() > MAX_LEAD_KEY_BYTES {
        return Err(format!(
            "not a recheck message: `recheck` must be a lead key of 1 to {MAX_LEAD_KEY_BYTES} bytes"
        ));
    }
    let copy = match (r.event_type, r.event_id) {
        (None, None) => None,
        (Some(t), Some(id)) => {
            let t = EventType::parse(&t)
                .ok_or_else(|| format!("not a recheck message: `event_type` {t:?} is unknown"))?;
            let hex = id.len() == 32
                && id
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !hex {
                return Err(
                    "not a recheck message: `event_id` must be 32 lowercase hex characters".into(),
                );
            }
            Some((t, id))
        }
        _ => return Err("not a recheck message: `event_type` and `event_id` come together".into()),
    };
    Ok(RecheckRequest {
        lead: r.recheck,
        copy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"event_id":"0123456789abcdef0123456789abcdef","event_type":"signup","source_topic":"leads.signup","source_partition":0,"source_offset":1,"native_id":"s-1","lead_id":"u-1","event_time":"2026-11-02T01:00:00Z","received_at":"2026-11-02T01:00:01Z"}"#;

    #[test]
    fn a_collector_event_is_read() {
        let e = normalized(Some(GOOD.as_bytes())).expect("valid");
        assert_eq!(e.lead_key(), "u-1");
    }

    #[test]
    fn malformed_ids_are_refused_not_trusted() {
        // Non-ASCII 32-byte ids once panicked the engine's id parser (it sliced bytes).
        for id in [
            "é123456789abcdef0123456789abcde",
            "0123456789ABCDEF0123456789ABCDEF",
            "short",
            "",
        ] {
            let msg = GOOD.replace("0123456789abcdef0123456789abcdef", id);
            let err = normalized(Some(msg.as_bytes())).unwrap_err();
            assert!(err.contains("event_id"), "{id}: {err}");
        }
        let no_lead = GOOD.replace(r#""lead_id":"u-1","#, "");
        assert!(normalized(Some(no_lead.as_bytes()))
            .unwrap_err()
            .contains("lead_id"));
        let old = GOOD.replace("2026-11-02T01:00:00Z", "1970-01-01T00:00:00Z");
        assert!(normalized(Some(old.as_bytes()))
            .unwrap_err()
            .contains("event_time"));
        assert!(normalized(None).is_err());
        assert!(normalized(Some(b"junk")).is_err());
    }

    #[test]
    fn rechecks_name_a_bounded_lead_key() {
        assert_eq!(
            recheck(Some(br#"{"recheck":"u-1"}"#))
                .map(|r| r.lead)
                .as_deref(),
            Ok("u-1")
        );
        let copy = recheck(Some(
            br#"{"recheck":"u-1","event_type":"order","event_id":"0123456789abcdef0123456789abcdef"}"#,
        ))
        .expect("copy recheck");
        assert_eq!(copy.copy.map(|(t, _)| t), Some(EventType::Order));
        assert!(recheck(Some(br#"{"recheck":"u-1","event_id":"x"}"#)).is_err());
        assert!(recheck(Some(br#"{"recheck":""}"#)).is_err());
        let long = format!(r#"{{"recheck":"{}"}}"#, "x".repeat(200));
        assert!(recheck(Some(long.as_bytes())).is_err());
    }
}
