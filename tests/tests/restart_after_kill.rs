//! A service killed with SIGKILL and started again takes its partitions back on its own, with
//! the shipped configuration and group layout (tansu 0.6 never expires the dead member by
//! itself), and says it is ready only while it owns partitions.
#![allow(missing_docs)]

use leadstream_schemas::SourceKind;
use leadstream_tests::process::{config_file, is_ready, spawn_aggregator, spawn_collector_binary};
use leadstream_tests::*;
use std::time::{Duration, Instant};

const ROWS: &str = "SELECT count() FROM lead_events_unique";

async fn orders(w: &World, from: u32, to: u32) {
    let p = producer();
    let topic = w.topic(SourceKind::Order);
    for i in from..to {
        let msg = format!(
            r#"{{"order_id":"o-{i}","user_id":"u-{i}","paid_at":1763870400,"amount_cents":100,"currency":"CNY"}}"#
        );
        produce(&p, &topic, Some(&format!("u-{i}")), msg.as_bytes()).await;
    }
}

/// Waits until `done` holds and the service is ready (or `limit` passes); meanwhile, whenever
/// `/readyz` of `addr` says ready, the service must own partitions
/// (`<service>_assigned_partitions` > 0).
async fn until_consumed_ready_only_when_owning<F, Fut>(
    addr: &str,
    service: &str,
    limit: Duration,
    mut done: F,
) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    let gauge = format!("leadstream_{service}_assigned_partitions");
    while started.elapsed() < limit {
        if is_ready(addr).await {
            let owned = metric(addr, &gauge).await;
            assert!(
                owned > 0.0,
                "{service} answered ready while owning no partitions"
            );
        }
        if done().await && is_ready(addr).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_killed_with_sigkill_consumes_again_after_a_restart() {
    let w = World::new("kill9_collector", 3).await;
    let url = clickhouse_url();
    let addr = free_addr();
    let mut cfg = w.collector_config();
    cfg.http.listen = addr.clone();
    let file = config_file(&cfg, "kill9-collector");
    let mut first = spawn_collector_binary(&file);
    orders(&w, 0, 10).await;
    assert_eq!(wait_for_count(&url, &w.database, ROWS, 10).await, Some(10));
    first.kill9();

    let _second = spawn_collector_binary(&file);
    orders(&w, 10, 20).await;
    let consumed = until_consumed_ready_only_when_owning(
        &addr,
        "collector",
        Duration::from_secs(120),
        || async { query_u64(&url, &w.database, ROWS).await == Some(20) },
    )
    .await;
    assert!(
        consumed,
        "the restarted collector took its partitions back and stored the 10 new events: {:?} rows",
        query_u64(&url, &w.database, ROWS).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregator_killed_with_sigkill_consumes_again_after_a_restart() {
    let w = World::new("kill9_aggregator", 3).await;
    let url = clickhouse_url();
    let collector = spawn_collector(w.collector_config());
    let addr = free_addr();
    let file = config_file(&w.aggregator_config(&addr), "kill9-aggregator");
    let leads = "SELECT count() FROM lead_funnels FINAL WHERE is_deleted = 0 AND funnel = 'b2c'";
    let mut first = spawn_aggregator(&file);
    orders(&w, 0, 10).await;
    assert_eq!(wait_for_count(&url, &w.database, leads, 10).await, Some(10));
    first.kill9();

    let mut second = spawn_aggregator(&file);
    orders(&w, 10, 20).await;
    let consumed = until_consumed_ready_only_when_owning(
        &addr,
        "aggregator",
        Duration::from_secs(120),
        || async { query_u64(&url, &w.database, leads).await == Some(20) },
    )
    .await;
    assert!(
        consumed,
        "the restarted aggregator took its partitions back and published the 10 new leads: {:?}",
        query_u64(&url, &w.database, leads).await
    );
    let exit = second.terminate_within(Duration::from_secs(10));
    assert!(
        exit.is_some_and(|s| s.success()),
        "SIGTERM: exit 0 within 10 s: {exit:?}"
    );
    stop_collector(collector).await;
}
