//! A database created before events had copy ranks (`lead_events` keeping the latest delivery)
//! is upgraded by the first start of the new version: every row kept, copies of an event
//! collapsing to the earliest one, the per-minute table and the copies table rebuilt, each
//! migration recorded once; a second start changes nothing.
#![allow(missing_docs)]

use leadstream_runtime::clickhouse::Sink;
use leadstream_schemas::migrations::{migrations, Topology};
use leadstream_tests::*;

fn statements(sql: &str) -> Vec<String> {
    let body: String = sql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    body.split(";\n")
        .map(|s| s.trim().trim_end_matches(';').trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unranked_database_is_upgraded_without_losing_a_row() {
    let w = World::new("upgrade", 1).await;
    let url = clickhouse_url();
    let cfg = w.collector_config().clickhouse;
    let admin = clickhouse::Client::default()
        .with_url(&url)
        .with_option("network_compression_method", "lz4");
    admin
        .query(&format!("CREATE DATABASE `{}`", w.database))
        .execute()
        .await
        .expect("database");
    let ch = clickhouse(&w.database);
    let dir = repo_root().join("tests/fixtures/schema_before_rank");
    for file in [
        "0001_lead_events.sql",
        "0006_lead_events_device_index.sql",
        "0008_dashboard_sources.sql",
    ] {
        for s in statements(&std::fs::read_to_string(dir.join(file)).expect("fixture")) {
            ch.query(&s)
                .execute()
                .await
                .unwrap_or_else(|e| panic!("{s}: {e}"));
        }
    }
    ch.query(
        "CREATE TABLE schema_migrations (version UInt32, name String, applied_at DateTime64(3, 'UTC') \
         DEFAULT now64(3)) ENGINE = ReplacingMergeTree ORDER BY version",
    )
    .execute()
    .await
    .expect("bookkeeping");
    ch.query(
        "INSERT INTO schema_migrations (version, name) SELECT number + 1, 'old' FROM numbers(8)",
    )
    .execute()
    .await
    .expect("records");
    // Two distinct events, one of them delivered twice with different event times (a re-save):
    // the old table keeps the later delivery, the upgrade must keep the earliest copy.
    for (id, minute, received) in [
        ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "09:00", "10:00"),
        ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "09:30", "10:05"),
        ("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "09:10", "10:01"),
    ] {
        ch.query(&format!(
            "INSERT INTO lead_events (event_id, event_type, source_topic, native_id, lead_id, \
             event_time, received_at) VALUES ('{id}', 'order', 'leads.order', 'o', 'u-1', \
             '2026-11-02 {minute}:00', '2026-11-02 {received}:00')"
        ))
        .execute()
        .await
        .expect("old rows");
    }

    Sink::connect(&cfg, "test").await.expect("upgrade");
    let n = |sql: &'static str| {
        let url = url.clone();
        let db = w.database.clone();
        async move { query_u64(&url, &db, sql).await }
    };
    assert_eq!(n("SELECT count() FROM lead_events_unique").await, Some(2));
    assert_eq!(
        n(
            "SELECT count() FROM lead_events_unique WHERE event_id LIKE 'a%' \
           AND toMinute(event_time) = 0"
        )
        .await,
        Some(1),
        "the earliest copy is the event"
    );
    assert_eq!(
        n("SELECT count() FROM lead_events_by_minute FINAL").await,
        Some(2),
        "the per-minute table is refilled from the winners"
    );
    assert_eq!(
        n("SELECT count() FROM lead_event_copies FINAL").await,
        Some(2)
    );
    assert_eq!(
        n(
            "SELECT count() FROM system.tables WHERE database = currentDatabase() \
           AND name = 'lead_events_before_rank'"
        )
        .await,
        Some(0),
        "the old table is gone once copied"
    );
    assert_eq!(
        n("SELECT uniqExact(version) FROM schema_migrations").await,
        Some(migrations(Topology::Single).len() as u64),
        "every migration recorded"
    );
    // A second start applies nothing again (the backfills would double the by-minute rows
    // until merged otherwise).
    let before = n("SELECT count() FROM lead_events_by_minute").await;
    Sink::connect(&cfg, "test").await.expect("second start");
    assert_eq!(n("SELECT count() FROM lead_events_by_minute").await, before);
}
