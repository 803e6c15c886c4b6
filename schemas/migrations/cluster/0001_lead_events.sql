-- Clustered variant of single/0001_lead_events.sql (same columns and reasoning; read that file).
-- `${CLUSTER}` is replaced by the configured cluster name; {shard} and {replica} are the servers'
-- own macros. The Distributed table shards by cityHash64(event_id), so every copy of an event lands
-- on the same shard and ReplacingMergeTree (and FINAL) can collapse it there.
CREATE TABLE IF NOT EXISTS lead_events_local ON CLUSTER '${CLUSTER}'
(
    event_id          String,
    event_type        LowCardinality(String),
    source_topic      LowCardinality(String),
    source_partition  Int32,
    source_offset     Int64,
    native_id         String,
    lead_id           String,
    device_id         String,
    channel           LowCardinality(String),
    platform          LowCardinality(String),
    campaign_id       String,
    adgroup_id        String,
    creative_id       String,
    landing_page      String,
    utm_source        String,
    utm_medium        String,
    utm_campaign      String,
    utm_content       String,
    experiment_id     String,
    variant           LowCardinality(String),
    amount            Nullable(Decimal(18, 4)),
    currency          LowCardinality(String),
    cost_micros       Nullable(Int64),
    reason            String,
    call_direction    LowCardinality(String),
    call_outcome      LowCardinality(String),
    call_duration_sec Nullable(UInt32),
    agent_id          String,
    plan              LowCardinality(String),
    phone_hash        String,
    email_hash        String,
    event_time        DateTime64(3, 'UTC'),
    received_at       DateTime64(3, 'UTC'),
    extra             String COMMENT 'unlisted source keys, as a JSON object',
    copy_rank         UInt128 COMMENT 'the copy with the highest rank is the event (earliest event time first)'
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/lead_events_local', '{replica}', copy_rank)
PARTITION BY toYYYYMM(event_time)
ORDER BY (event_type, event_id);

CREATE TABLE IF NOT EXISTS lead_events ON CLUSTER '${CLUSTER}' AS lead_events_local
ENGINE = Distributed('${CLUSTER}', currentDatabase(), lead_events_local, cityHash64(event_id));

-- FINAL through a Distributed table is applied per shard, which is exact because of the sharding key.
CREATE VIEW IF NOT EXISTS lead_events_unique ON CLUSTER '${CLUSTER}' AS SELECT * FROM lead_events FINAL;
