//! Applying the schema migrations at start: each once (recorded in `schema_migrations`), and the
//! one-time upgrade of a database created before events had copy ranks.
//!
//! The upgrade (single-server topology): `lead_events` used to keep the latest delivery of an
//! event (`ReplacingMergeTree(received_at)`); it now keeps the earliest copy
//! (`ReplacingMergeTree(copy_rank)`), which needs a new table. A start that finds the old shape
//! renames it `lead_events_before_rank`, drops what derives from it (views, the per-minute
//! copy), forgets the migrations that made them, creates the new tables, copies the rows over
//! (ranked by event time alone: the old rows carry no digest) and drops the old table. Every
//! step is idempotent and a start interrupted half-way resumes from the old table, which
//! exists until the copy is complete; two services starting together at most copy twice, and
//! copies collapse. A cluster is upgraded by hand (README, "Upgrading").

use crate::clickhouse::{run_ddl, ClickHouseConfig, SinkError};
use clickhouse::Client;
use leadstream_schemas::migrations::{bookkeeping_ddl, migrations, Topology};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::time::Duration;

/// Where an interrupted upgrade keeps the old rows.
const OLD_TABLE: &str = "lead_events_before_rank";

/// Migrations whose objects the upgrade drops and recreates (0001 the table, 0006 its index,
/// 0008 the per-minute copy and the views on the table).
const REDONE: [u32; 3] = [1, 6, 8];

/// The copy rank of a row stored before ranks existed: its event time alone.
const OLD_RANK: &str = "bitShiftLeft(toUInt128(18446744073709551615 - \
    toUInt64(greatest(toUnixTimestamp64Milli(event_time) - 946684800000, 0))), 64)";

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Applied {
    version: u32,
}

async fn count(client: &Client, sql: &str) -> Result<u64, SinkError> {
    client
        .query(sql)
        .fetch_one::<u64>()
        .await
        .map_err(|e| SinkError::Transient(format!("reading the schema: {e}")))
}

async fn table_exists(client: &Client, table: &str) -> Result<bool, SinkError> {
    let sql = format!(
        "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = '{table}'"
    );
    Ok(count(client, &sql).await? > 0)
}

async fn has_column(client: &Client, table: &str, column: &str) -> Result<bool, SinkError> {
    let sql = format!(
        "SELECT count() FROM system.columns WHERE database = currentDatabase() \
         AND table = '{table}' AND name = '{column}'"
    );
    Ok(count(client, &sql).await? > 0)
}

/// Creates the database and applies the migrations not applied yet.
pub async fn migrate(
    base: &Client,
    client: &Client,
    cfg: &ClickHouseConfig,
    timeout: Duration,
) -> Result<(), SinkError> {
    let on_cluster = match cfg.topology {
        Topology::Single => String::new(),
        Topology::Cluster => format!(" ON CLUSTER '{}'", cfg.cluster),
    };
    run_ddl(
        base,
        &format!(
            "CREATE DATABASE IF NOT EXISTS `{}`{on_cluster}",
            cfg.database
        ),
        timeout,
    )
    .await?;
    run_ddl(
        client,
        &bookkeeping_ddl(cfg.topology, &cfg.cluster),
        timeout,
    )
    .await?;
    let mut applied: BTreeSet<u32> = client
        .query("SELECT version FROM schema_migrations")
        .fetch_all::<Applied>()
        .await
        .map_err(|e| SinkError::Transient(format!("reading schema_migrations: {e}")))?
        .into_iter()
        .map(|a| a.version)
        .collect();
    match cfg.topology {
        Topology::Single => begin_rank_upgrade(client, &mut applied, timeout).await?,
        Topology::Cluster => refuse_unranked_cluster(client).await?,
    }
    let mut copied = false;
    for m in migrations(cfg.topology) {
        if applied.contains(&m.version) {
            continue;
        }
        if m.version >= 8 && !copied {
            // The backfills of 0008 and 0009 read lead_events: the old rows first.
            copy_old_rows(client, timeout).await?;
            copied = true;
        }
        for stmt in m.statements(&cfg.cluster) {
            run_ddl(client, &stmt, timeout).await?;
        }
        let record = format!(
            "INSERT INTO schema_migrations (version, name) VALUES ({}, '{}')",
            m.version, m.name
        );
        run_ddl(client, &record, timeout).await?;
    }
    if !copied {
        copy_old_rows(client, timeout).await?;
    }
    run_ddl(
        client,
        &format!("DROP TABLE IF EXISTS {OLD_TABLE}"),
        timeout,
    )
    .await
}

/// Moves an old-shape `lead_events` aside and forgets what derived from it.
async fn begin_rank_upgrade(
    client: &Client,
    applied: &mut BTreeSet<u32>,
    timeout: Duration,
) -> Result<(), SinkError> {
    if !table_exists(client, "lead_events").await?
        || has_column(client, "lead_events", "copy_rank").await?
    {
        return Ok(());
    }
    tracing::warn!(
        "lead_events predates copy ranks; upgrading it (the earliest copy of an event wins from now on)"
    );
    for sql in [
        "DROP VIEW IF EXISTS lead_events_unique".to_string(),
        "DROP VIEW IF EXISTS lead_events_by_minute_mv".to_string(),
        "DROP VIEW IF EXISTS ingest_minute_mv".to_string(),
        "DROP TABLE IF EXISTS lead_events_by_minute".to_string(),
        format!("RENAME TABLE lead_events TO {OLD_TABLE}"),
        format!(
            "ALTER TABLE schema_migrations DELETE WHERE version IN ({}) SETTINGS mutations_sync = 1",
            REDONE.map(|v| v.to_string()).join(", ")
        ),
    ] {
        run_ddl(client, &sql, timeout).await?;
    }
    for v in REDONE {
        applied.remove(&v);
    }
    Ok(())
}

/// Copies the rows of an interrupted or just begun upgrade into the new `lead_events`.
async fn copy_old_rows(client: &Client, timeout: Duration) -> Result<(), SinkError> {
    if !table_exists(client, OLD_TABLE).await? {
        return Ok(());
    }
    let columns = "event_id, event_type, source_topic, source_partition, source_offset, \
        native_id, lead_id, device_id, channel, platform, campaign_id, adgroup_id, creative_id, \
        landing_page, utm_source, utm_medium, utm_campaign, utm_content, experiment_id, variant, \
        amount, currency, cost_micros, reason, call_direction, call_outcome, call_duration_sec, \
        agent_id, plan, phone_hash, email_hash, event_time, received_at, extra";
    let sql = format!(
        "INSERT INTO lead_events ({columns}, copy_rank) SELECT {columns}, {OLD_RANK} FROM {OLD_TABLE}"
    );
    // A copy of a large table takes longer than one request usually may.
    run_ddl(client, &sql, timeout.max(Duration::from_secs(3600))).await?;
    tracing::info!("lead_events rows copied into the ranked table");
    Ok(())
}

async fn refuse_unranked_cluster(client: &Client) -> Result<(), SinkError> {
    if table_exists(client, "lead_events_local").await?
        && !has_column(client, "lead_events_local", "copy_rank").await?
    {
        return Err(SinkError::Rejected(
            "lead_events_local predates copy ranks; a cluster is upgraded by hand (README, \
             \"Upgrading\")"
                .into(),
        ));
    }
    Ok(())
}
