-- lead_funnels: each lead's current state per funnel (the cohort, occupancy, reach and timing
-- views read this), written by the aggregator with the same replace-by-version scheme as
-- stage_transitions (read that file). reached_at[k+1] is when the lead first reached main stage
-- k (a skip reaches the stages it passes over at the skip's time).
CREATE TABLE IF NOT EXISTS lead_funnels
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
ENGINE = ReplacingMergeTree(version, is_deleted)
ORDER BY (funnel, lead_id);
