-- Clustered variant of single/0008_dashboard_sources.sql (same columns and reasoning; read that
-- file). lead_events_by_minute is sharded like lead_events (cityHash64(event_id)), so copies meet
-- on one shard; the views attach to the local lead_events table of each shard.

-- The distinct events again, narrow and ordered by time: events per minute by channel, today's
-- counts per event type and revenue read a time range of this table. lead_events is ordered by
-- (event_type, event_id) so that copies collapse; a time range there reads a whole month.
-- Same replacement as lead_events (highest copy_rank wins); copies in other minutes than the
-- winner's get tombstones from the aggregator (single/0008 explains why that is exact).
CREATE TABLE IF NOT EXISTS lead_events_by_minute_local ON CLUSTER '${CLUSTER}'
(
    minute        DateTime('UTC'),
    event_type    LowCardinality(String),
    event_id      String,
    event_time    DateTime64(3, 'UTC'),
    channel       LowCardinality(String),
    variant       LowCardinality(String),
    currency      LowCardinality(String),
    amount        Nullable(Decimal(18, 4)),
    source_topic  LowCardinality(String),
    received_at   DateTime64(3, 'UTC'),
    copy_rank     UInt128,
    is_deleted    UInt8
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/lead_events_by_minute_local', '{replica}', copy_rank, is_deleted)
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, event_type, event_id);

CREATE TABLE IF NOT EXISTS lead_events_by_minute ON CLUSTER '${CLUSTER}' AS lead_events_by_minute_local
ENGINE = Distributed('${CLUSTER}', currentDatabase(), lead_events_by_minute_local, cityHash64(event_id));

CREATE MATERIALIZED VIEW IF NOT EXISTS lead_events_by_minute_mv ON CLUSTER '${CLUSTER}' TO lead_events_by_minute_local AS
SELECT toStartOfMinute(event_time) AS minute, event_type, event_id, event_time, channel, variant,
       currency, amount, source_topic, received_at, copy_rank, 0 AS is_deleted
FROM lead_events_local;

-- Events stored before this migration: their winners (copies of rows the view also caught collapse).
INSERT INTO lead_events_by_minute
SELECT toStartOfMinute(event_time) AS minute, event_type, event_id, event_time, channel, variant,
       currency, amount, source_topic, received_at, copy_rank, 0 AS is_deleted
FROM lead_events FINAL;

-- Deliveries per minute and source topic as the collector inserted them (copies included: this
-- is the ingest rate, not the event count), and how long a delivery took from the collector
-- receiving it to ClickHouse storing it (the view runs at insert time, so now64() is that time).
CREATE TABLE IF NOT EXISTS ingest_minute_local ON CLUSTER '${CLUSTER}'
(
    minute             DateTime('UTC'),
    source_topic       LowCardinality(String),
    deliveries         SimpleAggregateFunction(sum, UInt64),
    insert_latency_ms  AggregateFunction(quantiles(0.5, 0.99), Float64)
)
ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/{database}/ingest_minute_local', '{replica}')
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, source_topic)
TTL minute + INTERVAL 90 DAY;

CREATE TABLE IF NOT EXISTS ingest_minute ON CLUSTER '${CLUSTER}' AS ingest_minute_local
ENGINE = Distributed('${CLUSTER}', currentDatabase(), ingest_minute_local, rand());

CREATE MATERIALIZED VIEW IF NOT EXISTS ingest_minute_mv ON CLUSTER '${CLUSTER}' TO ingest_minute_local AS
SELECT toStartOfMinute(received_at) AS minute, source_topic, count() AS deliveries,
       quantilesState(0.5, 0.99)(toFloat64(greatest(dateDiff('millisecond', received_at, now64(3)), 0))) AS insert_latency_ms
FROM lead_events_local
GROUP BY minute, source_topic;

-- Consumer lag per partition as the services' Kafka clients report it (librdkafka statistics),
-- written every few seconds by the collector and the aggregator.
CREATE TABLE IF NOT EXISTS consumer_lag_local ON CLUSTER '${CLUSTER}'
(
    at         DateTime64(3, 'UTC'),
    service    LowCardinality(String),
    topic      LowCardinality(String),
    partition  Int32,
    lag        Int64
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/consumer_lag_local', '{replica}')
PARTITION BY toYYYYMMDD(at)
ORDER BY (service, topic, partition, at)
TTL toDateTime(at) + INTERVAL 7 DAY;

CREATE TABLE IF NOT EXISTS consumer_lag ON CLUSTER '${CLUSTER}' AS consumer_lag_local
ENGINE = Distributed('${CLUSTER}', currentDatabase(), consumer_lag_local, rand());

-- The main stages of every configured funnel, in order, written by the aggregator at start:
-- dashboards list them (A/B stage pair) and find the last one (overall conversion). A stage
-- that left the configuration gets a tombstone.
CREATE TABLE IF NOT EXISTS funnel_stages_local ON CLUSTER '${CLUSTER}'
(
    funnel       LowCardinality(String),
    stage_index  UInt8,
    stage        LowCardinality(String),
    updated_at   DateTime64(3, 'UTC'),
    is_deleted   UInt8
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/funnel_stages_local', '{replica}', updated_at, is_deleted)
ORDER BY (funnel, stage_index);

CREATE TABLE IF NOT EXISTS funnel_stages ON CLUSTER '${CLUSTER}' AS funnel_stages_local
ENGINE = Distributed('${CLUSTER}', currentDatabase(), funnel_stages_local, cityHash64(funnel));
