//! Rows the aggregator writes to ClickHouse. Field order and types match
//! `schemas/migrations/*/0003_stage_transitions.sql` and `0004_lead_funnels.sql`.
//!
//! Both tables are `ReplacingMergeTree(version, is_deleted)` keyed by the lead (and the
//! transition's position in the lead's history): a late event rewrites a lead's rows with a
//! newer version and tombstones positions that no longer exist, and writing the same rows again
//! (a replay after a crash) changes nothing. Readers use `FINAL`.

use serde::Serialize;
use smol_str::SmolStr;

/// One row of `stage_transitions`: a lead's `seq`-th stage change in one funnel.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Serialize)]
pub struct TransitionRow {
    /// Funnel name.
    pub funnel: SmolStr,
    /// Lead (user id, or `device:<id>` for a device no signup claimed).
    pub lead_id: SmolStr,
    /// Position in the lead's history, from 0.
    pub seq: u16,
    /// Event time of the change, epoch ms.
    pub at: i64,
    /// `enter`, `advance`, `skip`, `backflow`, `lost`, `reactivated`.
    pub kind: &'static str,
    /// Stage left, empty when entering the funnel.
    pub from_stage: SmolStr,
    /// Stage entered, `lost` for a loss.
    pub to_stage: SmolStr,
    /// Main stages a skip passed over.
    pub skipped: Vec<SmolStr>,
    /// Reason (backflow, lost).
    pub reason: SmolStr,
    /// Time spent in the stage left, ms; NULL for the first transition.
    pub dwell_ms: Option<i64>,
    /// Lead's first-touch channel.
    pub first_touch: SmolStr,
    /// Lead's last-touch channel.
    pub last_touch: SmolStr,
    /// Lead's experiment variant.
    pub variant: SmolStr,
    /// The event that caused it.
    pub event_id: String,
    /// That event's type.
    pub event_type: &'static str,
    /// Row version (newer wins).
    pub version: u64,
    /// 1 for a tombstone: this position no longer exists in the lead's history.
    pub is_deleted: u8,
}

/// One row of `lead_funnels`: a lead's state in one funnel.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Serialize)]
pub struct LeadFunnelRow {
    /// Funnel name.
    pub funnel: SmolStr,
    /// Lead.
    pub lead_id: SmolStr,
    /// Time of the first transition (the lead's cohort), epoch ms.
    pub started_at: i64,
    /// Current stage (a special stage while the lead sits in one; the stage a lost lead was lost from).
    pub current_stage: SmolStr,
    /// Index of the current main stage, -1 for none.
    pub current_index: i8,
    /// Furthest main stage.
    pub furthest_stage: SmolStr,
    /// Its index, -1 for none.
    pub furthest_index: i8,
    /// When each main stage up to the furthest was first reached, epoch ms.
    pub reached_at: Vec<i64>,
    /// Special stages ever entered.
    pub specials: Vec<SmolStr>,
    /// 1 while lost.
    pub lost: u8,
    /// Reason of the current loss.
    pub lost_reason: SmolStr,
    /// First-touch channel.
    pub first_touch: SmolStr,
    /// Last-touch channel.
    pub last_touch: SmolStr,
    /// Experiment variant.
    pub variant: SmolStr,
    /// Number of transitions.
    pub transitions: u16,
    /// Time of the latest transition, epoch ms.
    pub changed_at: i64,
    /// Row version (newer wins).
    pub version: u64,
    /// 1 for a tombstone (the lead left this funnel, e.g. a device lead merged into its user).
    pub is_deleted: u8,
}

/// One row of `late_events`: an event that arrived later than the allowed lateness.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Serialize)]
pub struct LateEventRow {
    /// Event id.
    pub event_id: String,
    /// Event type.
    pub event_type: &'static str,
    /// Lead key it belongs to.
    pub lead_key: SmolStr,
    /// Event time, epoch ms.
    pub event_time: i64,
    /// Newest event time seen when it arrived, epoch ms.
    pub watermark: i64,
    /// How far behind the watermark it was, ms.
    pub behind_ms: i64,
    /// When the aggregator read it, epoch ms.
    pub received_at: i64,
}
