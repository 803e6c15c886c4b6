//! What the aggregator reads back from ClickHouse at start: every stored event (the collector
//! writes `lead_events` before it publishes to `leads.normalized`, so the table holds at least
//! everything the aggregator's committed offsets cover) and the rows it published before.
//! Replaying them rebuilds the state exactly. Checkpoints (`checkpoints`) make that the rare
//! path: a restore reads them instead, when every owned partition has one.

use crate::copies::{Check, CopyRecord};
use crate::engine::{ClaimRecord, Engine, Lookup, Output, Ownership};
use crate::funnel::Funnels;
use crate::rollup::{CohortRollupRow, ReachRollupRow, TransitionRollupRow};
use chrono::{TimeZone, Utc};
use clickhouse::Client;
use leadstream_schemas::{EventType, NormalizedEvent};
use rustc_hash::FxHashMap as HashMap;
use serde::Deserialize;
use smol_str::SmolStr;
use std::sync::Arc;

pub mod checkpoints;
pub mod evicted;

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

/// What a rebuild read.
#[derive(Debug, Default)]
pub struct Rebuilt {
    /// Events replayed into the engine.
    pub events: u64,
    /// Lead rows found already published.
    pub published: u64,
    /// Tombstones for every live rollup bucket of the owned partitions: written before the
    /// rebuilt engine's first flush (which rewrites the buckets that still exist with a newer
    /// version), they remove buckets that emptied while nobody owned them.
    pub stale_rollups: Output,
}

/// Rows of the owned partitions of a rollup table that `filter` keeps (after `FROM table`).
async fn owned_rows<R>(
    client: &Client,
    table: &str,
    own: &Ownership,
    filter: &str,
) -> Result<Vec<R>, clickhouse::error::Error>
where
    R: clickhouse::RowOwned + clickhouse::RowRead,
{
    let owned: Vec<u32> = own.owned().collect();
    client
        .query(&format!(
            "SELECT ?fields FROM {table} {filter} AND partition IN ?"
        ))
        .bind(owned)
        .fetch_all::<R>()
        .await
}

/// The live buckets of the owned partitions.
async fn live<R>(
    client: &Client,
    table: &str,
    own: &Ownership,
) -> Result<Vec<R>, clickhouse::error::Error>
where
    R: clickhouse::RowOwned + clickhouse::RowRead,
{
    owned_rows(client, table, own, "FINAL WHERE is_deleted = 0").await
}

/// Rows of the owned partitions with a version above their partition's in `since`, tombstones
/// included (every version of a bucket: no `FINAL`).
async fn written_since<R>(
    client: &Client,
    table: &str,
    own: &Ownership,
    since: &HashMap<u32, u64>,
) -> Result<Vec<R>, clickhouse::error::Error>
where
    R: clickhouse::RowOwned + clickhouse::RowRead,
{
    if since.is_empty() {
        return Ok(Vec::new());
    }
    let newer: Vec<String> = since
        .iter()
        .map(|(p, v)| format!("(partition = {p} AND version > {v})"))
        .collect();
    let filter = format!("WHERE ({})", newer.join(" OR "));
    owned_rows(client, table, own, &filter).await
}

/// An empty engine for `own` with the configured state settings.
pub fn empty_engine(
    funnels: Arc<Funnels>,
    state: &crate::config::StateConfig,
    lookback: std::time::Duration,
    own: Ownership,
) -> Engine {
    let lateness_ms = i64::try_from(state.allowed_lateness.as_millis()).unwrap_or(i64::MAX);
    let mut engine = Engine::with_ownership(funnels, lateness_ms, own);
    engine.set_touch_cap(state.max_touches_per_device);
    engine.set_lookback(i64::try_from(lookback.as_millis()).unwrap_or(i64::MAX));
    let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    engine.set_idle_after(Some(ms(state.idle_after)));
    engine.set_rollup_idle_after(ms(state.rollup_idle_after));
    engine.set_fold_min(state.fold_min_events);
    engine
}

/// Tombstones, with `version`, of the live rollup buckets of the owned partitions.
async fn stale_rollups(
    client: &Client,
    own: &Ownership,
    version: u64,
) -> Result<Output, clickhouse::error::Error> {
    let mut out = Output {
        cohort_rollup: live(client, "funnel_cohort_minute", own).await?,
        reach_rollup: live(client, "funnel_reach_minute", own).await?,
        transition_rollup: live(client, "funnel_transition_minute", own).await?,
        ..Output::default()
    };
    for r in &mut out.cohort_rollup {
        (r.leads, r.is_deleted, r.version) = (0, 1, version);
    }
    for r in &mut out.reach_rollup {
        (r.leads, r.is_deleted, r.version) = (0, 1, version);
    }
    for r in &mut out.transition_rollup {
        (r.transitions, r.is_deleted, r.version) = (0, 1, version);
    }
    Ok(out)
}

/// Drops from `stale` the tombstones of buckets that `fresh` rewrites (they are replaced, not
/// removed), leaving those of buckets that vanished.
pub fn keep_vanished(stale: &mut Output, fresh: &Output) {
    retain_vanished(
        &mut stale.cohort_rollup,
        &fresh.cohort_rollup,
        CohortRollupRow::bucket,
    );
    retain_vanished(
        &mut stale.reach_rollup,
        &fresh.reach_rollup,
        ReachRollupRow::bucket,
    );
    retain_vanished(
        &mut stale.transition_rollup,
        &fresh.transition_rollup,
        TransitionRollupRow::bucket,
    );
}

/// Keeps the rows of `stale` whose bucket `key` no row of `fresh` has.
fn retain_vanished<R, K: std::hash::Hash + Eq>(
    stale: &mut Vec<R>,
    fresh: &[R],
    key: impl Fn(&R) -> K,
) {
    let rewritten: std::collections::HashSet<K> = fresh.iter().map(&key).collect();
    stale.retain(|r| !rewritten.contains(&key(r)));
}

/// A new engine holding the published rows and stored events of the leads `own` names, and what
/// stitching needs of other instances' devices; the stale rollup tombstones carry
/// `stale_version`, which must be older than the engine's first flush.
pub async fn rebuild(
    client: &Client,
    funnels: Arc<Funnels>,
    state: &crate::config::StateConfig,
    lookback: std::time::Duration,
    own: Ownership,
    stale_version: u64,
) -> Result<(Engine, Rebuilt), clickhouse::error::Error> {
    let mut engine = empty_engine(funnels, state, lookback, own.clone());
    let mut done = Rebuilt {
        stale_rollups: stale_rollups(client, &own, stale_version).await?,
        ..Rebuilt::default()
    };
    // Transitions are written before lead rows, so a crash between the two leaves live
    // transitions of a lead without a live lead row; both tables count, so those get their
    // tombstones too (found by the kill -9 end-to-end test: orphaned device-lead entries).
    let mut cursor = client
        .query(
            "SELECT funnel, lead_id, toUInt16(max(n)) AS transitions FROM ( \
               SELECT funnel, lead_id, transitions AS n FROM lead_funnels FINAL \
               WHERE is_deleted = 0 \
               UNION ALL \
               SELECT funnel, lead_id, toUInt16(max(seq) + 1) AS n FROM stage_transitions FINAL \
               WHERE is_deleted = 0 GROUP BY funnel, lead_id \
             ) GROUP BY funnel, lead_id",
        )
        .fetch::<PublishedLead>()?;
    while let Some(p) = cursor.next().await? {
        if own.owns(&p.lead_id) {
            engine.seed_published(&p.funnel, &p.lead_id, p.transitions);
            done.published += 1;
        }
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
            if own.owns(&e.lead_key()) {
                engine.ingest(&e, received);
                done.events += 1;
            }
        }
    }
    // After the read, not before: a copy stored while it ran is hidden too (a loser stored
    // before the winner this read loaded, whose member checked it before the winner existed).
    hide_losing_minutes(client).await?;
    // Only winners were read, so no copy needs settling; every claim and foreign touch of the
    // devices known is read below in one pass, so the per-event lookups are redundant too.
    engine.clear_lookups();
    if !own.owns_all() {
        let wanted: HashMap<SmolStr, bool> = engine
            .known_devices()
            .map(|(d, foreign)| (SmolStr::new(d), foreign))
            .collect();
        let mut found: HashMap<SmolStr, Found> = HashMap::default();
        let mut cursor = client
            .query(&format!(
                "SELECT {EVENT_COLUMNS} FROM lead_events_unique WHERE {STITCHING}"
            ))
            .fetch::<StoredEvent>()?;
        while let Some(row) = cursor.next().await? {
            if let Some(&foreign) = wanted.get(row.device_id.as_str()) {
                let device = SmolStr::new(&row.device_id);
                found.entry(device).or_default().add(row, foreign);
            }
        }
        for (device, foreign) in wanted {
            let f = found.remove(&device).unwrap_or_default();
            engine.learn(&Lookup::refresh(device, foreign), &f.claims, &f.touches);
        }
    }
    Ok((engine, done))
}

/// The rows that stitching reads: signups naming a device (claims) and anonymous touches.
const STITCHING: &str = "device_id != '' AND ((event_type = 'signup' AND lead_id != '') \
    OR (lead_id = '' AND event_type IN ('exposure', 'click')))";

/// Claims and touches of one device, as read.
#[derive(Debug, Default)]
pub struct Found {
    /// Signups naming the device.
    pub claims: Vec<ClaimRecord>,
    /// Its anonymous touches (only read for other instances' devices).
    pub touches: Vec<NormalizedEvent>,
}

impl Found {
    fn add(&mut self, row: StoredEvent, want_touches: bool) {
        if row.event_type == "signup" {
            self.claims.push(ClaimRecord {
                lead: SmolStr::new(&row.lead_id),
                time_ms: row.event_time,
                event_id: row.event_id,
            });
        } else if want_touches {
            if let Some(e) = row.into_event() {
                self.touches.push(e);
            }
        }
    }
}

/// Event ids per copies query.
const IDS_PER_QUERY: usize = 1000;

#[derive(Debug, clickhouse::Row, Deserialize)]
struct StoredCopy {
    event_type: String,
    event_id: String,
    lead_key: String,
    time_ms: i64,
    copy_rank: u128,
}

/// Every stored copy of each checked event id (`lead_event_copies`: the best copy under each
/// lead key), in the order of `checks`.
pub async fn copies_of(
    client: &Client,
    checks: &[Check],
) -> Result<Vec<Vec<CopyRecord>>, clickhouse::error::Error> {
    let mut out = Vec::with_capacity(checks.len());
    for chunk in checks.chunks(IDS_PER_QUERY) {
        // Event types are a fixed set of names and ids passed NormalizedEvent::check (32 hex
        // characters): safe to write into the query, which lets the key's tuple prune.
        let keys: Vec<String> = chunk
            .iter()
            .map(|c| format!("('{}','{}')", c.event_type.as_str(), c.event_id))
            .collect();
        let rows = client
            .query(&format!(
                "SELECT event_type, event_id, lead_key, toUnixTimestamp64Milli(event_time) AS time_ms, \
                 copy_rank FROM lead_event_copies FINAL WHERE (event_type, event_id) IN ({})",
                keys.join(",")
            ))
            .fetch_all::<StoredCopy>()
            .await?;
        let mut by_id: HashMap<(String, String), Vec<CopyRecord>> = HashMap::default();
        for r in rows {
            by_id
                .entry((r.event_type, r.event_id))
                .or_default()
                .push(CopyRecord {
                    lead_key: SmolStr::new(&r.lead_key),
                    time_ms: r.time_ms,
                    rank: r.copy_rank,
                });
        }
        for c in chunk {
            let key = (c.event_type.as_str().to_string(), c.event_id.clone());
            out.push(by_id.remove(&key).unwrap_or_default());
        }
    }
    Ok(out)
}

/// Tombstones, in `lead_events_by_minute`, every copy that is not its event's winner and sits
/// in another minute than the winner (a copy whose displacement the aggregator did not live to
/// write: killed before its flush). Runs inside ClickHouse.
pub async fn hide_losing_minutes(client: &Client) -> Result<(), clickhouse::error::Error> {
    client
        .query(
            "INSERT INTO lead_events_by_minute (minute, event_type, event_id, copy_rank, is_deleted) \
             SELECT m.minute, m.event_type, m.event_id, toUInt128('340282366920938463463374607431768211455'), 1 \
             FROM (SELECT minute, event_type, event_id FROM lead_events_by_minute FINAL \
                   WHERE (event_type, event_id) IN ( \
                       SELECT event_type, event_id FROM lead_events_by_minute FINAL \
                       GROUP BY event_type, event_id HAVING count() > 1)) AS m \
             INNER JOIN (SELECT event_type, event_id, toStartOfMinute(event_time) AS winner_minute \
                         FROM lead_events FINAL WHERE (event_type, event_id) IN ( \
                             SELECT event_type, event_id FROM lead_events_by_minute FINAL \
                             GROUP BY event_type, event_id HAVING count() > 1)) AS w \
             USING (event_type, event_id) WHERE m.minute != w.winner_minute",
        )
        .execute()
        .await
}

/// Devices per lookup query: keeps the query text far below `max_query_size`.
const DEVICES_PER_QUERY: usize = 500;

/// Reads what `lookups` ask for, in the order given.
pub async fn lookup(
    client: &Client,
    lookups: &[Lookup],
) -> Result<Vec<Found>, clickhouse::error::Error> {
    let mut out = Vec::with_capacity(lookups.len());
    for chunk in lookups.chunks(DEVICES_PER_QUERY) {
        let index: HashMap<&str, usize> = chunk
            .iter()
            .enumerate()
            .map(|(i, l)| (&*l.device, i))
            .collect();
        let mut found: Vec<Found> = chunk.iter().map(|_| Found::default()).collect();
        let devices: Vec<&str> = chunk.iter().map(|l| &*l.device).collect();
        let mut cursor = client
            .query(&format!(
                "SELECT {EVENT_COLUMNS} FROM lead_events_unique WHERE device_id IN ? AND {STITCHING}"
            ))
            .bind(devices)
            .fetch::<StoredEvent>()?;
        while let Some(row) = cursor.next().await? {
            if let Some(&i) = index.get(row.device_id.as_str()) {
                found[i].add(row, chunk[i].touches);
            }
        }
        out.extend(found);
    }
    Ok(out)
}

/// One row of `funnel_stages`.
#[derive(Debug, Clone, clickhouse::Row, serde::Serialize, Deserialize)]
struct StageRow {
    funnel: String,
    stage_index: u8,
    stage: String,
    updated_at: i64,
    is_deleted: u8,
}

/// Writes every funnel's main stages, in order, and tombstones stages that left the
/// configuration (dashboards read the table; the aggregator never does).
pub async fn publish_stages(
    client: &Client,
    funnels: &Funnels,
) -> Result<(), clickhouse::error::Error> {
    #[derive(Debug, clickhouse::Row, Deserialize)]
    struct Stored {
        funnel: String,
        stage_index: u8,
        stage: String,
    }
    let stored = client
        .query("SELECT funnel, stage_index, stage FROM funnel_stages FINAL WHERE is_deleted = 0")
        .fetch_all::<Stored>()
        .await?;
    let now = Utc::now().timestamp_millis();
    let mut rows: Vec<StageRow> = funnels
        .funnels
        .iter()
        .flat_map(|f| {
            f.stages.iter().enumerate().map(|(i, s)| StageRow {
                funnel: f.name.clone(),
                stage_index: i as u8,
                stage: s.clone(),
                updated_at: now,
                is_deleted: 0,
            })
        })
        .collect();
    for s in stored {
        let kept = funnels
            .get(&s.funnel)
            .is_some_and(|f| usize::from(s.stage_index) < f.stages.len());
        if !kept {
            rows.push(StageRow {
                funnel: s.funnel,
                stage_index: s.stage_index,
                stage: s.stage,
                updated_at: now,
                is_deleted: 1,
            });
        }
    }
    let mut insert = client.insert::<StageRow>("funnel_stages").await?;
    for r in &rows {
        insert.write(r).await?;
    }
    insert.end().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cohort(minute: u32, leads: i64) -> CohortRollupRow {
        CohortRollupRow {
            funnel: "b2c".into(),
            minute,
            partition: 0,
            first_touch: "wechat".into(),
            last_touch: "wechat".into(),
            variant: "none".into(),
            furthest_index: 2,
            current_index: 2,
            current_stage: "signup".into(),
            lost: 0,
            leads,
            version: 7,
            is_deleted: u8::from(leads == 0),
        }
    }

    fn reach(stage_index: u8, leads: i64) -> ReachRollupRow {
        ReachRollupRow {
            funnel: "b2c".into(),
            minute: 60,
            partition: 1,
            first_touch: "none".into(),
            last_touch: "none".into(),
            variant: "A".into(),
            stage_index,
            stage: "x".into(),
            leads,
            version: 7,
            is_deleted: u8::from(leads == 0),
        }
    }

    #[test]
    fn only_vanished_buckets_keep_their_tombstones() {
        let mut stale = Output {
            cohort_rollup: vec![cohort(60, 0), cohort(120, 0)],
            reach_rollup: vec![reach(0, 0), reach(1, 0)],
            ..Output::default()
        };
        let fresh = Output {
            cohort_rollup: vec![cohort(120, 5)],
            reach_rollup: vec![reach(0, 3), reach(2, 1)],
            ..Output::default()
        };
        keep_vanished(&mut stale, &fresh);
        assert_eq!(stale.cohort_rollup, vec![cohort(60, 0)]);
        assert_eq!(stale.reach_rollup, vec![reach(1, 0)]);
    }
}
