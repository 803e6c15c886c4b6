-- Clustered variant of single/0002_ingest_errors.sql (read that file for the reasoning).
CREATE TABLE IF NOT EXISTS ingest_errors_local ON CLUSTER '${CLUSTER}'
(
    source_topic     LowCardinality(String),
    source_partition Int32,
    source_offset    Int64,
    category         LowCardinality(String),
    field            String,
    message          String,
    payload_bytes    UInt32,
    payload_sha256   String,
    received_at      DateTime64(3, 'UTC')
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/ingest_errors_local', '{replica}', received_at)
ORDER BY (source_topic, source_partition, source_offset);

CREATE TABLE IF NOT EXISTS ingest_errors ON CLUSTER '${CLUSTER}' AS ingest_errors_local
ENGINE = Distributed('${CLUSTER}', currentDatabase(), ingest_errors_local, cityHash64(source_topic, source_partition, source_offset));
