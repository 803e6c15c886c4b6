-- Clustered variant of single/0004_lead_funnels.sql (same columns and reasoning; read that file).
-- Sharded by cityHash64(lead_id): all rows of one key live on one shard, so FINAL is exact per shard.
CREATE TABLE IF NOT EXISTS lead_funnels_local ON CLUSTER '${CLUSTER}'
(
    funnel          LowCardinality(String),
    lead_id         String,
    started_at      DateTime64(3, 'UTC'),
    current_stage   LowCardinality(String),
    current_index   Int8,
    furthest_stage  LowCardinality(String),
    furthest_index  Int8,
    reached_at      Array(DateTime64(3, 'UTC')),
    specials        Array(LowCardinality(String)),
    lost            UInt8,
    lost_reason     LowCardinality(String),
    first_touch     LowCardinality(String),
    last_touch      LowCardinality(String),
    variant         LowCardinality(String),
    transitions     UInt16,
    changed_at      DateTime64(3, 'UTC'),
    version         UInt64,
    is_deleted      UInt8
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/lead_funnels_local', '{replica}', version, is_deleted)
ORDER BY (funnel, lead_id);

CREATE TABLE IF NOT EXISTS lead_funnels ON CLUSTER '${CLUSTER}' AS lead_funnels_local
ENGINE = Distributed('${CLUSTER}', currentDatabase(), lead_funnels_local, cityHash64(lead_id));
