-- Clustered variant of single/0003_stage_transitions.sql (same columns and reasoning; read that file).
-- Sharded by cityHash64(lead_id): all rows of one key live on one shard, so FINAL is exact per shard.
CREATE TABLE IF NOT EXISTS stage_transitions_local ON CLUSTER '${CLUSTER}'
(
    funnel       LowCardinality(String),
    lead_id      String,
    seq          UInt16,
    at           DateTime64(3, 'UTC'),
    kind         LowCardinality(String) COMMENT 'enter, advance, skip, backflow, lost, reactivated',
    from_stage   LowCardinality(String) COMMENT 'empty when entering the funnel',
    to_stage     LowCardinality(String) COMMENT 'lost for a loss',
    skipped      Array(LowCardinality(String)),
    reason       LowCardinality(String),
    dwell_ms     Nullable(Int64) COMMENT 'time spent in from_stage',
    first_touch  LowCardinality(String),
    last_touch   LowCardinality(String),
    variant      LowCardinality(String),
    event_id     String,
    event_type   LowCardinality(String),
    version      UInt64,
    is_deleted   UInt8
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/stage_transitions_local', '{replica}', version, is_deleted)
ORDER BY (funnel, lead_id, seq);

CREATE TABLE IF NOT EXISTS stage_transitions ON CLUSTER '${CLUSTER}' AS stage_transitions_local
ENGINE = Distributed('${CLUSTER}', currentDatabase(), stage_transitions_local, cityHash64(lead_id));
