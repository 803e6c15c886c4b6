-- Sources for the Grafana dashboards and the wallboard that the funnel rollups do not cover.

-- The distinct events again, narrow and ordered by time: events per minute by channel, today's
-- counts per event type and revenue read a time range of this table. lead_events is ordered by
-- (event_type, event_id) so that copies collapse; a time range there reads a whole month.
-- Same replacement as lead_events: a copy of an event has the same event time, hence the same
-- minute, so (minute, event_type, event_id) collapses every copy and FINAL over a range is exact.
CREATE TABLE IF NOT EXISTS lead_events_by_minute
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
    received_at   DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(received_at)
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, event_type, event_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS lead_events_by_minute_mv TO lead_events_by_minute AS
SELECT toStartOfMinute(event_time) AS minute, event_type, event_id, event_time, channel, variant,
       currency, amount, source_topic, received_at
FROM lead_events;

-- Events stored before this migration (copies of rows the view also caught collapse).
INSERT INTO lead_events_by_minute
SELECT toStartOfMinute(event_time) AS minute, event_type, event_id, event_time, channel, variant,
       currency, amount, source_topic, received_at
FROM lead_events;

-- Deliveries per minute and source topic as the collector inserted them (copies included: this
-- is the ingest rate, not the event count), and how long a delivery took from the collector
-- receiving it to ClickHouse storing it (the view runs at insert time, so now64() is that time).
CREATE TABLE IF NOT EXISTS ingest_minute
(
    minute             DateTime('UTC'),
    source_topic       LowCardinality(String),
    deliveries         SimpleAggregateFunction(sum, UInt64),
    insert_latency_ms  AggregateFunction(quantiles(0.5, 0.99), Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, source_topic)
TTL minute + INTERVAL 90 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS ingest_minute_mv TO ingest_minute AS
SELECT toStartOfMinute(received_at) AS minute, source_topic, count() AS deliveries,
       quantilesState(0.5, 0.99)(toFloat64(greatest(dateDiff('millisecond', received_at, now64(3)), 0))) AS insert_latency_ms
FROM lead_events
GROUP BY minute, source_topic;

-- Consumer lag per partition as the services' Kafka clients report it (librdkafka statistics),
-- written every few seconds by the collector and the aggregator.
CREATE TABLE IF NOT EXISTS consumer_lag
(
    at         DateTime64(3, 'UTC'),
    service    LowCardinality(String),
    topic      LowCardinality(String),
    partition  Int32,
    lag        Int64
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(at)
ORDER BY (service, topic, partition, at)
TTL toDateTime(at) + INTERVAL 7 DAY;

-- The main stages of every configured funnel, in order, written by the aggregator at start:
-- dashboards list them (A/B stage pair) and find the last one (overall conversion). A stage
-- that left the configuration gets a tombstone.
CREATE TABLE IF NOT EXISTS funnel_stages
(
    funnel       LowCardinality(String),
    stage_index  UInt8,
    stage        LowCardinality(String),
    updated_at   DateTime64(3, 'UTC'),
    is_deleted   UInt8
)
ENGINE = ReplacingMergeTree(updated_at, is_deleted)
ORDER BY (funnel, stage_index);
