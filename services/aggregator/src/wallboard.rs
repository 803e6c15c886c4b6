//! `/wallboard`: a self-updating page with the wallboard's key tiles for offices without
//! Grafana, and `/api/v1/wallboard`, the JSON it polls. Same numbers as the Grafana wallboard:
//! the rollups for the funnel tiles, `lead_events_by_minute` for event counts and revenue.

use crate::api::{cohort_source, funnel, Api, ApiError, Range, MINUTES_IN_RANGE};
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

/// The page: static HTML that polls `/api/v1/wallboard` (see the file for its URL parameters).
pub async fn page() -> impl IntoResponse {
    Html(include_str!("wallboard.html"))
}

/// Query parameters of `/api/v1/wallboard`.
#[derive(Debug, Deserialize)]
pub struct WallboardParams {
    funnel: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// Seconds without a new event after which the freshness tile turns red.
pub const STALE_AFTER_S: i64 = 300;

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Counts {
    signups: u64,
    trials: u64,
    purchases: u64,
    contracts: u64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Money {
    currency: String,
    total: f64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Group {
    key: String,
    leads: u64,
    reached: Vec<u64>,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Loss {
    reason: String,
    lost: u64,
}

/// The tiles of one funnel over a time range (default: everything).
pub async fn data(
    State(api): State<Api>,
    Query(p): Query<WallboardParams>,
) -> Result<Json<Value>, ApiError> {
    let name = p
        .funnel
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| api.funnels.funnels[0].name.clone());
    let f = funnel(&api, &name)?;
    let Range { from, to } = Range::parse(p.from.as_deref(), p.to.as_deref())?;
    let n = f.stages.len();
    let groups = |key: &str| {
        format!(
            "SELECT toString({key}) AS key, toUInt64(sum(n)) AS leads, \
             sumForEach(arrayMap(k -> toUInt64(k <= furthest_index) * toUInt64(n), range({n}))) AS reached \
             {} GROUP BY key ORDER BY key",
            cohort_source(true)
        )
    };
    let total = api
        .client
        .query(&groups("'*'"))
        .bind(&f.name)
        .bind(from)
        .bind(to)
        .fetch_all::<Group>()
        .await?;
    let channels = api
        .client
        .query(&groups("first_touch"))
        .bind(&f.name)
        .bind(from)
        .bind(to)
        .fetch_all::<Group>()
        .await?;
    let counts = api
        .client
        .query(&format!(
            "SELECT toUInt64(countIf(event_type = 'signup')) AS signups, \
             toUInt64(countIf(event_type = 'trial_started')) AS trials, \
             toUInt64(countIf(event_type = 'order')) AS purchases, \
             toUInt64(countIf(event_type = 'contract_signed')) AS contracts \
             FROM lead_events_by_minute FINAL WHERE {MINUTES_IN_RANGE}"
        ))
        .bind(from)
        .bind(to)
        .fetch_one::<Counts>()
        .await?;
    let revenue = api
        .client
        .query(&format!(
            "SELECT toString(currency) AS currency, toFloat64(ifNull(sum(amount), 0)) AS total \
             FROM lead_events_by_minute FINAL WHERE {MINUTES_IN_RANGE} \
             AND event_type IN ('order', 'contract_signed') AND amount IS NOT NULL \
             GROUP BY currency ORDER BY total DESC"
        ))
        .bind(from)
        .bind(to)
        .fetch_all::<Money>()
        .await?;
    let losses = api
        .client
        .query(&format!(
            "SELECT toString(reason) AS reason, toUInt64(sum(transitions)) AS lost \
             FROM funnel_transition_minute FINAL WHERE funnel = ? AND is_deleted = 0 \
             AND kind = 'lost' AND {MINUTES_IN_RANGE} GROUP BY reason ORDER BY lost DESC, reason LIMIT 8"
        ))
        .bind(&f.name)
        .bind(from)
        .bind(to)
        .fetch_all::<Loss>()
        .await?;
    let (leads, reached) = total
        .first()
        .map_or((0, vec![0; n]), |g| (g.leads, g.reached.clone()));
    let share = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
    let now = chrono::Utc::now().timestamp_millis();
    let newest = api.health.newest_event_ms.load(Ordering::Relaxed);
    Ok(Json(json!({
        "funnel": f.name,
        "title": f.title,
        "from": from,
        "to": to,
        "generated_at": now,
        "tiles": {
            "new_leads": leads,
            "signups": counts.signups,
            "trials": counts.trials,
            "purchases": counts.purchases,
            "contracts": counts.contracts,
            "conversion": share(reached.get(n - 1).copied().unwrap_or(0), leads),
            "revenue": revenue.iter().map(|m| json!({"currency": m.currency, "amount": m.total})).collect::<Vec<_>>(),
        },
        "freshness_s": (newest > 0).then(|| (now - newest).max(0) / 1000),
        "stale_after_s": STALE_AFTER_S,
        "stages": f.stages.iter().enumerate().map(|(k, s)| json!({
            "stage": s,
            "leads": reached.get(k).copied().unwrap_or(0),
            "from_previous": if k == 0 { None } else { share(reached.get(k).copied().unwrap_or(0), reached[k - 1]) },
        })).collect::<Vec<_>>(),
        "channels": channels.iter().filter(|g| g.leads > 0).map(|g| json!({
            "channel": g.key,
            "leads": g.leads,
            "conversion": share(g.reached.get(n - 1).copied().unwrap_or(0), g.leads),
        })).collect::<Vec<_>>(),
        "losses": losses.iter().map(|l| json!({"reason": l.reason, "lost": l.lost})).collect::<Vec<_>>(),
    })))
}
