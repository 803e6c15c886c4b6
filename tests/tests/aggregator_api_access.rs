//! The API's access to ClickHouse on the real stack: it queries with its own (here read-only)
//! user and a `max_execution_time`, and an error it cannot answer names no ClickHouse internals.
#![allow(missing_docs)]

use leadstream_schemas::{Secret, SourceKind};
use leadstream_tests::process::{config_file, spawn_aggregator};
use leadstream_tests::*;
use std::time::Duration;

/// The read-only user `scripts/clickhouse_server.py` declares (profile readonly=2).
const READER: (&str, &str) = ("leadstream_reader", "reader-password");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_reads_with_its_own_user_and_hides_clickhouse_errors() {
    let w = World::new("api_access", 1).await;
    let url = clickhouse_url();
    let collector = spawn_collector(w.collector_config());
    let p = producer();
    for i in 0..5 {
        let msg = format!(r#"{{"signup_id":"s-{i}","created_at":1763870400,"user_id":"u-{i}"}}"#);
        produce(&p, &w.topic(SourceKind::Signup), None, msg.as_bytes()).await;
    }
    let addr = free_addr();
    let mut cfg = w.aggregator_config(&addr);
    cfg.api.clickhouse_user = Some(READER.0.into());
    let mut file_cfg = serde_json::to_value(&cfg).expect("json");
    // Secrets serialize redacted, so the password goes into the file by hand (a test only).
    file_cfg["api"]["clickhouse_password"] = READER.1.into();
    let agg = spawn_aggregator(&config_file(&file_cfg, "api-reader"));
    let leads = eventually(
        Duration::from_secs(120),
        || async {
            let v = http_get_json(&addr, "/api/v1/funnels/sales/cohort").await?;
            v["total"]["leads"].as_u64()
        },
        |n| *n == 5,
    )
    .await;
    assert_eq!(leads, Some(5), "the read-only user answers the views");
    // Every API query ran as the reader, with the execution limit.
    let _ = query_u64(&url, &w.database, "SYSTEM FLUSH LOGS").await;
    let ran = query_json(
        &url,
        &w.database,
        &format!(
            "SELECT user, Settings['max_execution_time'] AS limit FROM system.query_log \
             WHERE current_database = '{}' AND query LIKE '%sumForEach%' \
             AND type = 'QueryFinish' AND query NOT LIKE '%system.query_log%'",
            w.database
        ),
    )
    .await
    .expect("query log");
    assert!(!ran.is_empty(), "the cohort queries are in the query log");
    for r in &ran {
        assert_eq!(r["user"], READER.0, "{r}");
        assert_eq!(r["limit"], "5", "{r}");
    }
    drop(agg);

    // An API whose user ClickHouse refuses: a plain 503, no exception text.
    let addr = free_addr();
    let mut cfg = w.aggregator_config(&addr);
    cfg.api.clickhouse_user = Some("nobody_at_all".into());
    cfg.api.clickhouse_password = Some(Secret::new("x".into()));
    let _refused = spawn_aggregator(&config_file(&cfg, "api-nobody"));
    let answer = eventually(
        Duration::from_secs(60),
        || async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(&addr).await.ok()?;
            s.write_all(b"GET /api/v1/funnels/sales/cohort HTTP/1.0\r\n\r\n")
                .await
                .ok()?;
            let mut buf = String::new();
            s.read_to_string(&mut buf).await.ok()?;
            Some(buf)
        },
        |b| b.contains(" 503 "),
    )
    .await
    .expect("the API answers");
    assert!(answer.contains(" 503 "), "{answer}");
    let body = answer
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(body).expect("json error body");
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    for internal in [
        "Code:",
        "DB::Exception",
        "nobody_at_all",
        "Authentication",
        "password",
    ] {
        assert!(
            !body.contains(internal),
            "the error shows {internal}: {body}"
        );
    }
    stop_collector(collector).await;
}
