-- late_events: events that arrived later than the aggregator's allowed lateness. They are
-- applied all the same (answers stay exact); this table says which answers changed late.
CREATE TABLE IF NOT EXISTS late_events
(
    event_id     String,
    event_type   LowCardinality(String),
    lead_key     String,
    event_time   DateTime64(3, 'UTC'),
    watermark    DateTime64(3, 'UTC') COMMENT 'newest event time seen when it arrived',
    behind_ms    Int64,
    received_at  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(received_at)
ORDER BY event_id;
