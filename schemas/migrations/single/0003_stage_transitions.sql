-- stage_transitions: every stage change of every lead, per funnel (SPEC §3), written by the
-- aggregator.
--
-- Corrections. The aggregator replays a lead whenever one of its events arrives, in event-time
-- order, so a late event can change the lead's history. Rows are keyed by the lead and the
-- position in its history (funnel, lead_id, seq); a changed history is written again with a newer
-- version and positions that no longer exist get a tombstone (is_deleted = 1). ReplacingMergeTree
-- (version, is_deleted) then shows exactly the current history: readers use FINAL. Writing the
-- same rows twice (a replay after a crash) changes nothing, which is what makes the aggregator's
-- at-least-once delivery exact.
CREATE TABLE IF NOT EXISTS stage_transitions
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
ENGINE = ReplacingMergeTree(version, is_deleted)
ORDER BY (funnel, lead_id, seq);
