-- Checkpoints of the aggregator's state (README "Checkpoints"): per owned partition, the state
-- of its leads, the devices they read and its rollup buckets, written right after a flush whose
-- rows were acknowledged and before the offsets it covers are committed (offsets are committed
-- only with checkpoints). A member restoring a partition loads its newest complete checkpoint and
-- replays only the Kafka tail after the committed offsets, instead of reading all history.
-- A partition's state can be large, so it is cut into chunks; a checkpoint is complete when all
-- of its chunks are there. Replacing by (partition, chunk) keeps storage to about one checkpoint
-- per partition; a reader picks the newest version whose chunks are all present.
CREATE TABLE IF NOT EXISTS aggregator_checkpoints
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
ENGINE = ReplacingMergeTree(version)
ORDER BY (partition, chunk);
