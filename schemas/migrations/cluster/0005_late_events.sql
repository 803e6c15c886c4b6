-- Clustered variant of single/0005_late_events.sql (same columns and reasoning; read that file).
-- Sharded by cityHash64(event_id): all rows of one key live on one shard, so FINAL is exact per shard.
CREATE TABLE IF NOT EXISTS late_events_local ON CLUSTER '${CLUSTER}'
(
    event_id     String,
    event_type   LowCardinality(String),
    lead_key     String,
    event_time   DateTime64(3, 'UTC'),
    watermark    DateTime64(3, 'UTC') COMMENT 'newest event time seen when it arrived',
    behind_ms    Int64,
    received_at  DateTime64(3, 'UTC')
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/late_events_local', '{replica}', received_at)
ORDER BY event_id;

CREATE TABLE IF NOT EXISTS late_events ON CLUSTER '${CLUSTER}' AS late_events_local
ENGINE = Distributed('${CLUSTER}', currentDatabase(), late_events_local, cityHash64(event_id));
