-- ingest_errors: one row per rejected source message (the same record also goes to leads.dlq).
--
-- The original payload is NOT stored here: a rejected signup can carry a phone number or email in
-- clear, and personal data never reaches ClickHouse (SPEC §4). Its size and SHA-256 identify it; the
-- bytes themselves are in the dead-letter topic. A replay rejects the same (topic, partition,
-- offset) again, so ReplacingMergeTree on that key keeps one row per bad message.
CREATE TABLE IF NOT EXISTS ingest_errors
(
    source_topic     LowCardinality(String),
    source_partition Int32,
    source_offset    Int64,
    category         LowCardinality(String),
    field            String,
    message          String,
    payload_bytes    UInt32,
    payload_sha256   String,
    received_at      DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(received_at)
ORDER BY (source_topic, source_partition, source_offset);
