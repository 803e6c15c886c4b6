-- Leads evicted from the aggregator's memory (README "Bounded memory"): a lead with no event for
-- `state.idle_after` of event time leaves memory together with the devices whose touches it
-- holds (its group), and comes back when an event, a copy or a claim for it arrives. One row per
-- key of the group (`l:` lead key, `d:` device id), each holding the whole group, so any key
-- brings the group back in one read by key. A newer eviction of the same key replaces the older
-- one; rows older than a rebuild from history (`since` in the checkpoints) are ignored.
CREATE TABLE IF NOT EXISTS aggregator_evicted
(
    key         String,
    partition   UInt32,
    version     UInt64,
    blob        String CODEC(ZSTD(1)),
    evicted_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY key;
