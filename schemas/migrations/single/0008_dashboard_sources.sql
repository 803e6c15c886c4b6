-- Sources for the Grafana dashboards and the wallboard that the funnel rollups do not cover.

-- The distinct events again, narrow and ordered by time: events per minute by channel, today's
-- counts per event type and revenue read a time range of this table. lead_events is ordered by
-- (event_type, event_id) so that copies collapse; a time range there reads a whole month.
-- Same replacement as lead_events (the highest copy_rank, i.e. the earliest copy, wins): copies
-- in one minute collapse by key. A copy in another minute than the winner's (a re-save with a
-- later time, a loser of any kind) gets a tombstone from the aggregator, version u128::MAX:
-- the winner is the earliest copy, so no copy in a later minute can ever become it, and the
-- tombstone stays right however many copies come later. The aggregator also writes the
-- tombstones at every rebuild, for copies it never saw displaced (a kill before its flush).
-- So FINAL over a minute range is exact, and the minute in the key keeps ranges cheap.
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
    received_at   DateTime64(3, 'UTC'),
    copy_rank     UInt128,
    is_deleted    UInt8
)
ENGINE = ReplacingMergeTree(copy_rank, is_deleted)
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, event_type, event_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS lead_events_by_minute_mv TO lead_events_by_minute AS
SELECT toStartOfMinute(event_time) AS minute, event_type, event_id, event_time, channel, variant,
       currency, amount, source_topic, received_at, copy_rank, 0 AS is_deleted
FROM lead_events;

-- Events stored before this migration: their winners (copies of rows the view also caught collapse).
INSERT INTO lead_events_by_minute
SELECT toStartOfMinute(event_time) AS minute, event_type, event_id, event_time, channel, variant,
       currency, amount, source_topic, received_at, copy_rank, 0 AS is_deleted
FROM lead_events FINAL;

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
