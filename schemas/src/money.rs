//! Money parsing: a JSON number or a decimal string, non-negative, at most 4 fractional digits.

use rust_decimal::Decimal;
use serde_json::Value;
use std::str::FromStr;

/// Largest fractional precision kept; the ClickHouse column is `Decimal(18, 4)`.
pub const MONEY_SCALE: u32 = 4;
/// Amounts must stay below 10^14 so they fit `Decimal(18, 4)`.
const MAX_INTEGER_DIGITS: u32 = 14;

/// Parses a money value; `Err` carries a lowercase reason.
pub fn parse_amount(value: &Value) -> Result<Decimal, String> {
    let d = match value {
        Value::Number(n) => Decimal::from_str(&n.to_string())
            .or_else(|_| Decimal::from_scientific(&n.to_string()))
            .map_err(|_| format!("{n} is not a representable decimal"))?,
        Value::String(s) => {
            let t = s.trim();
            if t.is_empty()
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'+')
            {
                return Err(format!(
                    "{} is not a plain decimal number",
                    crate::error::excerpt(s)
                ));
            }
            Decimal::from_str(t).map_err(|_| {
                format!("{} is not a plain decimal number", crate::error::excerpt(s))
            })?
        }
        other => {
            return Err(format!(
                "expected a number or a decimal string, got {}",
                json_type(other)
            ))
        }
    };
    check_amount(d)
}

/// Converts integer minor units (cents) to a decimal amount.
pub fn from_cents(cents: i64) -> Result<Decimal, String> {
    check_amount(Decimal::new(cents, 2))
}

fn check_amount(d: Decimal) -> Result<Decimal, String> {
    if d.is_sign_negative() && !d.is_zero() {
        return Err(format!("{d} is negative"));
    }
    let d = d.normalize();
    if d.scale() > MONEY_SCALE {
        return Err(format!("{d} has more than {MONEY_SCALE} fractional digits"));
    }
    if d.trunc() >= Decimal::from(10_i64.pow(MAX_INTEGER_DIGITS)) {
        return Err(format!("{d} is too large"));
    }
    // `normalize` keeps a negative zero's sign; amounts are never negative.
    Ok(d.abs())
}

/// Scales an amount to the integer representation of `Decimal(18, 4)`.
pub fn to_scaled_i64(d: Decimal) -> i64 {
    let mut s = d;
    s.rescale(MONEY_SCALE);
    // check_amount bounds the value to < 10^18 after scaling, so the mantissa fits.
    i64::try_from(s.mantissa()).unwrap_or(i64::MAX)
}

/// The JSON type's name, for error messages.
pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn number_string_and_cents_agree() {
        let a = parse_amount(&json!(199.9)).unwrap();
        let b = parse_amount(&json!("199.90")).unwrap();
        let c = from_cents(19990).unwrap();
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert_eq!(a.to_string(), "199.9");
        assert_eq!(to_scaled_i64(a), 1_999_000);
    }

    #[test]
    fn rejects_bad_amounts() {
        for v in [
            json!(-1),
            json!("-0.5"),
            json!("1e5"),
            json!("abc"),
            json!(""),
            json!("0.00001"),
            json!(true),
            json!(1e20),
        ] {
            assert!(parse_amount(&v).is_err(), "{v} should be rejected");
        }
        assert!(from_cents(-5).is_err());
    }

    #[test]
    fn zero_is_fine() {
        assert_eq!(parse_amount(&json!(0)).unwrap(), Decimal::ZERO);
        assert_eq!(parse_amount(&json!("-0")).unwrap().to_string(), "0");
    }
}
