//! Event-time parsing for every form SPEC §1 accepts, to UTC with millisecond precision.

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::Value;

/// Epoch values above this are milliseconds, at or below it seconds (SPEC §1).
const MILLIS_THRESHOLD: f64 = 1e11;
/// Earliest accepted event time: 2000-01-01T00:00:00Z. Older values are almost always unit bugs.
pub const MIN_MS: i64 = 946_684_800_000;
/// Latest accepted event time (exclusive): 2100-01-01T00:00:00Z.
pub const MAX_MS: i64 = 4_102_444_800_000;

/// Why a timestamp value was refused (the caller adds the field name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimestampError {
    /// The JSON value is neither a number nor a string.
    WrongType,
    /// The value could not be read in any accepted form.
    Unparseable(String),
    /// The value parsed but lies outside 2000-01-01 .. 2100-01-01 UTC.
    OutOfRange(String),
}

/// Parses a `ts` field value; naive local times are read in `tz`. Result is truncated to milliseconds.
pub fn parse_timestamp(value: &Value, tz: Tz) -> Result<DateTime<Utc>, TimestampError> {
    let ms = match value {
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => epoch_to_ms_int(i),
            (None, Some(f)) => epoch_to_ms_float(f),
            (None, None) => None,
        }
        .ok_or_else(|| TimestampError::Unparseable(n.to_string()))?,
        Value::String(s) => {
            parse_str(s.trim(), tz).ok_or_else(|| TimestampError::Unparseable(s.clone()))?
        }
        _ => return Err(TimestampError::WrongType),
    };
    if !(MIN_MS..MAX_MS).contains(&ms) {
        return Err(TimestampError::OutOfRange(value.to_string()));
    }
    DateTime::<Utc>::from_timestamp_millis(ms)
        .ok_or_else(|| TimestampError::OutOfRange(value.to_string()))
}

fn epoch_to_ms_int(i: i64) -> Option<i64> {
    if (i as f64) > MILLIS_THRESHOLD {
        Some(i)
    } else {
        i.checked_mul(1000)
    }
}

fn epoch_to_ms_float(f: f64) -> Option<i64> {
    if !f.is_finite() {
        return None;
    }
    let ms = if f > MILLIS_THRESHOLD { f } else { f * 1000.0 };
    // Bounds are checked by the caller; this only keeps the cast defined.
    (ms.abs() < 9.0e15).then(|| ms.floor() as i64)
}

fn parse_str(s: &str, tz: Tz) -> Option<i64> {
    if s.is_empty() {
        return None;
    }
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return if s.contains('.') {
            s.parse::<f64>().ok().and_then(epoch_to_ms_float)
        } else {
            s.parse::<i64>().ok().and_then(epoch_to_ms_int)
        };
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.timestamp_millis());
    }
    // Offset-less wall-clock time, read in the source's zone. `T` is tolerated as the separator.
    let naive = ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())?;
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(dt) => Some(dt.timestamp_millis()),
        // A repeated wall-clock hour (DST end): the earlier instant, as most feeds write local time once.
        LocalResult::Ambiguous(early, _) => Some(early.timestamp_millis()),
        LocalResult::None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ms(v: Value) -> Result<i64, TimestampError> {
        parse_timestamp(&v, chrono_tz::Asia::Shanghai).map(|d| d.timestamp_millis())
    }

    #[test]
    fn every_accepted_form_gives_the_same_instant() {
        let expected = 1_763_870_400_123; // 2025-11-23T04:00:00.123Z
        assert_eq!(ms(json!(1_763_870_400_123_i64)), Ok(expected));
        assert_eq!(ms(json!("1763870400123")), Ok(expected));
        assert_eq!(ms(json!(1_763_870_400.123)), Ok(expected));
        assert_eq!(ms(json!("2025-11-23T04:00:00.123Z")), Ok(expected));
        assert_eq!(ms(json!("2025-11-23T12:00:00.123+08:00")), Ok(expected));
        assert_eq!(ms(json!("2025-11-23 12:00:00.123")), Ok(expected));
        assert_eq!(ms(json!(1_763_870_400)), Ok(expected - 123));
        assert_eq!(ms(json!("1763870400")), Ok(expected - 123));
        assert_eq!(ms(json!("2025-11-23 12:00:00")), Ok(expected - 123));
    }

    #[test]
    fn threshold_between_seconds_and_millis() {
        // 10^11 itself is seconds (year 5138, out of range); just above is milliseconds (1973, out of range).
        assert!(matches!(
            ms(json!(100_000_000_000_i64)),
            Err(TimestampError::OutOfRange(_))
        ));
        assert!(matches!(
            ms(json!(100_000_000_001_i64)),
            Err(TimestampError::OutOfRange(_))
        ));
    }

    #[test]
    fn naive_time_uses_configured_zone() {
        let utc =
            parse_timestamp(&json!("2025-01-01 00:00:00"), chrono_tz::UTC).map(|d| d.timestamp());
        let sh = parse_timestamp(&json!("2025-01-01 00:00:00"), chrono_tz::Asia::Shanghai)
            .map(|d| d.timestamp());
        assert_eq!(utc.map(|u| u - 8 * 3600), sh);
    }

    #[test]
    fn rejects_garbage_and_wrong_types() {
        assert!(matches!(
            ms(json!("yesterday")),
            Err(TimestampError::Unparseable(_))
        ));
        assert!(matches!(ms(json!("")), Err(TimestampError::Unparseable(_))));
        assert!(matches!(
            ms(json!("1.2.3")),
            Err(TimestampError::Unparseable(_))
        ));
        assert!(matches!(ms(json!(-5)), Err(TimestampError::OutOfRange(_))));
        assert_eq!(ms(json!(true)), Err(TimestampError::WrongType));
        assert_eq!(ms(json!(null)), Err(TimestampError::WrongType));
        assert!(matches!(
            ms(json!(i64::MAX)),
            Err(TimestampError::OutOfRange(_))
        ));
        assert!(matches!(
            ms(json!(1e300)),
            Err(TimestampError::Unparseable(_))
        ));
    }

    #[test]
    fn truncates_to_milliseconds() {
        assert_eq!(
            ms(json!("2025-11-23T04:00:00.123999Z")),
            Ok(1_763_870_400_123)
        );
    }
}
