-- Clustered variant of single/0009_copies_and_epochs.sql (same columns and reasoning; read that
-- file). lead_event_copies is sharded like lead_events (cityHash64(event_id)), so the copies of
-- an event meet on one shard; aggregator_epochs is small and read whole.
CREATE TABLE IF NOT EXISTS lead_event_copies_local ON CLUSTER '${CLUSTER}'
(
    event_type  LowCardinality(String),
    event_id    String,
    lead_key    String,
    event_time  DateTime64(3, 'UTC'),
    copy_rank   UInt128
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/lead_event_copies_local', '{replica}', copy_rank)
ORDER BY (event_type, event_id, lead_key);

CREATE TABLE IF NOT EXISTS lead_event_copies ON CLUSTER '${CLUSTER}' AS lead_event_copies_local
ENGINE = Distributed('${CLUSTER}', currentDatabase(), lead_event_copies_local, cityHash64(event_id));

CREATE MATERIALIZED VIEW IF NOT EXISTS lead_event_copies_mv ON CLUSTER '${CLUSTER}' TO lead_event_copies_local AS
SELECT event_type, event_id,
       if(lead_id != '', lead_id, if(device_id != '', concat('device:', device_id), concat('event:', event_id))) AS lead_key,
       event_time, copy_rank
FROM lead_events_local;

INSERT INTO lead_event_copies
SELECT event_type, event_id,
       if(lead_id != '', lead_id, if(device_id != '', concat('device:', device_id), concat('event:', event_id))) AS lead_key,
       event_time, copy_rank
FROM lead_events;

CREATE TABLE IF NOT EXISTS aggregator_epochs_local ON CLUSTER '${CLUSTER}'
(
    epoch       UInt64,
    member      String,
    partitions  Array(UInt32),
    taken_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/aggregator_epochs_local', '{replica}')
ORDER BY epoch;

CREATE TABLE IF NOT EXISTS aggregator_epochs ON CLUSTER '${CLUSTER}' AS aggregator_epochs_local
ENGINE = Distributed('${CLUSTER}', currentDatabase(), aggregator_epochs_local, rand());
