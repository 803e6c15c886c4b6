-- A skip index on lead_events.device_id. Aggregator instances sharing the work look up a device's
-- claims (signups naming it) and touches when the device and the claiming user live on different
-- partitions; without the index each lookup reads the whole table. Parts written before this
-- migration are not indexed until merged (or `ALTER TABLE lead_events MATERIALIZE INDEX
-- lead_events_device`); lookups stay correct either way, only slower.
ALTER TABLE lead_events ADD INDEX IF NOT EXISTS lead_events_device device_id TYPE bloom_filter(0.01) GRANULARITY 1;
