//! Writing planned events in the wire contracts of SPEC §1, in every form real feeds use:
//! each timestamp form, money as cents, numbers or decimal strings, free text in Chinese with emoji.

use crate::story::{Detail, PlannedEvent};
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use chrono_tz::Tz;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Map, Value};

/// The ways a timestamp is written on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampForm {
    /// Epoch seconds as a JSON number (whole-second times only).
    EpochSeconds,
    /// Epoch seconds as a numeric string (whole-second times only).
    EpochSecondsString,
    /// Epoch milliseconds as a JSON number.
    EpochMillis,
    /// Epoch milliseconds as a numeric string.
    EpochMillisString,
    /// RFC 3339 in UTC with `Z`.
    Rfc3339Utc,
    /// RFC 3339 with the source zone's offset.
    Rfc3339Offset,
    /// `YYYY-MM-DD HH:MM:SS[.fff]` in the source zone, no offset.
    NaiveLocal,
}

const FORMS: [TimestampForm; 7] = [
    TimestampForm::EpochSeconds,
    TimestampForm::EpochSecondsString,
    TimestampForm::EpochMillis,
    TimestampForm::EpochMillisString,
    TimestampForm::Rfc3339Utc,
    TimestampForm::Rfc3339Offset,
    TimestampForm::NaiveLocal,
];

/// Writes `ms` in `form`; seconds forms fall back to milliseconds when `ms` has a fraction.
pub fn timestamp(ms: i64, form: TimestampForm, tz: Tz) -> Value {
    let t: DateTime<Utc> = Utc
        .timestamp_millis_opt(ms)
        .single()
        .expect("generated times are in range");
    let whole = ms % 1000 == 0;
    match form {
        TimestampForm::EpochSeconds if whole => json!(ms / 1000),
        TimestampForm::EpochSecondsString if whole => json!((ms / 1000).to_string()),
        TimestampForm::EpochMillis | TimestampForm::EpochSeconds => json!(ms),
        TimestampForm::EpochMillisString | TimestampForm::EpochSecondsString => {
            json!(ms.to_string())
        }
        TimestampForm::Rfc3339Utc => json!(t.to_rfc3339_opts(SecondsFormat::Millis, true)),
        TimestampForm::Rfc3339Offset => {
            json!(t
                .with_timezone(&tz)
                .to_rfc3339_opts(SecondsFormat::AutoSi, false))
        }
        TimestampForm::NaiveLocal => {
            let local = t.with_timezone(&tz);
            if whole {
                json!(local.format("%Y-%m-%d %H:%M:%S").to_string())
            } else {
                json!(local.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
            }
        }
    }
}

fn any_form(rng: &mut ChaCha8Rng) -> TimestampForm {
    FORMS[rng.random_range(0..FORMS.len())]
}

/// Money as a JSON number or a decimal string (with trailing zeros kept).
fn money(rng: &mut ChaCha8Rng, amount: rust_decimal::Decimal) -> Value {
    if rng.random_bool(0.5) {
        json!(amount.to_string())
    } else {
        // Two-decimal amounts are exact enough as f64 for the normalizer's ≤4-digit rule.
        serde_json::from_str(&amount.normalize().to_string()).expect("a decimal is a json number")
    }
}

/// Whole cents of a two-decimal amount.
fn cents(amount: rust_decimal::Decimal) -> i64 {
    use rust_decimal::prelude::ToPrimitive;
    (amount * rust_decimal::Decimal::ONE_HUNDRED)
        .trunc()
        .to_i64()
        .unwrap_or(i64::MAX)
}

fn currency(rng: &mut ChaCha8Rng) -> &'static str {
    ["CNY", "CNY", "CNY", "cny"][rng.random_range(0..4)]
}

/// The JSON object of one planned event, every choice of form drawn from `rng`.
pub fn object(ev: &PlannedEvent, rng: &mut ChaCha8Rng, tz: Tz) -> Map<String, Value> {
    let mut o = Map::new();
    let time_field = ev.kind.time_field();
    o.insert(time_field.into(), timestamp(ev.time_ms, any_form(rng), tz));
    let mut put = |k: &str, v: Value| {
        o.insert(k.into(), v);
    };
    match &ev.detail {
        Detail::Exposure {
            platform,
            campaign_id,
            creative_id,
            cost_micros,
        } => {
            put("impression_id", json!(ev.native_id));
            put("platform", json!(platform));
            put("campaign_id", json!(campaign_id));
            put("device_id", json!(ev.device_id));
            if let Some(c) = creative_id {
                put("creative_id", json!(c));
                put("adgroup_id", json!(format!("ag-{}", &c[3..])));
            }
            if let Some(c) = cost_micros {
                put("cost_micros", json!(c));
            }
        }
        Detail::Click {
            platform,
            landing_url,
            campaign_id,
        } => {
            put("click_id", json!(ev.native_id));
            put("platform", json!(platform));
            put("device_id", json!(ev.device_id));
            put("landing_url", json!(landing_url));
            if let Some(c) = campaign_id {
                put("campaign_id", json!(c));
            }
        }
        Detail::Signup {
            phone,
            email,
            name,
            utm,
            experiment,
            city,
        } => {
            put("signup_id", json!(ev.native_id));
            put("user_id", json!(ev.user_id));
            if let Some(d) = &ev.device_id {
                put("device_id", json!(d));
            }
            if let Some(p) = phone {
                put("phone", json!(p));
            }
            if let Some(e) = email {
                put("email", json!(e));
            }
            if let Some(n) = name {
                put("name", json!(n));
            }
            if let Some((source, medium, campaign)) = utm {
                let mut u = Map::new();
                u.insert("source".into(), json!(source));
                u.insert("medium".into(), json!(medium));
                if let Some(c) = campaign {
                    u.insert("campaign".into(), json!(c));
                }
                put("utm", Value::Object(u));
            }
            if let Some((id, variant)) = experiment {
                put("experiment", json!({ "id": id, "variant": variant }));
            }
            if let Some(c) = city {
                put("city", json!(c));
            }
        }
        Detail::Trial { plan } => {
            put("trial_id", json!(ev.native_id));
            put("event", json!(ev.event_type.as_str()));
            put("user_id", json!(ev.user_id));
            if let Some(p) = plan {
                put("plan", json!(p));
            }
        }
        Detail::Call {
            direction,
            duration_sec,
            outcome,
            reason,
            agent_id,
        } => {
            put("call_id", json!(ev.native_id));
            put("lead_id", json!(ev.user_id));
            put("direction", json!(direction));
            put("duration_sec", json!(duration_sec));
            put("outcome", json!(outcome));
            if let Some(r) = reason {
                put("disqualify_reason", json!(r));
            }
            if let Some(a) = agent_id {
                put("agent_id", json!(a));
            }
        }
        Detail::Contract { amount, reason } => {
            let status = &ev.event_type.as_str()["contract_".len()..];
            put("contract_id", json!(ev.native_id));
            put("lead_id", json!(ev.user_id));
            put("status", json!(status));
            if let Some(a) = amount {
                let m = money(rng, *a);
                put("amount", m);
                put("currency", json!(currency(rng)));
            }
            if let Some(r) = reason {
                put("lost_reason", json!(r));
            }
        }
        Detail::Order { amount } => {
            put("order_id", json!(ev.native_id));
            put("user_id", json!(ev.user_id));
            match rng.random_range(0..3) {
                0 => put("amount_cents", json!(cents(*amount))),
                1 => {
                    let m = money(rng, *amount);
                    put("amount", m)
                }
                _ => {
                    put("amount_cents", json!(cents(*amount)));
                    put("amount", json!(amount.to_string()));
                }
            }
            put("currency", json!(currency(rng)));
        }
    }
    o
}

/// The wire bytes of one planned event.
pub fn encode(ev: &PlannedEvent, rng: &mut ChaCha8Rng, tz: Tz) -> Vec<u8> {
    serde_json::to_vec(&Value::Object(object(ev, rng, tz))).expect("a json map always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use leadstream_schemas::timestamp::parse_timestamp;

    #[test]
    fn every_form_reads_back_as_the_same_instant() {
        let tz: Tz = "Asia/Shanghai".parse().unwrap();
        for ms in [1_762_045_200_000_i64, 1_762_045_200_123] {
            for form in FORMS {
                let v = timestamp(ms, form, tz);
                let back = parse_timestamp(&v, tz).unwrap();
                assert_eq!(back.timestamp_millis(), ms, "{form:?} {v}");
            }
        }
    }
}
