//! The normalized lead event: one model for all seven sources.

use crate::source::EventType;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::Digest;

/// A validated, normalized lead event, as published to `leads.normalized` and stored in `lead_events`.
///
/// Absent optional fields are `None` (omitted in JSON, empty strings / NULL in ClickHouse).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NormalizedEvent {
    /// Deterministic id: SHA-256 of canonical topic + native id (+ trial event / contract status), 32 hex chars.
    pub event_id: String,
    /// Event type.
    pub event_type: EventType,
    /// Canonical source topic (`leads.signup`, ...).
    pub source_topic: String,
    /// Kafka partition the message was read from.
    pub source_partition: i32,
    /// Kafka offset the message was read from.
    pub source_offset: i64,
    /// The source's own id (`impression_id`, `click_id`, ...).
    pub native_id: String,
    /// User / lead id (one id space); absent for anonymous exposures and clicks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lead_id: Option<String>,
    /// Device id, which links anonymous touches to a lead through a signup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Channel by `config/channels.yaml`, for touch events (exposure, click, signup) only: trials,
    /// calls, contracts and orders carry no touch information; the aggregator attributes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Ad platform (lowercased).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Campaign id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<String>,
    /// Ad group id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adgroup_id: Option<String>,
    /// Creative id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creative_id: Option<String>,
    /// Landing page without its query string (`scheme://host/path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub landing_page: Option<String>,
    /// `utm_source`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utm_source: Option<String>,
    /// `utm_medium`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utm_medium: Option<String>,
    /// `utm_campaign`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utm_campaign: Option<String>,
    /// `utm_content`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utm_content: Option<String>,
    /// Experiment id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment_id: Option<String>,
    /// Experiment variant (`ab` on a landing URL, `experiment.variant` on a signup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Money amount (orders, contracts), normalized (no trailing zeros).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<Decimal>,
    /// ISO 4217 currency, uppercase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Ad cost in micros.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_micros: Option<i64>,
    /// Disqualify reason (calls) or lost reason (contracts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Call direction: `inbound` / `outbound`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_direction: Option<String>,
    /// Call outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_outcome: Option<String>,
    /// Call duration in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_duration_sec: Option<u32>,
    /// Call agent id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// Trial plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// Salted SHA-256 of the normalized phone number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_hash: Option<String>,
    /// Salted SHA-256 of the normalized email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_hash: Option<String>,
    /// Event time, UTC, millisecond precision.
    pub event_time: DateTime<Utc>,
    /// When the collector read the message, UTC, millisecond precision.
    pub received_at: DateTime<Utc>,
    /// Keys the contract does not list, kept as they came.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

/// Why a message on the normalized topic is not a normalized event as the collector writes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {reason}")]
pub struct ContractViolation {
    /// The offending field.
    pub field: &'static str,
    /// Why.
    pub reason: String,
}

fn violation(field: &'static str, reason: impl Into<String>) -> ContractViolation {
    ContractViolation {
        field,
        reason: reason.into(),
    }
}

/// Bits of a copy rank below the event-time part.
const RANK_TIME_SHIFT: u32 = 64;

impl NormalizedEvent {
    /// Which copy of an event wins when copies differ (one winner per `event_id`, everywhere):
    /// the higher rank. The high 64 bits fall as the event time grows, so the earliest copy
    /// wins; among copies of the same event time the low 64 bits decide, a digest of what the
    /// copy says (delivery metadata excluded, so redeliveries of one copy rank the same).
    pub fn copy_rank(&self) -> u128 {
        let t = self.event_time.timestamp_millis();
        let time_part = u64::MAX - (t - crate::timestamp::MIN_MS).max(0) as u64;
        let mut canonical = self.clone();
        canonical.source_partition = 0;
        canonical.source_offset = 0;
        canonical.received_at = self.event_time;
        let bytes = serde_json::to_vec(&canonical).unwrap_or_default();
        let digest = sha2::Sha256::digest(&bytes);
        let mut low = [0u8; 8];
        low.copy_from_slice(&digest[..8]);
        (u128::from(time_part) << RANK_TIME_SHIFT) | u128::from(u64::MAX - u64::from_be_bytes(low))
    }

    /// The event time (epoch ms) a copy rank was made from.
    pub fn rank_time_ms(rank: u128) -> i64 {
        let time_part = (rank >> RANK_TIME_SHIFT) as u64;
        crate::timestamp::MIN_MS + (u64::MAX - time_part) as i64
    }

    /// Checks what a consumer of the normalized topic relies on, so a message that did not come
    /// from the collector (or was damaged on the way) is refused instead of trusted: a 128-bit
    /// hex event id, ids the contract allows, a lead key, an event time in range, bounded text.
    pub fn check(&self) -> Result<(), ContractViolation> {
        let id = self.event_id.as_bytes();
        if id.len() != 32
            || !id
                .iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        {
            return Err(violation("event_id", "must be 32 lowercase hex characters"));
        }
        for (field, v) in [
            ("native_id", Some(&self.native_id)),
            ("lead_id", self.lead_id.as_ref()),
            ("device_id", self.device_id.as_ref()),
        ] {
            if let Some(v) = v {
                if v.trim().is_empty() || v.len() > crate::normalize::MAX_ID_BYTES {
                    return Err(violation(
                        field,
                        "must be a non-empty id of at most 128 bytes",
                    ));
                }
            }
        }
        if self.lead_id.is_none() && self.device_id.is_none() {
            return Err(violation(
                "lead_id",
                "an event needs a lead_id or a device_id",
            ));
        }
        let t = self.event_time.timestamp_millis();
        if !(crate::timestamp::MIN_MS..crate::timestamp::MAX_MS).contains(&t) {
            return Err(violation(
                "event_time",
                "must lie in 2000-01-01..2100-01-01",
            ));
        }
        for (field, v) in [
            ("channel", &self.channel),
            ("variant", &self.variant),
            ("reason", &self.reason),
            ("call_outcome", &self.call_outcome),
            ("plan", &self.plan),
            ("utm_source", &self.utm_source),
            ("utm_medium", &self.utm_medium),
            ("utm_campaign", &self.utm_campaign),
            ("platform", &self.platform),
        ] {
            if v.as_ref()
                .is_some_and(|s| s.len() > crate::normalize::MAX_TEXT_BYTES)
            {
                return Err(violation(field, "text longer than 2048 bytes"));
            }
        }
        Ok(())
    }

    /// The partitioning key for `leads.normalized`: the lead id, else `device:<device_id>`.
    pub fn lead_key(&self) -> String {
        match (&self.lead_id, &self.device_id) {
            (Some(l), _) => l.clone(),
            (None, Some(d)) => format!("device:{d}"),
            (None, None) => format!("event:{}", self.event_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(time: &str, lead: &str) -> NormalizedEvent {
        serde_json::from_value(serde_json::json!({
            "event_id": "0123456789abcdef0123456789abcdef", "event_type": "call",
            "source_topic": "leads.call", "source_partition": 1, "source_offset": 5,
            "native_id": "c-1", "lead_id": lead, "event_time": time,
            "received_at": "2026-11-02T02:00:00Z", "call_outcome": "connected",
        }))
        .expect("event")
    }

    #[test]
    fn the_earliest_copy_ranks_highest_and_redeliveries_rank_the_same() {
        let a = event("2026-11-02T01:00:00Z", "u-1");
        let later = event("2026-11-02T01:00:00.001Z", "u-1");
        assert!(a.copy_rank() > later.copy_rank());
        let mut again = a.clone();
        again.source_offset = 99;
        again.received_at = chrono::Utc::now();
        assert_eq!(
            a.copy_rank(),
            again.copy_rank(),
            "delivery metadata does not count"
        );
        let other_lead = event("2026-11-02T01:00:00Z", "u-2");
        assert_ne!(
            a.copy_rank(),
            other_lead.copy_rank(),
            "same time, other content"
        );
        assert_eq!(
            NormalizedEvent::rank_time_ms(a.copy_rank()),
            a.event_time.timestamp_millis()
        );
    }
}
