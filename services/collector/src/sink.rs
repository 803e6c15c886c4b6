//! ClickHouse: client setup, migrations, row types and inserts that tell retryable failures from
//! data the server rejects.

use crate::config::ClickHouseConfig;
use clickhouse::Client;
use leadstream_schemas::migrations::{bookkeeping_ddl, migrations};
use leadstream_schemas::money::to_scaled_i64;
use leadstream_schemas::{NormalizeError, NormalizedEvent};
use serde::Serialize;
use std::time::{Duration, Instant};

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

/// One row of `lead_events`; field order and types match `schemas/migrations/*/0001_lead_events.sql`.
#[derive(Debug, Clone, clickhouse::Row, Serialize)]
pub struct LeadEventRow {
    event_id: String,
    event_type: &'static str,
    source_topic: String,
    source_partition: i32,
    source_offset: i64,
    native_id: String,
    lead_id: String,
    device_id: String,
    channel: String,
    platform: String,
    campaign_id: String,
    adgroup_id: String,
    creative_id: String,
    landing_page: String,
    utm_source: String,
    utm_medium: String,
    utm_campaign: String,
    utm_content: String,
    experiment_id: String,
    variant: String,
    amount: Option<i64>,
    currency: String,
    cost_micros: Option<i64>,
    reason: String,
    call_direction: String,
    call_outcome: String,
    call_duration_sec: Option<u32>,
    agent_id: String,
    plan: String,
    phone_hash: String,
    email_hash: String,
    event_time: i64,
    received_at: i64,
    extra: String,
}

impl From<&NormalizedEvent> for LeadEventRow {
    fn from(e: &NormalizedEvent) -> Self {
        let s = |o: &Option<String>| o.clone().unwrap_or_default();
        Self {
            event_id: e.event_id.clone(),
            event_type: e.event_type.as_str(),
            source_topic: e.source_topic.clone(),
            source_partition: e.source_partition,
            source_offset: e.source_offset,
            native_id: e.native_id.clone(),
            lead_id: s(&e.lead_id),
            device_id: s(&e.device_id),
            channel: s(&e.channel),
            platform: s(&e.platform),
            campaign_id: s(&e.campaign_id),
            adgroup_id: s(&e.adgroup_id),
            creative_id: s(&e.creative_id),
            landing_page: s(&e.landing_page),
            utm_source: s(&e.utm_source),
            utm_medium: s(&e.utm_medium),
            utm_campaign: s(&e.utm_campaign),
            utm_content: s(&e.utm_content),
            experiment_id: s(&e.experiment_id),
            variant: s(&e.variant),
            amount: e.amount.map(to_scaled_i64),
            currency: s(&e.currency),
            cost_micros: e.cost_micros,
            reason: s(&e.reason),
            call_direction: s(&e.call_direction),
            call_outcome: s(&e.call_outcome),
            call_duration_sec: e.call_duration_sec,
            agent_id: s(&e.agent_id),
            plan: s(&e.plan),
            phone_hash: s(&e.phone_hash),
            email_hash: s(&e.email_hash),
            event_time: e.event_time.timestamp_millis(),
            received_at: e.received_at.timestamp_millis(),
            extra: if e.extra.is_empty() {
                String::new()
            } else {
                serde_json::Value::Object(e.extra.clone()).to_string()
            },
        }
    }
}

/// One row of `ingest_errors`.
#[derive(Debug, Clone, clickhouse::Row, Serialize)]
pub struct IngestErrorRow {
    /// Topic the bad message came from.
    pub source_topic: String,
    /// Its partition.
    pub source_partition: i32,
    /// Its offset.
    pub source_offset: i64,
    /// Error category.
    pub category: &'static str,
    /// Offending field, or empty.
    pub field: String,
    /// Reason.
    pub message: String,
    /// Payload size in bytes.
    pub payload_bytes: u32,
    /// SHA-256 of the payload, hex.
    pub payload_sha256: String,
    /// When it was read, ms since epoch.
    pub received_at: i64,
}

impl IngestErrorRow {
    /// Builds the row for a rejected message.
    pub fn new(
        topic: &str,
        partition: i32,
        offset: i64,
        payload: &[u8],
        err: &NormalizeError,
        received_at_ms: i64,
    ) -> Self {
        use sha2::Digest;
        Self {
            source_topic: topic.to_string(),
            source_partition: partition,
            source_offset: offset,
            category: err.category.as_str(),
            field: err.field.clone().unwrap_or_default(),
            message: err.message.clone(),
            payload_bytes: u32::try_from(payload.len()).unwrap_or(u32::MAX),
            payload_sha256: hex::encode(sha2::Sha256::digest(payload)),
            received_at: received_at_ms,
        }
    }
}

/// A connected ClickHouse sink.
#[derive(Clone)]
pub struct Sink {
    client: Client,
    timeout: Duration,
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

impl Sink {
    /// Creates the database if needed, applies the migrations and returns the sink.
    pub async fn connect(cfg: &ClickHouseConfig) -> Result<Self, SinkError> {
        let timeout = Duration::from_millis(cfg.request_timeout_ms);
        let on_cluster = match cfg.topology {
            leadstream_schemas::migrations::Topology::Single => String::new(),
            leadstream_schemas::migrations::Topology::Cluster => {
                format!(" ON CLUSTER '{}'", cfg.cluster)
            }
        };
        let base = base_client(cfg);
        run_ddl(
            &base,
            &format!(
                "CREATE DATABASE IF NOT EXISTS `{}`{on_cluster}",
                cfg.database
            ),
            timeout,
        )
        .await?;
        let client = base.with_database(&cfg.database);
        run_ddl(
            &client,
            &bookkeeping_ddl(cfg.topology, &cfg.cluster),
            timeout,
        )
        .await?;
        for m in migrations(cfg.topology) {
            for stmt in m.statements(&cfg.cluster) {
                run_ddl(&client, &stmt, timeout).await?;
            }
            let record = format!(
                "INSERT INTO schema_migrations (version, name) VALUES ({}, '{}')",
                m.version, m.name
            );
            run_ddl(&client, &record, timeout).await?;
        }
        Ok(Self { client, timeout })
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
        crate::internal_events::rows_inserted(table, rows.len(), started.elapsed());
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

async fn run_ddl(client: &Client, sql: &str, timeout: Duration) -> Result<(), SinkError> {
    match tokio::time::timeout(timeout, client.query(sql).execute()).await {
        Ok(r) => r.map_err(classify),
        Err(_) => Err(SinkError::Transient(format!("timed out after {timeout:?}"))),
    }
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
