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

/// A member that lost its partitions but still writes (paused, or with a clock far ahead) must
/// not win over the member that restored them: rows written with a version an hour ahead of the
/// wall clock are replaced by the restoring member's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_outranks_rows_of_a_member_with_a_clock_ahead() {
    use leadstream_schemas::SourceKind;
    let w = World::new("fencing", 1).await;
    let url = clickhouse_url();
    let addr = free_addr();
    let cfg = w.aggregator_config(&addr);
    Sink::connect(&cfg.clickhouse, "test")
        .await
        .expect("migrations");
    let ahead = chrono::Utc::now().timestamp_nanos_opt().expect("now") as u64 + 3_600_000_000_000;
    clickhouse(&w.database)
        .query(&format!(
            "INSERT INTO lead_funnels (funnel, lead_id, started_at, current_stage, current_index, \
             furthest_stage, furthest_index, transitions, changed_at, version, is_deleted) VALUES \
             ('sales', 'u-fenced', now64(3), 'won', 3, 'won', 3, 1, now64(3), {ahead}, 0)"
        ))
        .execute()
        .await
        .expect("the stale member's row");
    let collector = spawn_collector(w.collector_config());
    produce(
        &producer(),
        &w.topic(SourceKind::Signup),
        Some("u-fenced"),
        br#"{"signup_id":"s-fenced","created_at":1763870400,"user_id":"u-fenced"}"#,
    )
    .await;
    let token = tokio_util::sync::CancellationToken::new();
    let aggregator = tokio::spawn(leadstream_aggregator::run(cfg, token.clone()));
    let stage = eventually(
        Duration::from_secs(90),
        || async {
            let rows = query_json(
                &url,
                &w.database,
                "SELECT current_stage FROM lead_funnels FINAL WHERE funnel = 'sales' AND lead_id = 'u-fenced'",
            )
            .await
            .ok()?;
            rows.first()?["current_stage"].as_str().map(str::to_string)
        },
        |s| s == "lead",
    )
    .await;
    assert_eq!(
        stage.as_deref(),
        Some("lead"),
        "the restoring member's row replaced the one versioned an hour ahead"
    );
    token.cancel();
    aggregator.await.expect("join").expect("aggregator run");
    stop_collector(collector).await;
}

/// A copy that lost to an earlier one, in another minute, which no aggregator saw displaced
/// (say it was killed before its flush), is hidden from `lead_events_by_minute` by the next
/// start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_hides_losing_copies_it_never_saw() {
    let w = World::new("losers", 1).await;
    let url = clickhouse_url();
    let addr = free_addr();
    let cfg = w.aggregator_config(&addr);
    Sink::connect(&cfg.clickhouse, "test")
        .await
        .expect("migrations");
    // Two copies of one order: the re-save at 10:07 loses to the first at 10:00 (lower rank).
    for (minute, rank) in [("10:00", 9), ("10:07", 5)] {
        clickhouse(&w.database)
            .query(&format!(
                "INSERT INTO lead_events (event_id, event_type, source_topic, native_id, lead_id, \
                 event_time, received_at, copy_rank) VALUES ('cccccccccccccccccccccccccccccccc', \
                 'order', 'leads.order', 'o-1', 'u-1', '2026-11-02 {minute}:00', now64(3), {rank})"
            ))
            .execute()
            .await
            .expect("copy");
    }
    let minutes = "SELECT count() FROM lead_events_by_minute FINAL";
    assert_eq!(
        query_u64(&url, &w.database, minutes).await,
        Some(2),
        "both copies' minutes, before"
    );
    let token = tokio_util::sync::CancellationToken::new();
    let aggregator = tokio::spawn(leadstream_aggregator::run(cfg, token.clone()));
    let left = eventually(
        Duration::from_secs(60),
        || async { query_u64(&url, &w.database, minutes).await },
        |n| *n == 1,
    )
    .await;
    assert_eq!(left, Some(1), "only the winner's minute is left");
    let kept = query_json(
        &url,
        &w.database,
        "SELECT toString(minute) AS m FROM lead_events_by_minute FINAL",
    )
    .await
    .expect("row");
    assert_eq!(kept[0]["m"], "2026-11-02 10:00:00");
    token.cancel();
    aggregator.await.expect("join").expect("aggregator run");
}
