//! A restart repairs what an interrupted run left half-written in ClickHouse: transitions of a
//! lead whose lead row never got written (a kill between the two inserts of a flush) and rollup
//! buckets that no longer match any lead get their tombstones, so the answers equal the events.
#![allow(missing_docs)]

use leadstream_runtime::clickhouse::Sink;
use leadstream_tests::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_tombstones_orphaned_transitions_and_stale_rollup_buckets() {
    let w = World::new("restart", 3).await;
    let addr = free_addr();
    let cfg = w.aggregator_config(&addr);
    // The schema, as the services create it, then what a killed run could have left: a device
    // lead's transition without its lead row, and rollup buckets of every partition.
    Sink::connect(&cfg.clickhouse, "test")
        .await
        .expect("migrations");
    let ch = clickhouse(&w.database);
    for sql in [
        "INSERT INTO stage_transitions (funnel, lead_id, seq, at, kind, from_stage, to_stage, \
         first_touch, last_touch, variant, event_id, event_type, version, is_deleted) VALUES \
         ('b2c', 'device:ghost', 0, now64(3), 'enter', '', 'exposure', 'douyin', 'douyin', 'none', \
         'f00d', 'exposure', 1, 0)",
        "INSERT INTO funnel_cohort_minute (funnel, minute, partition, first_touch, last_touch, \
         variant, furthest_index, current_index, current_stage, lost, leads, version, is_deleted) \
         SELECT 'b2c', toStartOfMinute(now()), number, 'douyin', 'douyin', 'none', 0, 0, \
         'exposure', 0, 1, 1, 0 FROM numbers(3)",
        "INSERT INTO funnel_reach_minute (funnel, minute, partition, first_touch, last_touch, \
         variant, stage_index, stage, leads, version, is_deleted) \
         SELECT 'b2c', toStartOfMinute(now()), number, 'douyin', 'douyin', 'none', 0, 'exposure', \
         1, 1, 0 FROM numbers(3)",
        "INSERT INTO funnel_transition_minute (funnel, minute, partition, first_touch, last_touch, \
         variant, kind, from_stage, to_stage, reason, transitions, version, is_deleted) \
         SELECT 'b2c', toStartOfMinute(now()), number, 'douyin', 'douyin', 'none', 'enter', '', \
         'exposure', '', 1, 1, 0 FROM numbers(3)",
    ] {
        ch.query(sql).execute().await.expect(sql);
    }
    let url = clickhouse_url();
    let live = "SELECT (SELECT count() FROM stage_transitions FINAL WHERE is_deleted = 0) \
        + (SELECT count() FROM funnel_cohort_minute FINAL WHERE is_deleted = 0) \
        + (SELECT count() FROM funnel_reach_minute FINAL WHERE is_deleted = 0) \
        + (SELECT count() FROM funnel_transition_minute FINAL WHERE is_deleted = 0)";
    assert_eq!(query_u64(&url, &w.database, live).await, Some(10));

    let token = tokio_util::sync::CancellationToken::new();
    let aggregator = tokio::spawn(leadstream_aggregator::run(cfg, token.clone()));
    let left = eventually(
        Duration::from_secs(60),
        || async { query_u64(&url, &w.database, live).await },
        |n| *n == 0,
    )
    .await;
    assert_eq!(left, Some(0), "nothing of the interrupted run stays live");
    let status = http_get_json(&addr, "/api/v1/status")
        .await
        .expect("status");
    assert_eq!(status["ready"], serde_json::Value::Bool(true), "{status}");
    let cohort = http_get_json(&addr, "/api/v1/funnels/b2c/cohort")
        .await
        .expect("cohort");
    assert_eq!(cohort["total"]["leads"], serde_json::json!(0), "{cohort}");
    token.cancel();
    aggregator.await.expect("join").expect("aggregator run");
}
