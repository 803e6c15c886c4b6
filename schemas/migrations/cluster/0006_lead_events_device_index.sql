-- Clustered variant of single/0006_lead_events_device_index.sql (read that file).
ALTER TABLE lead_events_local ON CLUSTER '${CLUSTER}' ADD INDEX IF NOT EXISTS lead_events_device device_id TYPE bloom_filter(0.01) GRANULARITY 1;
