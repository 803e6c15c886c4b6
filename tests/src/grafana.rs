//! The provisioned Grafana dashboards as the tests see them: their files, the template variables
//! they use, and their panel SQL expanded the way the ClickHouse plugin expands it.
//!
//! Supported plugin macros (grafana-clickhouse-datasource `pkg/macros`): `$__timeFilter(col)`
//! → `col >= toDateTime(from) AND col <= toDateTime(to)`, `$__timeInterval(col)` →
//! `toStartOfInterval(toDateTime(col), INTERVAL n second)`, `$__interval_s` → n, `$__fromTime`
//! and `$__toTime` → `toDateTime(seconds)`. Template variables: `$name`, `${name}` (the value as
//! is) and `${name:sqlstring}` (quoted, `'` doubled), as Grafana interpolates them.

use crate::repo_root;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The macros the dashboards may use.
pub const MACROS: &[&str] = &[
    "timeFilter",
    "timeInterval",
    "interval_s",
    "fromTime",
    "toTime",
];

/// A dashboard file.
pub struct Dashboard {
    /// File name.
    pub file: String,
    /// Parsed JSON.
    pub json: Value,
}

/// Every file in `grafana/dashboards`, sorted by name.
pub fn dashboards() -> Vec<Dashboard> {
    let dir = repo_root().join("grafana/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| Dashboard {
            file: p.file_name().expect("name").to_string_lossy().into(),
            json: serde_json::from_slice(&std::fs::read(&p).expect("read"))
                .unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        })
        .collect()
}

/// The uid of the provisioned datasource (`uid:` in `grafana/provisioning/datasources`).
pub fn provisioned_uid() -> String {
    let p = repo_root().join("grafana/provisioning/datasources/clickhouse.yaml");
    std::fs::read_to_string(&p)
        .expect("datasource provisioning")
        .lines()
        .find_map(|l| l.trim().strip_prefix("uid:"))
        .map(|u| u.trim().to_string())
        .expect("a uid in the datasource provisioning")
}

/// Grafana's time range and interval for one expansion.
#[derive(Debug, Clone, Copy)]
pub struct TimeRange {
    /// From, epoch ms.
    pub from_ms: i64,
    /// To, epoch ms.
    pub to_ms: i64,
    /// `$__interval` in seconds.
    pub interval_s: u64,
}

/// One `$...` reference in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// `$__name(args)` or `$__name`.
    Macro(String, Option<String>),
    /// `$name`, `${name}` or `${name:format}`.
    Variable(String, Option<String>),
}

fn ident_len(s: &str) -> usize {
    s.bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
        .count()
}

/// A piece of scanned text: literal, or a reference with the text it replaces.
type Piece<'a> = Result<&'a str, (Reference, &'a str)>;

/// Splits `text` into literal pieces and references.
fn scan(text: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push(Ok(&rest[..i]));
        let after = &rest[i + 1..];
        if let Some(m) = after.strip_prefix("__") {
            let n = ident_len(m);
            let name = m[..n].to_string();
            let tail = &m[n..];
            if let Some(args) = tail.strip_prefix('(') {
                let close = args
                    .find(')')
                    .ok_or_else(|| format!("unclosed $__{name}( in {text}"))?;
                let whole = &rest[i..i + 3 + n + 1 + close + 1];
                out.push(Err((
                    Reference::Macro(name, Some(args[..close].trim().to_string())),
                    whole,
                )));
                rest = &args[close + 1..];
            } else {
                out.push(Err((Reference::Macro(name, None), &rest[i..i + 3 + n])));
                rest = tail;
            }
        } else if let Some(b) = after.strip_prefix('{') {
            let close = b
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {text}"))?;
            let inner = &b[..close];
            let (name, format) = match inner.split_once(':') {
                Some((n, f)) => (n.to_string(), Some(f.to_string())),
                None => (inner.to_string(), None),
            };
            out.push(Err((
                Reference::Variable(name, format),
                &rest[i..i + 2 + close + 1],
            )));
            rest = &b[close + 1..];
        } else {
            let n = ident_len(after);
            if n == 0 {
                out.push(Ok("$"));
            } else {
                out.push(Err((
                    Reference::Variable(after[..n].to_string(), None),
                    &rest[i..i + 1 + n],
                )));
            }
            rest = &after[n..];
        }
    }
    out.push(Ok(rest));
    Ok(out)
}

/// Every reference in `text`.
pub fn references(text: &str) -> Result<Vec<Reference>, String> {
    Ok(scan(text)?
        .into_iter()
        .filter_map(|p| p.err().map(|(r, _)| r))
        .collect())
}

/// `text` with its macros and variables replaced as Grafana and the plugin would.
pub fn expand(
    text: &str,
    range: TimeRange,
    vars: &BTreeMap<String, String>,
) -> Result<String, String> {
    let secs = |ms: i64| ms.div_euclid(1000);
    let mut out = String::new();
    for piece in scan(text)? {
        match piece {
            Ok(s) => out.push_str(s),
            Err((Reference::Macro(name, args), whole)) => {
                let arg = || {
                    args.clone()
                        .ok_or_else(|| format!("{whole} needs a column"))
                };
                out.push_str(&match name.as_str() {
                    "timeFilter" => {
                        let c = arg()?;
                        format!(
                            "{c} >= toDateTime({}) AND {c} <= toDateTime({})",
                            secs(range.from_ms),
                            secs(range.to_ms)
                        )
                    }
                    "timeInterval" => format!(
                        "toStartOfInterval(toDateTime({}), INTERVAL {} second)",
                        arg()?,
                        range.interval_s.max(1)
                    ),
                    "interval_s" => range.interval_s.max(1).to_string(),
                    "fromTime" => format!("toDateTime({})", secs(range.from_ms)),
                    "toTime" => format!("toDateTime({})", secs(range.to_ms)),
                    _ => return Err(format!("unsupported macro {whole}")),
                });
            }
            Err((Reference::Variable(name, format), whole)) => {
                let v = vars
                    .get(&name)
                    .ok_or_else(|| format!("undefined variable {whole}"))?;
                match format.as_deref() {
                    None => out.push_str(v),
                    Some("sqlstring") => {
                        out.push('\'');
                        out.push_str(&v.replace('\'', "''"));
                        out.push('\'');
                    }
                    Some(f) => return Err(format!("unsupported variable format `{f}` in {whole}")),
                }
            }
        }
    }
    Ok(out)
}

/// Every panel of a dashboard (rows' nested panels included).
pub fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        out.push(p);
        for q in p["panels"].as_array().into_iter().flatten() {
            out.push(q);
        }
    }
    out
}

/// The template variables of a dashboard by name.
pub fn variables(d: &Value) -> BTreeMap<String, &Value> {
    d["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| (v["name"].as_str().unwrap_or_default().to_string(), v))
        .collect()
}

/// The SQL of a query variable.
pub fn variable_sql(v: &Value) -> Option<&str> {
    match &v["query"] {
        Value::String(s) if v["type"] == "query" => Some(s),
        Value::Object(o) if v["type"] == "query" => o.get("rawSql").and_then(Value::as_str),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<String, String> {
        [("funnel", "b2c"), ("lang", "it's")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn expands_like_the_plugin() {
        let r = TimeRange {
            from_ms: 1_700_000_000_999,
            to_ms: 1_700_003_600_000,
            interval_s: 30,
        };
        let sql = "SELECT $__timeInterval(minute) AS time FROM t WHERE $__timeFilter(minute) \
                   AND funnel = ${funnel:sqlstring} AND l = ${lang:sqlstring} AND f = '$funnel' \
                   AND x = $__interval_s";
        assert_eq!(
            expand(sql, r, &vars()).unwrap(),
            "SELECT toStartOfInterval(toDateTime(minute), INTERVAL 30 second) AS time FROM t \
             WHERE minute >= toDateTime(1700000000) AND minute <= toDateTime(1700003600) \
             AND funnel = 'b2c' AND l = 'it''s' AND f = 'b2c' AND x = 30"
        );
        assert!(expand("$nope", r, &vars())
            .unwrap_err()
            .contains("undefined"));
        assert!(expand("$__timeFilter_ms(t)", r, &vars())
            .unwrap_err()
            .contains("unsupported"));
        assert!(expand("${funnel:csv}", r, &vars()).is_err());
        assert_eq!(expand("costs $ 5", r, &vars()).unwrap(), "costs $ 5");
    }
}
