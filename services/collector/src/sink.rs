//! ClickHouse: client setup, migrations, row types and inserts that tell retryable failures from
//! data the server rejects.

pub use leadstream_runtime::clickhouse::{Sink, SinkError};
use leadstream_runtime::dead_letter::Payload;
use leadstream_schemas::money::to_scaled_i64;
use leadstream_schemas::{NormalizeError, NormalizedEvent};
use serde::Serialize;

/// One row of `lead_events`; field order and types match `schemas/migrations/*/0001_lead_events.sql`.
#[derive(Debug, Clone, clickhouse::Row, Serialize)]
pub struct LeadEventRow {
    event_id: String,
    event_type: &'static str,
    source_topic: String,
    source_partition: i32,
    source_offset: i64,
    native_id: String,
    lead_id: String,
    device_id: String,
    channel: String,
    platform: String,
    campaign_id: String,
    adgroup_id: String,
    creative_id: String,
    landing_page: String,
    utm_source: String,
    utm_medium: String,
    utm_campaign: String,
    utm_content: String,
    experiment_id: String,
    variant: String,
    amount: Option<i64>,
    currency: String,
    cost_micros: Option<i64>,
    reason: String,
    call_direction: String,
    call_outcome: String,
    call_duration_sec: Option<u32>,
    agent_id: String,
    plan: String,
    phone_hash: String,
    email_hash: String,
    event_time: i64,
    received_at: i64,
    extra: String,
    copy_rank: u128,
}

impl LeadEventRow {
    /// The row of `e`, whose copy rank is `copy_rank`.
    pub fn ranked(e: &NormalizedEvent, copy_rank: u128) -> Self {
        let s = |o: &Option<String>| o.clone().unwrap_or_default();
        Self {
            event_id: e.event_id.clone(),
            event_type: e.event_type.as_str(),
            source_topic: e.source_topic.clone(),
            source_partition: e.source_partition,
            source_offset: e.source_offset,
            native_id: e.native_id.clone(),
            lead_id: s(&e.lead_id),
            device_id: s(&e.device_id),
            channel: s(&e.channel),
            platform: s(&e.platform),
            campaign_id: s(&e.campaign_id),
            adgroup_id: s(&e.adgroup_id),
            creative_id: s(&e.creative_id),
            landing_page: s(&e.landing_page),
            utm_source: s(&e.utm_source),
            utm_medium: s(&e.utm_medium),
            utm_campaign: s(&e.utm_campaign),
            utm_content: s(&e.utm_content),
            experiment_id: s(&e.experiment_id),
            variant: s(&e.variant),
            amount: e.amount.map(to_scaled_i64),
            currency: s(&e.currency),
            cost_micros: e.cost_micros,
            reason: s(&e.reason),
            call_direction: s(&e.call_direction),
            call_outcome: s(&e.call_outcome),
            call_duration_sec: e.call_duration_sec,
            agent_id: s(&e.agent_id),
            plan: s(&e.plan),
            phone_hash: s(&e.phone_hash),
            email_hash: s(&e.email_hash),
            event_time: e.event_time.timestamp_millis(),
            received_at: e.received_at.timestamp_millis(),
            extra: if e.extra.is_empty() {
                String::new()
            } else {
                serde_json::Value::Object(e.extra.clone()).to_string()
            },
            copy_rank,
        }
    }
}

/// One row of `ingest_errors`.
#[derive(Debug, Clone, clickhouse::Row, Serialize)]
pub struct IngestErrorRow {
    /// Topic the bad message came from.
    pub source_topic: String,
    /// Its partition.
    pub source_partition: i32,
    /// Its offset.
    pub source_offset: i64,
    /// Error category.
    pub category: &'static str,
    /// Offending field, or empty.
    pub field: String,
    /// Reason.
    pub message: String,
    /// Payload size in bytes.
    pub payload_bytes: u32,
    /// SHA-256 of the payload, hex.
    pub payload_sha256: String,
    /// When it was read, ms since epoch.
    pub received_at: i64,
}

impl IngestErrorRow {
    /// Builds the row for a rejected message.
    pub fn new(
        topic: &str,
        partition: i32,
        offset: i64,
        payload: &Payload,
        err: &NormalizeError,
        received_at_ms: i64,
    ) -> Self {
        Self {
            source_topic: topic.to_string(),
            source_partition: partition,
            source_offset: offset,
            category: err.category.as_str(),
            field: err.field.clone().unwrap_or_default(),
            message: err.message.clone(),
            payload_bytes: u32::try_from(payload.original_bytes).unwrap_or(u32::MAX),
            payload_sha256: payload.sha256.clone(),
            received_at: received_at_ms,
        }
    }
}
