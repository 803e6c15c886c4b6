//! Views that compare: `losses` and `transitions` by reason and kind, `channels` (conversion
//! per acquisition channel) and `compare` (an A/B test of two variants).

use super::params::{
    cohort_source, funnel, grouped, ratio, reached_columns, view, Dim, Params, MINUTES_IN_RANGE,
};
use super::reach::CohortRow;
use super::{Api, ApiError, ApiResult};
use crate::stats::{compare, Arm};
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

#[derive(Debug, clickhouse::Row, Deserialize)]
struct ReasonRow {
    key: String,
    kind: String,
    from_stage: String,
    reason: String,
    n: u64,
}

pub(super) async fn losses(
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

pub(super) async fn transitions(
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

pub(super) async fn channels(
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

pub(super) async fn ab_compare(
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
