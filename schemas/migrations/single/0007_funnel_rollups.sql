-- Per-minute rollups of the funnel answers, written by the aggregator (see
-- services/aggregator/src/rollup.rs): absolute counts per bucket and partition of
-- leads.normalized, replaced by version like the per-lead tables, so replays and corrections
-- stay exact. Readers sum `FINAL` rows over partitions; a bucket that emptied is a tombstone.
-- The API and the dashboards read these instead of scanning every lead.

-- Leads by start minute, attribution, furthest stage, current stage and lost: cohort reach,
-- channel mix, A/B comparison and (over all minutes) occupancy.
CREATE TABLE IF NOT EXISTS funnel_cohort_minute
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
ENGINE = ReplacingMergeTree(version, is_deleted)
PARTITION BY toYYYYMM(minute)
ORDER BY (funnel, minute, partition, first_touch, last_touch, variant, furthest_index, current_index, current_stage, lost);

-- Leads that first reached a main stage, by minute: flow ("entered today") and stage entries
-- per minute by channel and variant.
CREATE TABLE IF NOT EXISTS funnel_reach_minute
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
ENGINE = ReplacingMergeTree(version, is_deleted)
PARTITION BY toYYYYMM(minute)
ORDER BY (funnel, minute, partition, first_touch, last_touch, variant, stage_index);

-- Transitions by minute, kind, stages and reason: transitions by kind, loss reasons, backflows,
-- and the occupancy deltas (into / out of each stage) per minute.
CREATE TABLE IF NOT EXISTS funnel_transition_minute
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
ENGINE = ReplacingMergeTree(version, is_deleted)
PARTITION BY toYYYYMM(minute)
ORDER BY (funnel, minute, partition, first_touch, last_touch, variant, kind, from_stage, to_stage, reason);
