//! Evicted groups and rollup bucket counts in `aggregator_evicted` (README "Bounded memory"):
//! written before the checkpoint that no longer holds them, read back by key when an input for
//! one arrives (a bucket: when a change touches it).

use crate::engine::{count_bytes, EvictedBucket, EvictedGroup, EvictedRow};
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

/// Writes `groups` (one row per key) and `buckets` with `version`, in one insert.
pub async fn write(
    sink: &Sink,
    groups: &[EvictedGroup],
    buckets: &[EvictedBucket],
    version: u64,
) -> Result<(), SinkError> {
    let counts: Vec<[u8; 8]> = buckets.iter().map(|b| count_bytes(b.count)).collect();
    let buckets = buckets.iter().zip(&counts).map(|(b, c)| Written {
        key: &b.key,
        partition: b.partition,
        version,
        blob: c,
    });
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
        .chain(buckets)
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

/// Key bytes per read statement, well under ClickHouse's default `max_query_size`.
const STATEMENT_KEY_BYTES: usize = 128 * 1024;

/// `keys` in runs of at most `limit` bytes (quoted), at least one key each.
fn chunks_of_bytes(keys: &[String], limit: usize) -> impl Iterator<Item = &[String]> {
    let mut rest = keys;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let n = rest
            .iter()
            .take_while(|k| {
                bytes += k.len() + 4;
                bytes <= limit
            })
            .count()
            .max(1);
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        Some(chunk)
    })
}

/// The newest group stored for each of `keys` that has one.
pub async fn read(
    client: &Client,
    keys: &[String],
) -> Result<Vec<EvictedRow>, clickhouse::error::Error> {
    let mut out = Vec::new();
    // Bounded statements: a flush after a long pause can ask for many keys, and the keys are
    // inlined into the statement, which ClickHouse caps at `max_query_size` (256 KiB).
    for chunk in chunks_of_bytes(keys, STATEMENT_KEY_BYTES) {
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

#[cfg(test)]
mod tests {
    use super::chunks_of_bytes;

    #[test]
    fn reads_are_split_by_the_bytes_of_their_keys() {
        let keys: Vec<String> = (0..10).map(|i| format!("{i:0>96}")).collect();
        let chunks: Vec<&[String]> = chunks_of_bytes(&keys, 400).collect();
        assert_eq!(
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>(),
            [4, 4, 2]
        );
        assert_eq!(chunks.concat(), keys);
        // A key longer than the limit still goes, alone.
        let long = vec!["x".repeat(500), "y".into()];
        assert_eq!(chunks_of_bytes(&long, 400).count(), 2);
        assert_eq!(chunks_of_bytes(&[], 400).count(), 0);
    }
}
