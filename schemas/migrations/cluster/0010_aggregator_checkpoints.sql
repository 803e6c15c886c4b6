-- Clustered variant of single/0010_aggregator_checkpoints.sql (same columns and reasoning; read
-- that file). Sharded by partition, so a partition's chunks meet (and replace) on one shard.
CREATE TABLE IF NOT EXISTS aggregator_checkpoints_local ON CLUSTER '${CLUSTER}'
(
    partition   UInt32,
    chunk       UInt32,
    version     UInt64,
    chunks      UInt32,
    format      UInt32,
    offsets     String,
    data        String CODEC(ZSTD(1)),
    taken_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/aggregator_checkpoints_local', '{replica}', version)
ORDER BY (partition, chunk);

CREATE TABLE IF NOT EXISTS aggregator_checkpoints ON CLUSTER '${CLUSTER}' AS aggregator_checkpoints_local
ENGINE = Distributed('${CLUSTER}', currentDatabase(), aggregator_checkpoints_local, partition);
