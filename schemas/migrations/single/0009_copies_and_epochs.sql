-- Where copies of an event live, and the fencing epochs of the aggregator's row versions.

-- Every lead key an event was delivered under, with the best copy under each: the aggregator
-- reads it when an event id turns up under a second lead key (a source re-sending an id for
-- another lead), to keep the event only with the winner (the highest copy_rank). lead_events
-- cannot answer that: merges keep only its winner, and the loser's lead must be found too.
CREATE TABLE IF NOT EXISTS lead_event_copies
(
    event_type  LowCardinality(String),
    event_id    String,
    lead_key    String,
    event_time  DateTime64(3, 'UTC'),
    copy_rank   UInt128
)
ENGINE = ReplacingMergeTree(copy_rank)
ORDER BY (event_type, event_id, lead_key);

CREATE MATERIALIZED VIEW IF NOT EXISTS lead_event_copies_mv TO lead_event_copies AS
SELECT event_type, event_id,
       if(lead_id != '', lead_id, if(device_id != '', concat('device:', device_id), concat('event:', event_id))) AS lead_key,
       event_time, copy_rank
FROM lead_events;

INSERT INTO lead_event_copies
SELECT event_type, event_id,
       if(lead_id != '', lead_id, if(device_id != '', concat('device:', device_id), concat('event:', event_id))) AS lead_key,
       event_time, copy_rank
FROM lead_events;

-- The epochs aggregator members took when they restored partitions: a row version is
-- (epoch << 32) | sequence, and each restore takes an epoch above every epoch taken before it
-- and above every version it reads, so a member that restored before the current owner (a
-- paused or evicted one) always writes older versions than the owner, whatever its clock says.
CREATE TABLE IF NOT EXISTS aggregator_epochs
(
    epoch       UInt64,
    member      String,
    partitions  Array(UInt32),
    taken_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY epoch;
