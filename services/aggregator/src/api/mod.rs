//! The HTTP JSON API over the aggregator's ClickHouse tables (`lead_funnels`,
//! `stage_transitions`, read with `FINAL`), plus `/metrics`, `/healthz` and `/readyz`. Any
//! instance answers for all leads, since the answers come from the shared tables.
//!
//! Every view takes `from` / `to` (RFC 3339 or epoch milliseconds; default: all time) and most
//! take `breakdown` = `first_touch` | `last_touch` | `variant` (default: totals only). The README
//! section "Aggregator API" documents each endpoint with an example.

use crate::funnel::Funnels;
use crate::internal_events as events;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use clickhouse::Client;
use leadstream_runtime::health::{readyz, Readiness};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

mod compare;
mod params;
mod reach;

use compare::{ab_compare, channels, losses, transitions};
pub use params::Params;
pub(crate) use params::{cohort_source, funnel, Range, MINUTES_IN_RANGE};
use reach::{cohort, flow, occupancy};

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
