-- lead_events: one row per normalized source event (all seven topics).
--
-- Idempotency. The same native id delivered twice (producer retry, redelivery, a replay after a
-- crash between the insert and the offset commit) always normalizes to the same event_id, and a
-- given event_id always has the same event_type (the id covers trial event / contract status).
-- ReplacingMergeTree keyed on (event_type, event_id) therefore collapses every copy into one row.
-- Copies live side by side until a merge, so readers that must never see one use
-- `lead_events FINAL` or the view `lead_events_unique` below; FINAL on ClickHouse 26 is cheap
-- enough for dashboards (it merges only the parts a query reads).
--
-- Why not insert_deduplication_token / block dedup: after a restart the consumer regroups messages
-- into different batches, so block hashes differ and only byte-identical retries of one batch would
-- be caught; a duplicate native id at another offset would never be. Key-based replacement catches
-- all of them.
--
-- One winner per event_id: copies of one event that differ (a CRM re-saving a contract with a new
-- updated_at, an id re-sent under another lead) are ranked by copy_rank, which the collector
-- computes (NormalizedEvent::copy_rank): the earliest event time ranks highest, a digest of the
-- copy's content breaks ties. The version column is copy_rank, so the earliest copy is the one
-- kept, whatever the order copies arrive in, are replayed or merge in; the aggregator and the
-- generator's truth use the same rule. Redeliveries of one copy rank the same (delivery
-- metadata is not in the digest). FINAL collapses copies across partitions too (ClickHouse
-- merges every part a FINAL query reads), and filters on columns outside the sorting key apply
-- after that merge.
CREATE TABLE IF NOT EXISTS lead_events
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
ENGINE = ReplacingMergeTree(copy_rank)
PARTITION BY toYYYYMM(event_time)
ORDER BY (event_type, event_id);

CREATE VIEW IF NOT EXISTS lead_events_unique AS SELECT * FROM lead_events FINAL;
