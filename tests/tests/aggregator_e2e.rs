//! The aggregator against the real broker, collector and ClickHouse: the generator's seeded run
//! (late events, duplicates, malformed messages) answered by the HTTP API exactly as the truth
//! says, with the aggregator killed (-9) mid-stream and restarted on the way.
#![allow(missing_docs)]

use leadstream_tests::aggregator::{api_matches_truth, generate};
use leadstream_tests::process::{config_file, spawn_aggregator};
use leadstream_tests::*;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_run_answers_equal_the_truth_across_a_kill_9() {
    let w = World::new("aggregator", 3).await;
    let truth = generate(&w, "aggregator_e2e", 2027, 20_000, (0.1, 0.05, 0.03)).await;
    let m = &truth.messages;
    assert!(
        m.valid > 80_000 && m.late > 4000 && m.duplicates > 2000 && m.poison > 1000,
        "{m:?}"
    );
    let url = clickhouse_url();
    let addr = free_addr();
    let cfg = w.aggregator_config(&addr);
    let group = cfg.kafka.group_id.clone();
    let cfg_file = config_file(&cfg, "aggregator");

    // First instance: consuming live while the collector works; killed with SIGKILL mid-stream.
    let mut first = spawn_aggregator(&cfg_file);
    let collector = spawn_collector(w.collector_config());
    let rows = "SELECT count() FROM stage_transitions FINAL WHERE is_deleted = 0";
    eventually(
        Duration::from_secs(120),
        || async { query_u64(&url, &w.database, rows).await },
        |n| *n > 0,
    )
    .await
    .expect("the first aggregator published rows");
    first.kill().expect("kill -9");
    first.wait().expect("reap");
    let partial = query_u64(&url, &w.database, rows).await.unwrap_or(0);
    let total: u64 = truth
        .funnels
        .values()
        .flat_map(|f| f.totals.transitions.values())
        .sum();
    assert!(
        partial < total,
        "the kill should land mid-stream ({partial} of {total} transition rows)"
    );
    let in_ch = wait_for_count(
        &url,
        &w.database,
        "SELECT count() FROM lead_events_unique",
        m.valid,
    )
    .await;
    assert_eq!(in_ch, Some(m.valid));
    stop_collector(collector).await;

    // Second instance, same group: rebuilds from ClickHouse, resumes from the committed offsets.
    let mut second = spawn_aggregator(&cfg_file);
    let normalized = [w.normalized_topic()];
    assert_eventually_committed_to_end(
        &w.brokers,
        &group,
        &normalized,
        w.partitions,
        Duration::from_secs(120),
        "the aggregator committed the whole normalized topic",
    )
    .await;
    let verdict = eventually(
        Duration::from_secs(60),
        || async { Some(api_matches_truth(&addr, &truth).await) },
        |r| r.is_ok(),
    )
    .await
    .expect("answers");
    assert_eq!(verdict, Ok(()));

    // The status endpoint reports freshness from the newest event in the answers.
    let status = http_get_json(&addr, "/api/v1/status")
        .await
        .expect("status");
    assert_eq!(status["ready"], Value::Bool(true));
    assert!(
        status["newest_event_ms"].as_i64().unwrap_or(0) > 0,
        "{status}"
    );

    Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .expect("kill -TERM");
    let code = second.wait().expect("wait");
    assert!(
        code.success(),
        "SIGTERM ends the aggregator cleanly: {code:?}"
    );
}
