//! The HTTP JSON API over the aggregator's ClickHouse tables (`lead_funnels`,
//! `stage_transitions`, read with `FINAL`), plus `/metrics`, `/healthz` and `/readyz`. Any
//! instance answers for all leads, since the answers come from the shared tables.
//!
//! Every view takes `from` / `to` (RFC 3339 or epoch milliseconds; default: all time) and most
//! take `breakdown` = `first_touch` | `last_touch` | `variant` (default: totals only). The README
//! section "Aggregator API" documents each endpoint with an example.

use crate::funnel::{Funnel, Funnels};
use crate::internal_events as events;
use crate::stats::{compare, Arm};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use clickhouse::Client;
use leadstream_runtime::health::{readyz, Readiness};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Facts the service loop keeps for `/readyz` and `/api/v1/status`.
#[derive(Debug)]
pub struct Health {
    /// What `/readyz` answers: ClickHouse migrated, state rebuilt, partitions owned (or
    /// knowingly none), consuming.
    pub readiness: Arc<Readiness>,
    /// Newest event time visible in the answers, epoch ms (0 before any).
    pub newest_event_ms: AtomicI64,
    /// When the last flush was acknowledged by ClickHouse, epoch ms.
    pub last_flush_ms: AtomicI64,
    /// Leads held in memory.
    pub leads_held: AtomicI64,
    /// Partitions of the normalized topic this member owns (empty while it owns none).
    pub partitions: std::sync::Mutex<Vec<u32>>,
}

impl Default for Health {
    /// Not ready until the service says so.
    fn default() -> Self {
        Self {
            readiness: Readiness::new("aggregator"),
            newest_event_ms: AtomicI64::new(0),
            last_flush_ms: AtomicI64::new(0),
            leads_held: AtomicI64::new(0),
            partitions: std::sync::Mutex::new(Vec::new()),
        }
    }
}

impl Health {
    /// Records the partitions this member owns now.
    pub fn set_partitions(&self, owned: Vec<u32>) {
        if let Ok(mut p) = self.partitions.lock() {
            *p = owned;
        }
    }

    fn owned_partitions(&self) -> Vec<u32> {
        self.partitions
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default()
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct Api {
    /// ClickHouse client (database selected).
    pub client: Client,
    /// The funnels.
    pub funnels: Arc<Funnels>,
    /// Prometheus handle for `/metrics`.
    pub metrics: PrometheusHandle,
    /// Service health.
    pub health: Arc<Health>,
    /// Minimum arm size of the A/B comparison.
    pub min_sample: u64,
    /// How long one request may take.
    pub request_timeout: Duration,
    /// Requests served at once (the rest get a 503).
    pub permits: Arc<Semaphore>,
}

/// An API error: status plus a JSON body naming the parameter.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    parameter: Option<&'static str>,
    message: String,
}

impl ApiError {
    fn bad(parameter: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            parameter: Some(parameter),
            message: message.into(),
        }
    }

    pub(crate) fn unavailable(message: &str) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            parameter: None,
            message: message.into(),
        }
    }
}

impl From<clickhouse::error::Error> for ApiError {
    // The details go to the log only: a ClickHouse exception names tables, users and settings
    // that an API client has no business seeing.
    fn from(e: clickhouse::error::Error) -> Self {
        events::api_query_failed(&e);
        let timed_out = matches!(&e, clickhouse::error::Error::BadResponse(m)
            if m.contains("TIMEOUT_EXCEEDED") || m.contains("Code: 159."));
        Self::unavailable(if timed_out {
            "the answer took longer than api.max_execution_time; narrow the time range"
        } else {
            "the answer could not be read from ClickHouse right now; try again"
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": self.message, "parameter": self.parameter})),
        )
            .into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

/// The routes: operational endpoints always answer; the API and the wallboard go through
/// [`crate::guard::guard`].
pub fn router(api: Api) -> Router {
    let views = Router::new()
        .route("/api/v1/status", get(status))
        .route("/wallboard", get(crate::wallboard::page))
        .route("/api/v1/wallboard", get(crate::wallboard::data))
        .route("/api/v1/funnels", get(list_funnels))
        .route("/api/v1/funnels/{funnel}/cohort", get(cohort))
        .route("/api/v1/funnels/{funnel}/flow", get(flow))
        .route("/api/v1/funnels/{funnel}/occupancy", get(occupancy))
        .route("/api/v1/funnels/{funnel}/losses", get(losses))
        .route("/api/v1/funnels/{funnel}/transitions", get(transitions))
        .route("/api/v1/funnels/{funnel}/channels", get(channels))
        .route("/api/v1/funnels/{funnel}/compare", get(ab_compare))
        .route_layer(axum::middleware::from_fn_with_state(
            api.clone(),
            crate::guard::guard,
        ));
    Router::new()
        .route(
            "/metrics",
            get(|State(a): State<Api>| async move { a.metrics.render() }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|State(a): State<Api>| async move {
                let (code, body) = readyz(&a.health.readiness);
                (
                    StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                    body,
                )
            }),
        )
        .merge(views)
        .with_state(api)
}

/// Query parameters every view understands.
#[derive(Debug, Deserialize)]
pub struct Params {
    from: Option<String>,
    to: Option<String>,
    breakdown: Option<String>,
    by: Option<String>,
    a: Option<String>,
    b: Option<String>,
    from_stage: Option<String>,
    to_stage: Option<String>,
}

/// A breakdown dimension (a fixed set, so it can be put in SQL safely).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dim {
    None,
    FirstTouch,
    LastTouch,
    Variant,
}

impl Dim {
    fn parse(s: Option<&str>, key: &'static str) -> Result<Self, ApiError> {
        Ok(match s.unwrap_or("none") {
            "none" | "" => Self::None,
            "first_touch" => Self::FirstTouch,
            "last_touch" => Self::LastTouch,
            "variant" => Self::Variant,
            other => {
                return Err(ApiError::bad(
                    key,
                    format!("`{other}`: use first_touch, last_touch, variant or none"),
                ))
            }
        })
    }

    fn column(self) -> &'static str {
        match self {
            Self::None => "'*'",
            Self::FirstTouch => "first_touch",
            Self::LastTouch => "last_touch",
            Self::Variant => "variant",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::FirstTouch => "first_touch",
            Self::LastTouch => "last_touch",
            Self::Variant => "variant",
        }
    }
}

/// Parses `from` / `to`: RFC 3339 or epoch milliseconds.
pub(crate) fn time_param(
    v: Option<&str>,
    key: &'static str,
    default: i64,
) -> Result<i64, ApiError> {
    let Some(s) = v.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(default);
    };
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            ApiError::bad(
                key,
                format!(
                    "`{s}` is neither RFC 3339 (2026-11-02T00:00:00+08:00) nor epoch milliseconds"
                ),
            )
        })
}

/// A requested time range, epoch ms.
pub(crate) struct Range {
    pub(crate) from: i64,
    pub(crate) to: i64,
}

impl Range {
    /// Parses `from` / `to` (default: all time); `to` must come after `from`.
    pub(crate) fn parse(from: Option<&str>, to: Option<&str>) -> Result<Self, ApiError> {
        let from = time_param(from, "from", 0)?;
        let to = time_param(to, "to", 253_402_300_799_000)?;
        if from >= to {
            return Err(ApiError::bad("to", "must be after `from`"));
        }
        Ok(Self { from, to })
    }
}

impl Params {
    fn range(&self) -> Result<Range, ApiError> {
        Range::parse(self.from.as_deref(), self.to.as_deref())
    }
}

/// The funnel, breakdown and time range of a view request.
fn view<'a>(api: &'a Api, name: &str, p: &Params) -> Result<(&'a Funnel, Dim, Range), ApiError> {
    Ok((
        funnel(api, name)?,
        Dim::parse(p.breakdown.as_deref(), "breakdown")?,
        p.range()?,
    ))
}

/// Select list of per-stage reach counts over `funnel_cohort_minute` (`reached[k]`: furthest
/// stage ≥ k).
fn reached_columns(key: &str, stages: usize) -> String {
    format!(
        "toString({key}) AS key, toUInt64(sum(n)) AS leads, \
         sumForEach(arrayMap(k -> toUInt64(k <= furthest_index) * toUInt64(n), range({stages}))) AS reached, \
         toUInt64(sumIf(n, is_lost = 1)) AS lost"
    )
}

pub(crate) fn funnel<'a>(api: &'a Api, name: &str) -> Result<&'a Funnel, ApiError> {
    api.funnels.get(name).ok_or_else(|| ApiError {
        status: StatusCode::NOT_FOUND,
        parameter: Some("funnel"),
        message: format!(
            "no funnel `{name}`; configured: {}",
            api.funnels
                .funnels
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// Per-lead rows of leads that started in the range (exact times; only the timing quantiles,
/// which need every lead's durations, read these).
const LEADS_IN_RANGE: &str = "FROM lead_funnels FINAL WHERE funnel = ? AND is_deleted = 0 \
    AND started_at >= fromUnixTimestamp64Milli(toInt64(?)) AND started_at < fromUnixTimestamp64Milli(toInt64(?))";

/// Condition on a rollup's `minute` for a range in epoch ms: bounds round down to the minute.
pub(crate) const MINUTES_IN_RANGE: &str =
    "toInt64(toUInt32(minute)) >= intDiv(toInt64(?), 60000) * 60 AND toInt64(toUInt32(minute)) < intDiv(toInt64(?), 60000) * 60";

/// Cohort rollup buckets (of leads that started in the range, when `ranged`), with the counts
/// renamed so the result columns can take the usual names.
pub(crate) fn cohort_source(ranged: bool) -> String {
    format!(
        "FROM (SELECT first_touch, last_touch, variant, furthest_index, current_stage, \
         lost AS is_lost, leads AS n FROM funnel_cohort_minute FINAL \
         WHERE funnel = ? AND is_deleted = 0{})",
        if ranged {
            format!(" AND {MINUTES_IN_RANGE}")
        } else {
            String::new()
        }
    )
}

async fn status(State(api): State<Api>) -> Json<Value> {
    let h = &api.health;
    let newest = h.newest_event_ms.load(Ordering::Relaxed);
    let now = chrono::Utc::now().timestamp_millis();
    Json(json!({
        "ready": h.readiness.is_ready(),
        "newest_event_ms": newest,
        "freshness_seconds": if newest > 0 { Some((now - newest) as f64 / 1000.0) } else { None },
        "last_flush_ms": h.last_flush_ms.load(Ordering::Relaxed),
        "leads_held": h.leads_held.load(Ordering::Relaxed),
        "partitions": h.owned_partitions(),
    }))
}

async fn list_funnels(State(api): State<Api>) -> Json<Value> {
    Json(json!({"funnels": api.funnels.funnels.iter().map(|f| json!({
        "name": f.name, "title": f.title, "stages": f.stages, "special_stages": f.special_stages,
    })).collect::<Vec<_>>()}))
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct CohortRow {
    key: String,
    leads: u64,
    reached: Vec<u64>,
    lost: u64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct TimingRow {
    key: String,
    pair: u64,
    leads: u64,
    median: i64,
    p90: i64,
}

#[derive(Debug, Serialize)]
struct Timing {
    from: String,
    to: String,
    leads: u64,
    median_ms: i64,
    p90_ms: i64,
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// Runs a grouped query once per group set: totals (`*`) and, when asked, the breakdown.
async fn grouped<R>(
    api: &Api,
    dim: Dim,
    sql: impl Fn(&str) -> String,
    bind: impl Fn(clickhouse::query::Query) -> clickhouse::query::Query,
) -> Result<(Vec<R>, Vec<R>), ApiError>
where
    R: clickhouse::RowOwned + clickhouse::RowRead,
{
    let totals = bind(api.client.query(&sql("'*'"))).fetch_all::<R>().await?;
    let groups = if dim == Dim::None {
        Vec::new()
    } else {
        bind(api.client.query(&sql(dim.column())))
            .fetch_all::<R>()
            .await?
    };
    Ok((totals, groups))
}

async fn cohort(
    State(api): State<Api>,
    Path(name): Path<String>,
    Query(p): Query<Params>,
) -> ApiResult {
    let (f, dim, r) = view(&api, &name, &p)?;
    let n = f.stages.len();
    let bind = |q: clickhouse::query::Query| q.bind(&f.name).bind(r.from).bind(r.to);
    let (tot, grp) = grouped::<CohortRow>(
        &api,
        dim,
        |k| {
            format!(
                "SELECT {} {} GROUP BY key ORDER BY key",
                reached_columns(k, n),
                cohort_source(true)
            )
        },
        bind,
    )
    .await?;
    let (ttot, tgrp) = grouped::<TimingRow>(
        &api,
        dim,
        |k| {
            format!(
                "SELECT key, p.1 AS pair, count() AS leads, toInt64(quantileExact(0.5)(p.2)) AS median, \
                 toInt64(quantileExact(0.9)(p.2)) AS p90 FROM (SELECT toString({k}) AS key, \
                 arrayJoin(arrayMap(i -> (toUInt64(i), toUnixTimestamp64Milli(reached_at[i + 1]) - toUnixTimestamp64Milli(reached_at[i])), \
                 range(1, length(reached_at)))) AS p {LEADS_IN_RANGE}) GROUP BY key, pair ORDER BY key, pair"
            )
        },
        bind,
    )
    .await?;
    let (ctot, cgrp) = grouped::<TimingRow>(
        &api,
        dim,
        |k| {
            format!(
                "SELECT toString({k}) AS key, toUInt64(0) AS pair, count() AS leads, \
                 toInt64(quantileExact(0.5)(toUnixTimestamp64Milli(reached_at[{n}]) - toUnixTimestamp64Milli(started_at))) AS median, \
                 toInt64(quantileExact(0.9)(toUnixTimestamp64Milli(reached_at[{n}]) - toUnixTimestamp64Milli(started_at))) AS p90 \
                 {LEADS_IN_RANGE} AND furthest_index = {} GROUP BY key ORDER BY key",
                n - 1
            )
        },
        bind,
    )
    .await?;
    let render = |rows: Vec<CohortRow>,
                  timings: &[TimingRow],
                  cycles: &[TimingRow]|
     -> Vec<Value> {
        rows.into_iter()
            .map(|c| {
                let mut reached = c.reached.clone();
                reached.resize(n, 0);
                let stage_conversion: Vec<Option<f64>> = (1..n)
                    .map(|k| ratio(reached[k], reached[k - 1]))
                    .collect();
                let overall: Vec<Option<f64>> =
                    reached.iter().map(|r| ratio(*r, reached[0])).collect();
                let between: Vec<Timing> = timings
                    .iter()
                    .filter(|t| t.key == c.key && (t.pair as usize) < n)
                    .map(|t| Timing {
                        from: f.stages[t.pair as usize - 1].clone(),
                        to: f.stages[t.pair as usize].clone(),
                        leads: t.leads,
                        median_ms: t.median,
                        p90_ms: t.p90,
                    })
                    .collect();
                let cycle = cycles.iter().find(|t| t.key == c.key).map(|t| {
                    json!({"to": f.stages[n - 1], "leads": t.leads, "median_ms": t.median, "p90_ms": t.p90})
                });
                json!({
                    "key": c.key, "leads": c.leads, "reached": reached, "lost": c.lost,
                    "stage_conversion": stage_conversion, "overall_conversion": overall,
                    "time_between_stages": between, "cycle": cycle,
                })
            })
            .collect()
    };
    let total = render(tot, &ttot, &ctot)
        .into_iter()
        .next()
        .unwrap_or_else(|| json!({"key": "*", "leads": 0, "reached": vec![0; n], "lost": 0}));
    Ok(Json(json!({
        "funnel": f.name, "stages": f.stages, "from": r.from, "to": r.to,
        "breakdown": dim.name(), "total": total, "groups": render(grp, &tgrp, &cgrp),
    })))
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct FlowRow {
    key: String,
    entered: Vec<u64>,
}

async fn flow(
    State(api): State<Api>,
    Path(name): Path<String>,
    Query(p): Query<Params>,
) -> ApiResult {
    let (f, dim, r) = view(&api, &name, &p)?;
    let n = f.stages.len();
    let (tot, grp) = grouped::<FlowRow>(
        &api,
        dim,
        |k| {
            format!(
                "SELECT toString({k}) AS key, \
                 sumForEach(arrayMap(i -> toUInt64(i = stage_index) * toUInt64(leads), range({n}))) AS entered \
                 FROM funnel_reach_minute FINAL WHERE funnel = ? AND is_deleted = 0 AND {MINUTES_IN_RANGE} \
                 GROUP BY key ORDER BY key"
            )
        },
        |q| q.bind(&f.name).bind(r.from).bind(r.to),
    )
    .await?;
    let render = |rows: Vec<FlowRow>| -> Vec<Value> {
        rows.into_iter()
            .map(|row| {
                let mut e = row.entered;
                e.resize(n, 0);
                json!({"key": row.key, "entered": e})
            })
            .collect()
    };
    Ok(Json(json!({
        "funnel": f.name, "stages": f.stages, "from": r.from, "to": r.to, "breakdown": dim.name(),
        "total": render(tot).into_iter().next().unwrap_or_else(|| json!({"key": "*", "entered": vec![0; n]})),
        "groups": render(grp),
    })))
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct StageCountRow {
    key: String,
    stage: String,
    lost: u8,
    leads: u64,
}

async fn occupancy(
    State(api): State<Api>,
    Path(name): Path<String>,
    Query(p): Query<Params>,
) -> ApiResult {
    let f = funnel(&api, &name)?;
    let dim = Dim::parse(p.breakdown.as_deref(), "breakdown")?;
    let (tot, grp) = grouped::<StageCountRow>(
        &api,
        dim,
        |k| {
            format!(
                "SELECT toString({k}) AS key, toString(current_stage) AS stage, is_lost AS lost, \
                 toUInt64(sum(n)) AS leads {} GROUP BY key, stage, lost ORDER BY key, stage",
                cohort_source(false)
            )
        },
        |q| q.bind(&f.name),
    )
    .await?;
    let all_stages: Vec<&String> = f.stages.iter().chain(&f.special_stages).collect();
    let render = |rows: Vec<StageCountRow>| -> Vec<Value> {
        let mut by: BTreeMap<String, (BTreeMap<String, u64>, u64)> = BTreeMap::new();
        for r in rows {
            let e = by
                .entry(r.key)
                .or_insert_with(|| (all_stages.iter().map(|s| (s.to_string(), 0)).collect(), 0));
            if r.lost == 1 {
                e.1 += r.leads;
            } else {
                *e.0.entry(r.stage).or_default() += r.leads;
            }
        }
        by.into_iter()
            .map(|(key, (stages, lost))| {
                let occupancy: Vec<u64> = all_stages.iter().map(|s| stages[*s]).collect();
                json!({"key": key, "occupancy": occupancy, "lost": lost})
            })
            .collect()
    };
    Ok(Json(json!({
        "funnel": f.name, "stages": all_stages, "breakdown": dim.name(),
        "total": render(tot).into_iter().next(), "groups": render(grp),
    })))
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct ReasonRow {
    key: String,
    kind: String,
    from_stage: String,
    reason: String,
    n: u64,
}

async fn losses(
    State(api): State<Api>,
    Path(name): Path<String>,
    Query(p): Query<Params>,
) -> ApiResult {
    let (f, dim, r) = view(&api, &name, &p)?;
    let n = f.stages.len();
    let (tot, grp) = grouped::<ReasonRow>(
        &api,
        dim,
        |k| {
            format!(
                "SELECT toString({k}) AS key, toString(kind) AS kind, toString(from_stage) AS from_stage, \
                 toString(reason) AS reason, toUInt64(sum(transitions)) AS n FROM funnel_transition_minute FINAL \
                 WHERE funnel = ? AND is_deleted = 0 AND kind IN ('lost', 'backflow') AND {MINUTES_IN_RANGE} \
                 GROUP BY key, kind, from_stage, reason ORDER BY key, kind, from_stage, reason"
            )
        },
        |q| q.bind(&f.name).bind(r.from).bind(r.to),
    )
    .await?;
    // Backflow rate per stage: backflows out of the stage / leads that reached it (all leads).
    let (rtot, rgrp) = grouped::<CohortRow>(
        &api,
        dim,
        |k| {
            format!(
                "SELECT {} {} GROUP BY key ORDER BY key",
                reached_columns(k, n),
                cohort_source(false)
            )
        },
        |q| q.bind(&f.name),
    )
    .await?;
    let render = |rows: Vec<ReasonRow>, reach: &[CohortRow]| -> Vec<Value> {
        type Tree = BTreeMap<String, BTreeMap<String, u64>>;
        let mut by: BTreeMap<String, (Tree, Tree)> = BTreeMap::new();
        for r in rows {
            let e = by.entry(r.key).or_default();
            let from = if r.from_stage.is_empty() {
                "none".to_string()
            } else {
                r.from_stage
            };
            let slot = if r.kind == "lost" { &mut e.0 } else { &mut e.1 };
            *slot.entry(from).or_default().entry(r.reason).or_default() += r.n;
        }
        by.into_iter()
            .map(|(key, (lost, back))| {
                let reached = reach
                    .iter()
                    .find(|c| c.key == key)
                    .map(|c| c.reached.clone())
                    .unwrap_or_default();
                let rate: BTreeMap<&String, Option<f64>> = f
                    .stages
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let b: u64 = back.get(s).map(|m| m.values().sum()).unwrap_or(0);
                        (s, ratio(b, reached.get(i).copied().unwrap_or(0)))
                    })
                    .collect();
                json!({"key": key, "losses": lost, "backflows": back, "backflow_rate": rate})
            })
            .collect()
    };
    Ok(Json(json!({
        "funnel": f.name, "from": r.from, "to": r.to, "breakdown": dim.name(),
        "total": render(tot, &rtot).into_iter().next().unwrap_or_else(|| json!({"key": "*", "losses": {}, "backflows": {}})),
        "groups": render(grp, &rgrp),
    })))
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct KindRow {
    key: String,
    kind: String,
    n: u64,
}

async fn transitions(
    State(api): State<Api>,
    Path(name): Path<String>,
    Query(p): Query<Params>,
) -> ApiResult {
    let (f, dim, r) = view(&api, &name, &p)?;
    let (tot, grp) = grouped::<KindRow>(
        &api,
        dim,
        |k| {
            format!(
                "SELECT toString({k}) AS key, toString(kind) AS kind, toUInt64(sum(transitions)) AS n \
                 FROM funnel_transition_minute FINAL WHERE funnel = ? AND is_deleted = 0 AND {MINUTES_IN_RANGE} \
                 GROUP BY key, kind ORDER BY key, kind"
            )
        },
        |q| q.bind(&f.name).bind(r.from).bind(r.to),
    )
    .await?;
    let render = |rows: Vec<KindRow>| -> Vec<Value> {
        let mut by: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for r in rows {
            by.entry(r.key).or_default().insert(r.kind, r.n);
        }
        by.into_iter()
            .map(|(key, kinds)| json!({"key": key, "transitions": kinds}))
            .collect()
    };
    Ok(Json(json!({
        "funnel": f.name, "from": r.from, "to": r.to, "breakdown": dim.name(),
        "total": render(tot).into_iter().next().unwrap_or_else(|| json!({"key": "*", "transitions": {}})),
        "groups": render(grp),
    })))
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct MixRow {
    key: String,
    leads: u64,
}

async fn channels(
    State(api): State<Api>,
    Path(name): Path<String>,
    Query(p): Query<Params>,
) -> ApiResult {
    let f = funnel(&api, &name)?;
    let dim = match Dim::parse(p.by.as_deref().or(Some("first_touch")), "by")? {
        Dim::None => {
            return Err(ApiError::bad(
                "by",
                "use first_touch, last_touch or variant",
            ))
        }
        d => d,
    };
    let r = p.range()?;
    let rows = api
        .client
        .query(&format!(
            "SELECT toString({}) AS key, toUInt64(sum(n)) AS leads {} GROUP BY key ORDER BY leads DESC, key",
            dim.column(),
            cohort_source(true)
        ))
        .bind(&f.name)
        .bind(r.from)
        .bind(r.to)
        .fetch_all::<MixRow>()
        .await?;
    let total: u64 = rows.iter().map(|r| r.leads).sum();
    let mix: Vec<Value> = rows
        .iter()
        .map(|m| json!({"key": m.key, "leads": m.leads, "share": ratio(m.leads, total)}))
        .collect();
    Ok(Json(json!({
        "funnel": f.name, "from": r.from, "to": r.to, "by": dim.name(), "leads": total, "mix": mix,
    })))
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct ArmRow {
    key: String,
    entered: u64,
    converted: u64,
}

async fn ab_compare(
    State(api): State<Api>,
    Path(name): Path<String>,
    Query(p): Query<Params>,
) -> ApiResult {
    let f = funnel(&api, &name)?;
    let dim = match Dim::parse(p.by.as_deref(), "by")? {
        Dim::None => {
            return Err(ApiError::bad(
                "by",
                "required: first_touch, last_touch or variant",
            ))
        }
        d => d,
    };
    let a =
        p.a.clone()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::bad("a", "required: the baseline channel or variant"))?;
    let b =
        p.b.clone().filter(|s| !s.is_empty()).ok_or_else(|| {
            ApiError::bad("b", "required: the channel or variant compared with `a`")
        })?;
    let stage =
        |v: &Option<String>, key: &'static str, default: usize| -> Result<usize, ApiError> {
            match v.as_deref().filter(|s| !s.is_empty()) {
                None => Ok(default),
                Some(s) => f.stages.iter().position(|x| x == s).ok_or_else(|| {
                    ApiError::bad(
                        key,
                        format!(
                            "`{s}` is not a main stage of {}: {}",
                            f.name,
                            f.stages.join(", ")
                        ),
                    )
                }),
            }
        };
    let i = stage(&p.from_stage, "from_stage", 0)?;
    let j = stage(&p.to_stage, "to_stage", f.stages.len() - 1)?;
    if i >= j {
        return Err(ApiError::bad("to_stage", "must come after from_stage"));
    }
    let r = p.range()?;
    let rows = api
        .client
        .query(&format!(
            "SELECT toString({c}) AS key, toUInt64(sumIf(n, furthest_index >= {i})) AS entered, \
             toUInt64(sumIf(n, furthest_index >= {j})) AS converted {cohort} WHERE {c} IN (?, ?) GROUP BY key",
            c = dim.column(),
            cohort = cohort_source(true)
        ))
        .bind(&f.name)
        .bind(r.from)
        .bind(r.to)
        .bind(&a)
        .bind(&b)
        .fetch_all::<ArmRow>()
        .await?;
    let arm = |v: &str| {
        let row = rows.iter().find(|r| r.key == v);
        Arm::new(
            v,
            row.map_or(0, |r| r.entered),
            row.map_or(0, |r| r.converted),
        )
    };
    let c = compare(arm(&a), arm(&b), api.min_sample);
    Ok(Json(json!({
        "funnel": f.name, "by": dim.name(), "from_stage": f.stages[i], "to_stage": f.stages[j],
        "from": r.from, "to": r.to, "comparison": c,
    })))
}
