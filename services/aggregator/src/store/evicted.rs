//! Evicted groups in `aggregator_evicted` (README "Bounded memory"): written before the
//! checkpoint that no longer holds them, read back by key when an input for one arrives.

use crate::engine::{EvictedGroup, EvictedRow};
use clickhouse::Client;
use leadstream_runtime::clickhouse::{Sink, SinkError};
use serde::{Deserialize, Serialize};

#[derive(Debug, clickhouse::Row, Serialize)]
struct Written<'a> {
    key: &'a str,
    partition: u32,
    version: u64,
    #[serde(with = "serde_bytes")]
    blob: &'a [u8],
}

/// Writes `groups` with `version`, one row per key, in one insert.
pub async fn write(sink: &Sink, groups: &[EvictedGroup], version: u64) -> Result<(), SinkError> {
    let rows: Vec<Written> = groups
        .iter()
        .flat_map(|g| {
            g.keys.iter().map(|k| Written {
                key: k,
                partition: g.partition,
                version,
                blob: &g.blob,
            })
        })
        .collect();
    sink.insert::<Written<'static>>("aggregator_evicted", &rows)
        .await
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Read {
    key: String,
    partition: u32,
    version: u64,
    #[serde(with = "serde_bytes")]
    blob: Vec<u8>,
}

/// The newest group stored for each of `keys` that has one.
pub async fn read(
    client: &Client,
    keys: &[String],
) -> Result<Vec<EvictedRow>, clickhouse::error::Error> {
    let mut out = Vec::new();
    // Bounded statements: a flush after a long pause can ask for many keys.
    for chunk in keys.chunks(10_000) {
        let rows = client
            .query(
                "SELECT key, partition, version, blob FROM aggregator_evicted \
                 WHERE key IN ? ORDER BY key, version DESC LIMIT 1 BY key",
            )
            .bind(chunk)
            .fetch_all::<Read>()
            .await?;
        out.extend(rows.into_iter().map(|r| EvictedRow {
            key: r.key,
            partition: r.partition,
            version: r.version,
            blob: r.blob,
        }));
    }
    Ok(out)
}
