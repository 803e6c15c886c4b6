//! What every view request carries: the funnel, the breakdown dimension, the time range, and
//! the SQL pieces and query helper the views share.

use super::{Api, ApiError};
use crate::funnel::Funnel;
use axum::http::StatusCode;
use serde::Deserialize;

/// Query parameters every view understands.
#[derive(Debug, Deserialize)]
pub struct Params {
    pub(super) from: Option<String>,
    pub(super) to: Option<String>,
    pub(super) breakdown: Option<String>,
    pub(super) by: Option<String>,
    pub(super) a: Option<String>,
    pub(super) b: Option<String>,
    pub(super) from_stage: Option<String>,
    pub(super) to_stage: Option<String>,
}

/// A breakdown dimension (a fixed set, so it can be put in SQL safely).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dim {
    None,
    FirstTouch,
    LastTouch,
    Variant,
}

impl Dim {
    pub(super) fn parse(s: Option<&str>, key: &'static str) -> Result<Self, ApiError> {
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

    pub(super) fn column(self) -> &'static str {
        match self {
            Self::None => "'*'",
            Self::FirstTouch => "first_touch",
            Self::LastTouch => "last_touch",
            Self::Variant => "variant",
        }
    }

    pub(super) fn name(self) -> &'static str {
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
    pub(super) fn range(&self) -> Result<Range, ApiError> {
        Range::parse(self.from.as_deref(), self.to.as_deref())
    }
}

/// The funnel, breakdown and time range of a view request.
pub(super) fn view<'a>(
    api: &'a Api,
    name: &str,
    p: &Params,
) -> Result<(&'a Funnel, Dim, Range), ApiError> {
    Ok((
        funnel(api, name)?,
        Dim::parse(p.breakdown.as_deref(), "breakdown")?,
        p.range()?,
    ))
}

/// Select list of per-stage reach counts over `funnel_cohort_minute` (`reached[k]`: furthest
/// stage ≥ k).
pub(super) fn reached_columns(key: &str, stages: usize) -> String {
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
pub(super) const LEADS_IN_RANGE: &str = "FROM lead_funnels FINAL WHERE funnel = ? AND is_deleted = 0 \
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
pub(super) fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// Runs a grouped query once per group set: totals (`*`) and, when asked, the breakdown.
pub(super) async fn grouped<R>(
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
