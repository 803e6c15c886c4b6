//! Views of how far leads got: `cohort` (reach per stage, conversion and timing), `flow`
//! (stage entries in a period) and `occupancy` (where leads sit now).

use super::params::{
    cohort_source, funnel, grouped, ratio, reached_columns, view, Dim, Params, LEADS_IN_RANGE,
    MINUTES_IN_RANGE,
};
use super::{Api, ApiResult};
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;

#[derive(Debug, clickhouse::Row, Deserialize)]
pub(super) struct CohortRow {
    pub(super) key: String,
    pub(super) leads: u64,
    pub(super) reached: Vec<u64>,
    pub(super) lost: u64,
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

pub(super) async fn cohort(
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

pub(super) async fn flow(
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

pub(super) async fn occupancy(
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
