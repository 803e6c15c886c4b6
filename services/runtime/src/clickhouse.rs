//! ClickHouse for every service: connection settings, the client with the settings leadstream
//! relies on, schema migrations, inserts that tell retryable failures from rejected data.

use crate::config::{invalid, ConfigError};
use clickhouse::Client;
use leadstream_schemas::migrations::Topology;
use leadstream_schemas::Secret;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// ClickHouse settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// HTTP(S) URL of the server.
    pub url: String,
    /// Database; created if missing.
    pub database: String,
    /// User.
    pub user: String,
    /// Password; better set by `LEADSTREAM_CLICKHOUSE__PASSWORD` or `password_file`.
    pub password: Option<Secret<String>>,
    /// File holding the password.
    pub password_file: Option<PathBuf>,
    /// `single` or `cluster` (Replicated*/Distributed DDL).
    pub topology: Topology,
    /// Cluster name for `topology: cluster`.
    pub cluster: String,
    /// Timeout of one insert or query, in milliseconds.
    pub request_timeout_ms: u64,
}

impl ClickHouseConfig {
    /// Checks every value; the error names the first offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let c = self;
        if !(c.url.starts_with("http://") || c.url.starts_with("https://")) {
            return Err(invalid(
                "clickhouse.url",
                format!("{:?} must start with http:// or https://", c.url),
            ));
        }
        if c.database.is_empty()
            || !c
                .database
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        {
            return Err(invalid(
                "clickhouse.database",
                "must be a non-empty name of letters, digits and _",
            ));
        }
        if c.topology == Topology::Cluster && c.cluster.trim().is_empty() {
            return Err(invalid(
                "clickhouse.cluster",
                "is required when clickhouse.topology is cluster",
            ));
        }
        if c.request_timeout_ms == 0 {
            return Err(invalid("clickhouse.request_timeout_ms", "must be positive"));
        }
        Ok(())
    }
}

/// A ClickHouse failure, classified for the retry decision.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Network trouble, timeouts, overload, missing table: waiting may fix it.
    #[error("clickhouse unavailable: {0}")]
    Transient(String),
    /// The server rejected the data itself (parse errors, constraint violations): retrying cannot help.
    #[error("clickhouse rejected the data: {0}")]
    Rejected(String),
}

/// ClickHouse exception codes that mean "this data is bad", not "the server is unwell".
/// 6 CANNOT_PARSE_TEXT, 27 CANNOT_PARSE_INPUT_ASSERTION_FAILED, 32 ATTEMPT_TO_READ_AFTER_EOF,
/// 33 CANNOT_READ_ALL_DATA, 41/38 CANNOT_PARSE_DATETIME/DATE, 53 TYPE_MISMATCH, 69 ARGUMENT_OUT_OF_BOUND,
/// 70 CANNOT_CONVERT_TYPE, 72 CANNOT_PARSE_NUMBER, 117 INCORRECT_DATA, 131 TOO_LARGE_STRING_SIZE,
/// 190 SIZES_OF_ARRAYS_DONT_MATCH, 407 DECIMAL_OVERFLOW, 469 VIOLATED_CONSTRAINT, 1001 STD_EXCEPTION on bad values.
const DATA_ERROR_CODES: &[u32] = &[
    6, 27, 32, 33, 38, 41, 53, 69, 70, 72, 117, 131, 190, 407, 469,
];

fn classify(e: clickhouse::error::Error) -> SinkError {
    use clickhouse::error::Error as E;
    match &e {
        E::BadResponse(msg) => match exception_code(msg) {
            Some(code) if DATA_ERROR_CODES.contains(&code) => SinkError::Rejected(one_line(msg)),
            _ => SinkError::Transient(one_line(msg)),
        },
        // Serialization failures on our side are about this row's data.
        E::Custom(_)
        | E::SchemaMismatch(_)
        | E::SequenceMustHaveLength
        | E::InvalidUtf8Encoding(_) => SinkError::Rejected(e.to_string()),
        _ => SinkError::Transient(e.to_string()),
    }
}

fn exception_code(msg: &str) -> Option<u32> {
    let rest = &msg[msg.find("Code: ")? + 6..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn one_line(s: &str) -> String {
    s.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(500)
        .collect()
}

/// A connected ClickHouse sink.
#[derive(Clone)]
pub struct Sink {
    client: Client,
    timeout: Duration,
    service: &'static str,
}

/// Builds a client without choosing a database (for `CREATE DATABASE`).
fn base_client(cfg: &ClickHouseConfig) -> Client {
    let mut c = Client::default()
        .with_url(&cfg.url)
        .with_user(&cfg.user)
        // ClickHouse 26 defaults async_insert=1, which acknowledges before the data is durable in
        // the table; offsets must only move after a real write, so it is turned off per request.
        .with_option("async_insert", "0")
        .with_option("wait_for_async_insert", "1")
        // ClickHouse 26 defaults to ZSTD here, which the client's LZ4 decoder cannot read.
        .with_option("network_compression_method", "lz4");
    if let Some(p) = &cfg.password {
        c = c.with_password(p.expose());
    }
    c
}

/// A client of the configured database, without touching the server (queries fail until it
/// answers and the schema exists).
pub fn client(cfg: &ClickHouseConfig) -> Client {
    base_client(cfg).with_database(&cfg.database)
}

impl Sink {
    /// Creates the database if needed, applies the migrations and returns the sink.
    pub async fn connect(cfg: &ClickHouseConfig, service: &'static str) -> Result<Self, SinkError> {
        let timeout = Duration::from_millis(cfg.request_timeout_ms);
        let base = base_client(cfg);
        let client = base.clone().with_database(&cfg.database);
        crate::schema::migrate(&base, &client, cfg, timeout).await?;
        Ok(Self {
            client,
            timeout,
            service,
        })
    }

    /// The underlying client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Inserts rows in one INSERT; acknowledged means written.
    pub async fn insert<T>(
        &self,
        table: &'static str,
        rows: &[T::Value<'_>],
    ) -> Result<(), SinkError>
    where
        T: clickhouse::RowWrite,
    {
        if rows.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let mut insert = self
            .client
            .insert::<T>(table)
            .await
            .map_err(classify)?
            .with_timeouts(Some(self.timeout), Some(self.timeout));
        for r in rows {
            insert.write(r).await.map_err(classify)?;
        }
        insert.end().await.map_err(classify)?;
        rows_inserted(self.service, table, rows.len(), started.elapsed());
        Ok(())
    }

    /// Whether the server answers.
    pub async fn ping(&self) -> bool {
        tokio::time::timeout(
            Duration::from_secs(2),
            self.client.query("SELECT 1").fetch_one::<u8>(),
        )
        .await
        .is_ok_and(|r| r.is_ok())
    }
}

pub(crate) async fn run_ddl(
    client: &Client,
    sql: &str,
    timeout: Duration,
) -> Result<(), SinkError> {
    match tokio::time::timeout(timeout, client.query(sql).execute()).await {
        Ok(r) => r.map_err(classify),
        Err(_) => Err(SinkError::Transient(format!("timed out after {timeout:?}"))),
    }
}

/// Rows were acknowledged by ClickHouse.
fn rows_inserted(service: &'static str, table: &'static str, rows: usize, elapsed: Duration) {
    tracing::debug!(
        table,
        rows,
        elapsed_ms = elapsed.as_millis() as u64,
        "insert acknowledged"
    );
    metrics::counter!(format!("leadstream_{service}_inserted_rows_total"), "table" => table)
        .increment(rows as u64);
    metrics::histogram!(format!("leadstream_{service}_insert_latency_seconds"), "table" => table)
        .record(elapsed.as_secs_f64());
    metrics::histogram!(format!("leadstream_{service}_batch_size_rows"), "table" => table)
        .record(rows as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exception_codes_are_parsed() {
        assert_eq!(
            exception_code("Code: 469. DB::Exception: Constraint `c` violated"),
            Some(469)
        );
        assert_eq!(
            exception_code("Code: 60. DB::Exception: Table x doesn't exist. (UNKNOWN_TABLE)"),
            Some(60)
        );
        assert_eq!(exception_code("bad gateway"), None);
    }

    #[test]
    fn data_errors_are_not_retried_and_outages_are() {
        let c = |m: &str| classify(clickhouse::error::Error::BadResponse(m.into()));
        assert!(matches!(
            c("Code: 469. DB::Exception: Constraint violated (VIOLATED_CONSTRAINT)"),
            SinkError::Rejected(_)
        ));
        assert!(matches!(
            c("Code: 60. DB::Exception: Unknown table (UNKNOWN_TABLE)"),
            SinkError::Transient(_)
        ));
        assert!(matches!(
            c("Code: 241. DB::Exception: Memory limit exceeded"),
            SinkError::Transient(_)
        ));
        assert!(matches!(c("502 Bad Gateway"), SinkError::Transient(_)));
    }
}
