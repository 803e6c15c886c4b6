//! What the aggregator reads back from ClickHouse at start: every stored event (the collector
//! writes `lead_events` before it publishes to `leads.normalized`, so the table holds at least
//! everything the aggregator's committed offsets cover) and the rows it published before.
//! Replaying them rebuilds the state exactly; nothing else needs a checkpoint.

use crate::engine::Engine;
use crate::funnel::Funnels;
use chrono::{TimeZone, Utc};
use clickhouse::Client;
use leadstream_schemas::{EventType, NormalizedEvent};
use serde::Deserialize;
use std::sync::Arc;

/// The columns of `lead_events_unique` that the engine and funnel rules can use.
#[derive(Debug, clickhouse::Row, Deserialize)]
struct StoredEvent {
    event_id: String,
    event_type: String,
    lead_id: String,
    device_id: String,
    channel: String,
    platform: String,
    campaign_id: String,
    utm_source: String,
    utm_medium: String,
    utm_campaign: String,
    variant: String,
    currency: String,
    reason: String,
    call_direction: String,
    call_outcome: String,
    agent_id: String,
    plan: String,
    event_time: i64,
    received_at: i64,
    extra: String,
}

const EVENT_COLUMNS: &str = "event_id, event_type, lead_id, device_id, channel, platform, \
    campaign_id, utm_source, utm_medium, utm_campaign, variant, currency, reason, call_direction, \
    call_outcome, agent_id, plan, toUnixTimestamp64Milli(event_time) AS event_time, \
    toUnixTimestamp64Milli(received_at) AS received_at, extra";

fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

impl StoredEvent {
    fn into_event(self) -> Option<NormalizedEvent> {
        Some(NormalizedEvent {
            event_type: EventType::parse(&self.event_type)?,
            native_id: String::new(),
            source_topic: String::new(),
            source_partition: 0,
            source_offset: 0,
            event_id: self.event_id,
            lead_id: opt(self.lead_id),
            device_id: opt(self.device_id),
            channel: opt(self.channel),
            platform: opt(self.platform),
            campaign_id: opt(self.campaign_id),
            adgroup_id: None,
            creative_id: None,
            landing_page: None,
            utm_source: opt(self.utm_source),
            utm_medium: opt(self.utm_medium),
            utm_campaign: opt(self.utm_campaign),
            utm_content: None,
            experiment_id: None,
            variant: opt(self.variant),
            amount: None,
            currency: opt(self.currency),
            cost_micros: None,
            reason: opt(self.reason),
            call_direction: opt(self.call_direction),
            call_outcome: opt(self.call_outcome),
            call_duration_sec: None,
            agent_id: opt(self.agent_id),
            plan: opt(self.plan),
            phone_hash: None,
            email_hash: None,
            event_time: Utc.timestamp_millis_opt(self.event_time).single()?,
            received_at: Utc.timestamp_millis_opt(self.received_at).single()?,
            extra: serde_json::from_str(&self.extra).unwrap_or_default(),
        })
    }
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct PublishedLead {
    funnel: String,
    lead_id: String,
    transitions: u16,
}

/// Counts of what a rebuild read.
#[derive(Debug, Default, Clone, Copy)]
pub struct Rebuilt {
    /// Events replayed into the engine.
    pub events: u64,
    /// Lead rows found already published.
    pub published: u64,
}

/// A new engine holding the published lead rows and every stored event.
pub async fn rebuild(
    client: &Client,
    funnels: Arc<Funnels>,
    lateness_ms: i64,
) -> Result<(Engine, Rebuilt), clickhouse::error::Error> {
    let mut engine = Engine::new(funnels, lateness_ms);
    let mut done = Rebuilt::default();
    let mut cursor = client
        .query("SELECT funnel, lead_id, transitions FROM lead_funnels FINAL WHERE is_deleted = 0")
        .fetch::<PublishedLead>()?;
    while let Some(p) = cursor.next().await? {
        engine.seed_published(&p.funnel, &p.lead_id, p.transitions);
        done.published += 1;
    }
    let mut cursor = client
        .query(&format!(
            // In event-time order, so the rebuild reports nothing as late.
            "SELECT {EVENT_COLUMNS} FROM lead_events_unique ORDER BY event_time"
        ))
        .fetch::<StoredEvent>()?;
    while let Some(row) = cursor.next().await? {
        let received = row.received_at;
        if let Some(e) = row.into_event() {
            engine.ingest(&e, received);
            done.events += 1;
        }
    }
    Ok((engine, done))
}
