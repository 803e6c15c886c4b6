-- Clustered variant of single/0007_funnel_rollups.sql (same columns and reasoning; read that file).
-- Sharded by partition: every bucket of a partition lives on one shard, so FINAL is exact per shard.
CREATE TABLE IF NOT EXISTS funnel_cohort_minute_local ON CLUSTER '${CLUSTER}'
(
    funnel          LowCardinality(String),
    minute          DateTime('UTC') COMMENT 'start minute of the leads',
    partition       UInt16 COMMENT 'partition of leads.normalized the leads belong to',
    first_touch     LowCardinality(String),
    last_touch      LowCardinality(String),
    variant         LowCardinality(String),
    furthest_index  Int8,
    current_index   Int8,
    current_stage   LowCardinality(String),
    lost            UInt8,
    leads           Int64,
    version         UInt64,
    is_deleted      UInt8
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/funnel_cohort_minute_local', '{replica}', version, is_deleted)
PARTITION BY toYYYYMM(minute)
ORDER BY (funnel, minute, partition, first_touch, last_touch, variant, furthest_index, current_index, current_stage, lost);

CREATE TABLE IF NOT EXISTS funnel_cohort_minute ON CLUSTER '${CLUSTER}' AS funnel_cohort_minute_local
ENGINE = Distributed('${CLUSTER}', currentDatabase(), funnel_cohort_minute_local, partition);

CREATE TABLE IF NOT EXISTS funnel_reach_minute_local ON CLUSTER '${CLUSTER}'
(
    funnel       LowCardinality(String),
    minute       DateTime('UTC') COMMENT 'minute of the first reach',
    partition    UInt16,
    first_touch  LowCardinality(String),
    last_touch   LowCardinality(String),
    variant      LowCardinality(String),
    stage_index  UInt8,
    stage        LowCardinality(String),
    leads        Int64,
    version      UInt64,
    is_deleted   UInt8
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/funnel_reach_minute_local', '{replica}', version, is_deleted)
PARTITION BY toYYYYMM(minute)
ORDER BY (funnel, minute, partition, first_touch, last_touch, variant, stage_index);

CREATE TABLE IF NOT EXISTS funnel_reach_minute ON CLUSTER '${CLUSTER}' AS funnel_reach_minute_local
ENGINE = Distributed('${CLUSTER}', currentDatabase(), funnel_reach_minute_local, partition);

CREATE TABLE IF NOT EXISTS funnel_transition_minute_local ON CLUSTER '${CLUSTER}'
(
    funnel       LowCardinality(String),
    minute       DateTime('UTC'),
    partition    UInt16,
    first_touch  LowCardinality(String),
    last_touch   LowCardinality(String),
    variant      LowCardinality(String),
    kind         LowCardinality(String),
    from_stage   LowCardinality(String),
    to_stage     LowCardinality(String),
    reason       LowCardinality(String),
    transitions  Int64,
    version      UInt64,
    is_deleted   UInt8
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/funnel_transition_minute_local', '{replica}', version, is_deleted)
PARTITION BY toYYYYMM(minute)
ORDER BY (funnel, minute, partition, first_touch, last_touch, variant, kind, from_stage, to_stage, reason);

CREATE TABLE IF NOT EXISTS funnel_transition_minute ON CLUSTER '${CLUSTER}' AS funnel_transition_minute_local
ENGINE = Distributed('${CLUSTER}', currentDatabase(), funnel_transition_minute_local, partition);
