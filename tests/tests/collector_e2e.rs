//! The collector against the real broker and ClickHouse that scripts/stack.sh starts.
#![allow(missing_docs)]

use leadstream_schemas::SourceKind;
use leadstream_tests::*;
use rdkafka::message::Message;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

async fn count(db: &str, sql: &str) -> Option<u64> {
    query_u64(&clickhouse_url(), db, sql).await
}

/// Every fixture once, every valid one delivered twice, half before and half after a collector
/// restart; then a full replay by a second consumer group. ClickHouse must hold each valid event
/// exactly once with the golden values, and each bad message exactly once as a dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_feed_lands_exactly_once_across_restart_and_replay() {
    let w = World::new("mixed", 3).await;
    let p = producer();
    let fixtures = raw_fixtures();
    let valid: Vec<_> = fixtures
        .iter()
        .filter(|f| !f.1.contains("__bad_"))
        .collect();
    let bad: Vec<_> = fixtures.iter().filter(|f| f.1.contains("__bad_")).collect();
    let expected_ids: BTreeSet<String> = valid
        .iter()
        .map(|f| golden(&f.1)["event_id"].as_str().expect("id").to_string())
        .collect();
    // Two fixtures are other events of the same native id (trial activated, contract cancelled), so
    // ids are distinct per fixture.
    assert_eq!(expected_ids.len(), valid.len());

    // (topic, partition, offset) of each bad message -> its fixture name.
    let mut bad_at: BTreeMap<(String, i32, i64), String> = BTreeMap::new();
    let half = fixtures.len() / 2;
    let send = |range: std::ops::Range<usize>| {
        let (p, fixtures, w) = (&p, &fixtures, &w);
        async move {
            let mut out = Vec::new();
            for (kind, name, bytes) in &fixtures[range] {
                let topic = w.topic(*kind);
                let (part, off) = produce(p, &topic, None, bytes).await;
                if name.contains("__bad_") {
                    out.push(((topic, part, off), name.clone()));
                } else {
                    // A duplicate delivery of the same native id.
                    produce(p, &topic, None, bytes).await;
                }
            }
            out
        }
    };
    bad_at.extend(send(0..half).await);

    let cfg = w.collector_config();
    let group = cfg.kafka.group_id.clone();
    let c1 = spawn_collector(cfg.clone());
    let first_valid = fixtures[..half]
        .iter()
        .filter(|f| !f.1.contains("__bad_"))
        .count() as u64;
    let got = wait_for_count(
        &clickhouse_url(),
        &w.database,
        "SELECT count() FROM lead_events_unique",
        first_valid,
    )
    .await;
    assert_eq!(got, Some(first_valid));
    stop_collector(c1).await;

    let sources: Vec<String> = SourceKind::ALL.iter().map(|k| w.topic(*k)).collect();
    assert_committed_to_end(&group, &sources, w.partitions, "after the first stop");

    bad_at.extend(send(half..fixtures.len()).await);
    let c2 = spawn_collector(cfg.clone());
    let all_valid = valid.len() as u64;
    let got = wait_for_count(
        &clickhouse_url(),
        &w.database,
        "SELECT count() FROM lead_events_unique",
        all_valid,
    )
    .await;
    assert_eq!(got, Some(all_valid));
    let got = wait_for_count(
        &clickhouse_url(),
        &w.database,
        "SELECT count() FROM ingest_errors FINAL",
        bad.len() as u64,
    )
    .await;
    assert_eq!(got, Some(bad.len() as u64));
    stop_collector(c2).await;
    assert_committed_to_end(&group, &sources, w.partitions, "after the run");

    // Exact rows: every valid event once, with its golden values.
    let rows = query_json(
        &clickhouse_url(),
        &w.database,
        "SELECT event_id, event_type, native_id, lead_id, device_id, channel, platform, campaign_id, landing_page, \
         utm_source, utm_medium, utm_campaign, utm_content, experiment_id, variant, toString(amount) AS amount, currency, \
         cost_micros, reason, call_outcome, call_duration_sec, plan, phone_hash, email_hash, \
         toUnixTimestamp64Milli(event_time) AS event_ms, extra, source_topic FROM lead_events_unique ORDER BY event_id",
    )
    .await
    .expect("query rows");
    assert_eq!(rows.len(), valid.len());
    let by_id: BTreeMap<String, &Value> = rows
        .iter()
        .map(|r| (r["event_id"].as_str().expect("id").to_string(), r))
        .collect();
    assert_eq!(by_id.keys().cloned().collect::<BTreeSet<_>>(), expected_ids);
    for (kind, name, _) in &valid {
        let g = golden(name);
        let row = by_id[g["event_id"].as_str().expect("id")];
        let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
        for f in [
            "event_type",
            "native_id",
            "lead_id",
            "device_id",
            "channel",
            "platform",
            "campaign_id",
            "landing_page",
            "utm_source",
            "utm_medium",
            "utm_campaign",
            "utm_content",
            "experiment_id",
            "variant",
            "currency",
            "reason",
            "call_outcome",
            "plan",
            "phone_hash",
            "email_hash",
        ] {
            assert_eq!(s(&row[f]), s(&g[f]), "{name}: column {f}");
        }
        assert_eq!(
            row["source_topic"],
            Value::from(kind.canonical_topic()),
            "{name}"
        );
        let want_amount = g.get("amount").map(|a| {
            a.as_str()
                .expect("decimal string")
                .parse::<f64>()
                .expect("number")
        });
        let got_amount = row["amount"].as_str().and_then(|a| a.parse::<f64>().ok());
        assert_eq!(got_amount, want_amount, "{name}: amount");
        assert_eq!(
            row["cost_micros"].as_i64(),
            g["cost_micros"].as_i64(),
            "{name}: cost_micros"
        );
        assert_eq!(
            row["call_duration_sec"].as_u64(),
            g["call_duration_sec"].as_u64(),
            "{name}: call_duration_sec"
        );
        let want_ms = chrono::DateTime::parse_from_rfc3339(g["event_time"].as_str().expect("time"))
            .expect("rfc3339")
            .timestamp_millis();
        let got_ms = row["event_ms"]
            .as_i64()
            .or_else(|| row["event_ms"].as_str().and_then(|s| s.parse().ok()));
        assert_eq!(got_ms, Some(want_ms), "{name}: event_time");
        let extra: Value = if s(&row["extra"]).is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&s(&row["extra"])).expect("extra json")
        };
        assert_eq!(
            extra,
            g.get("extra").cloned().unwrap_or(Value::Null),
            "{name}: extra"
        );
    }

    // Exact dead letters in ClickHouse: one row per bad message, at its offset, with the golden category.
    let errs = query_json(&clickhouse_url(), &w.database, "SELECT source_topic, source_partition, source_offset, category, field FROM ingest_errors FINAL")
        .await
        .expect("errors");
    assert_eq!(errs.len(), bad.len());
    for e in &errs {
        let key = (
            e["source_topic"].as_str().expect("t").to_string(),
            e["source_partition"].as_i64().expect("p") as i32,
            e["source_offset"].as_i64().expect("o"),
        );
        let name = bad_at
            .get(&key)
            .unwrap_or_else(|| panic!("unexpected ingest error row {e}"));
        let g = golden(name);
        assert_eq!(e["category"], g["error"]["category"], "{name}");
        assert_eq!(
            e["field"].as_str().unwrap_or_default(),
            g["error"]["field"].as_str().unwrap_or_default(),
            "{name}"
        );
    }

    // Exact dead letters in the topic: original bytes, source coordinates and category in headers.
    // Replays could only add copies, never lose one; the collector ran twice without replay here.
    let dlq = read_topic(&w.dead_letter_topic(), bad.len(), WAIT).await;
    assert_eq!(dlq.len(), bad.len());
    let fixture_bytes: BTreeMap<&str, &Vec<u8>> =
        fixtures.iter().map(|f| (f.1.as_str(), &f.2)).collect();
    for m in &dlq {
        let key = (
            header(m, "ls.source_topic"),
            header(m, "ls.source_partition").parse().expect("p"),
            header(m, "ls.source_offset").parse().expect("o"),
        );
        let name = bad_at
            .get(&key)
            .unwrap_or_else(|| panic!("unexpected dead letter {key:?}"));
        assert_eq!(
            m.payload().expect("payload"),
            fixture_bytes[name.as_str()].as_slice(),
            "{name}: original bytes"
        );
        assert_eq!(
            Value::from(header(m, "ls.error_category")),
            golden(name)["error"]["category"],
            "{name}"
        );
        assert!(!header(m, "ls.error_message").is_empty());
    }

    // The aggregator's input: every valid event, keyed by lead identity. Both deliveries of a
    // native id may be published when they fell into different batches (at-least-once; the
    // aggregator drops the copy), so read until every id was seen, not a message count.
    let ids = |ms: &[rdkafka::message::OwnedMessage]| -> BTreeSet<String> {
        ms.iter()
            .map(|m| {
                let ev: leadstream_schemas::NormalizedEvent =
                    serde_json::from_slice(m.payload().expect("payload")).expect("normalized json");
                assert_eq!(m.key(), Some(ev.lead_key().as_bytes()));
                ev.event_id
            })
            .collect()
    };
    let normalized =
        read_topic_until(&w.normalized_topic(), WAIT, |ms| ids(ms) == expected_ids).await;
    assert_eq!(ids(&normalized), expected_ids);

    // A full replay (new group, from the beginning) into the same tables changes nothing users see.
    let mut replay = cfg.clone();
    replay.kafka.group_id = format!("{group}-replay");
    let c3 = spawn_collector(replay.clone());
    let caught_up = eventually(
        WAIT,
        || async {
            Some(
                committed_vs_end(&replay.kafka.group_id, &sources, w.partitions)
                    .iter()
                    .all(|(_, _, c, e)| (*c).max(0) == *e),
            )
        },
        |done| *done,
    )
    .await;
    assert_eq!(
        caught_up,
        Some(true),
        "the replay group must consume everything"
    );
    stop_collector(c3).await;
    assert_eq!(
        count(&w.database, "SELECT count() FROM lead_events_unique").await,
        Some(all_valid)
    );
    assert_eq!(
        count(&w.database, "SELECT uniqExact(event_id) FROM lead_events").await,
        Some(all_valid)
    );
    assert_eq!(
        count(&w.database, "SELECT count() FROM ingest_errors FINAL").await,
        Some(bad.len() as u64)
    );
}

/// ClickHouse goes away mid-stream: the collector stops taking messages, reports not ready, retries,
/// and once ClickHouse is back every event is there exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_outage_mid_stream_loses_nothing() {
    let w = World::new("outage", 2).await;
    let mut ch = PrivateClickHouse::start();
    let mut cfg = w.collector_config();
    cfg.clickhouse.url = ch.url.clone();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    cfg.http.listen = format!("127.0.0.1:{port}");
    let c = spawn_collector(cfg.clone());
    let p = producer();
    let topic = w.topic(SourceKind::Exposure);
    let exposure = |i: u32| {
        format!(
            r#"{{"impression_id":"imp-{i}","ts":{},"platform":"douyin","campaign_id":"c1","device_id":"dev-{i}"}}"#,
            1_763_870_400 + i
        )
    };
    for i in 0..300 {
        produce(&p, &topic, None, exposure(i).as_bytes()).await;
    }
    let n = wait_for_count(
        &ch.url,
        &w.database,
        "SELECT count() FROM lead_events_unique",
        300,
    )
    .await;
    assert_eq!(n, Some(300));

    ch.stop();
    for i in 300..600 {
        produce(&p, &topic, None, exposure(i).as_bytes()).await;
    }
    let readyz = format!("http://127.0.0.1:{port}/readyz");
    let not_ready = eventually(
        WAIT,
        || async { Some(http_status(&readyz).await) },
        |s| *s == 503,
    )
    .await;
    assert_eq!(not_ready, Some(503), "readyz must report the outage");
    tokio::time::sleep(Duration::from_secs(2)).await;

    ch.restart();
    let n = wait_for_count(
        &ch.url,
        &w.database,
        "SELECT count() FROM lead_events_unique",
        600,
    )
    .await;
    assert_eq!(n, Some(600));
    assert_eq!(
        query_u64(
            &ch.url,
            &w.database,
            "SELECT uniqExact(native_id) FROM lead_events"
        )
        .await,
        Some(600)
    );
    let ready = eventually(
        WAIT,
        || async { Some(http_status(&readyz).await) },
        |s| *s == 200,
    )
    .await;
    assert_eq!(ready, Some(200));
    let metrics = http_body(&format!("http://127.0.0.1:{port}/metrics")).await;
    assert!(
        metrics.contains("leadstream_collector_retries_total{target=\"clickhouse\"}"),
        "retries are counted"
    );
    stop_collector(c).await;
    assert_committed_to_end(
        &cfg.kafka.group_id,
        std::slice::from_ref(&topic),
        w.partitions,
        "after the run",
    );
}

/// A row the server itself refuses (here: a CHECK constraint) is dead-lettered with category
/// sink_rejected; its neighbours in the batch are stored and the partition moves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_clickhouse_rejects_are_dead_lettered_not_retried_forever() {
    let w = World::new("reject", 1).await;
    let cfg = w.collector_config();
    leadstream_collector::sink::Sink::connect(&cfg.clickhouse, "collector")
        .await
        .expect("migrate");
    clickhouse(&w.database)
        .query("ALTER TABLE lead_events ADD CONSTRAINT no_poison CHECK lead_id != 'poison-lead'")
        .execute()
        .await
        .expect("add constraint");
    let p = producer();
    let topic = w.topic(SourceKind::Signup);
    for u in ["u-ok-1", "poison-lead", "u-ok-2", "u-ok-3"] {
        let msg = format!(r#"{{"signup_id":"su-{u}","created_at":1763870400,"user_id":"{u}"}}"#);
        produce(&p, &topic, None, msg.as_bytes()).await;
    }
    let c = spawn_collector(cfg.clone());
    let errors = eventually(
        WAIT,
        || {
            count(
                &w.database,
                "SELECT count() FROM ingest_errors FINAL WHERE category = 'sink_rejected'",
            )
        },
        |n| *n >= 1,
    )
    .await;
    assert_eq!(errors, Some(1));
    assert_eq!(
        count(&w.database, "SELECT count() FROM lead_events_unique").await,
        Some(3)
    );
    assert_eq!(
        count(
            &w.database,
            "SELECT count() FROM lead_events_unique WHERE lead_id = 'poison-lead'"
        )
        .await,
        Some(0)
    );
    let dlq = read_topic(&w.dead_letter_topic(), 1, WAIT).await;
    assert_eq!(dlq.len(), 1);
    assert_eq!(header(&dlq[0], "ls.error_category"), "sink_rejected");
    assert!(
        header(&dlq[0], "ls.error_message").contains("no_poison"),
        "{}",
        header(&dlq[0], "ls.error_message")
    );
    stop_collector(c).await;
    assert_committed_to_end(
        &cfg.kafka.group_id,
        std::slice::from_ref(&topic),
        1,
        "must move past the rejected row",
    );
}

async fn http_status(url: &str) -> u16 {
    http_get(url).await.map_or(0, |(s, _)| s)
}

async fn http_body(url: &str) -> String {
    http_get(url).await.map(|(_, b)| b).unwrap_or_default()
}

/// A minimal HTTP/1.0 GET (the endpoints are plain text on loopback).
async fn http_get(url: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/')?;
    let mut s = tokio::net::TcpStream::connect(host).await.ok()?;
    s.write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    Some((
        status,
        buf.split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default(),
    ))
}
