-- Clustered variant of single/0011_aggregator_evicted.sql (same columns and reasoning; read that
-- file). Sharded by key, so every eviction of a key meets (and replaces) on one shard.
CREATE TABLE IF NOT EXISTS aggregator_evicted_local ON CLUSTER '${CLUSTER}'
(
    key         String,
    partition   UInt32,
    version     UInt64,
    blob        String CODEC(ZSTD(1)),
    evicted_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/aggregator_evicted_local', '{replica}', version)
ORDER BY key;

CREATE TABLE IF NOT EXISTS aggregator_evicted ON CLUSTER '${CLUSTER}' AS aggregator_evicted_local
ENGINE = Distributed('${CLUSTER}', currentDatabase(), aggregator_evicted_local, cityHash64(key));
