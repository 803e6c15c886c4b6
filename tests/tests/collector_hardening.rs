//! The collector against hostile input on the real stack: messages of about 1 MB (just under and
//! just over the broker's default record limit) do not stall the partitions behind them and
//! leave bounded dead letters; personal data on topics other than signups never reaches
//! ClickHouse or the normalized topic; placeholder device ids are dead-lettered.
#![allow(missing_docs)]

use leadstream_schemas::SourceKind;
use leadstream_tests::*;
use rdkafka::config::ClientConfig;
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

/// A producer that may send records far above the default 1 MB limit (as a misbehaving source
/// would, with its own settings).
fn big_producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("message.max.bytes", "4000000")
        .set("linger.ms", "1")
        .create()
        .expect("producer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_megabyte_poison_is_dead_lettered_bounded_and_stalls_nothing() {
    let w = World::new("bigpoison", 1).await;
    let topic = w.topic(SourceKind::Order);
    let p = big_producer();
    let pad = |n: usize| "x".repeat(n);
    // Just under and just over 1 MB: both above the collector's 64 KiB limit (oversized); the
    // larger one can no more be republished whole than it could be produced with defaults.
    let sizes = [1_000_000 - 200, 1_048_576 + 200];
    for (i, size) in sizes.iter().enumerate() {
        let head = format!(
            r#"{{"order_id":"big-{i}","user_id":"u-big","paid_at":1763870400,"amount_cents":1,"currency":"CNY","pad":""#
        );
        let msg = format!("{head}{}\"}}", pad(size - head.len() - 2));
        assert_eq!(msg.len(), *size);
        produce(&p, &topic, Some("u-big"), msg.as_bytes()).await;
    }
    for i in 0..10 {
        let msg = format!(
            r#"{{"order_id":"ok-{i}","user_id":"u-{i}","paid_at":1763870400,"amount_cents":100,"currency":"CNY"}}"#
        );
        produce(&p, &topic, Some(&format!("u-{i}")), msg.as_bytes()).await;
    }
    let cfg = w.collector_config();
    let c = spawn_collector(cfg.clone());
    let url = clickhouse_url();
    assert_eq!(
        wait_for_count(
            &url,
            &w.database,
            "SELECT count() FROM lead_events_unique",
            10
        )
        .await,
        Some(10),
        "the orders behind the large messages are stored"
    );
    let dlq = read_topic(&w.dead_letter_topic(), 2, WAIT).await;
    assert_eq!(dlq.len(), 2, "both large messages are dead-lettered");
    let mut seen: Vec<usize> = dlq
        .iter()
        .map(|m| {
            assert_eq!(header(m, "ls.error_category"), "oversized");
            assert_eq!(header(m, "ls.payload_truncated"), "true");
            assert_eq!(header(m, "ls.payload_sha256").len(), 64);
            let kept = m.payload().map_or(0, <[u8]>::len);
            assert_eq!(kept, leadstream_runtime::dead_letter::MAX_PAYLOAD_BYTES);
            header(m, "ls.payload_bytes").parse().expect("size header")
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, sizes, "the dead letters tell the original sizes");
    let normalized = read_topic(&w.normalized_topic(), 10, WAIT).await;
    assert_eq!(normalized.len(), 10);
    assert_eq!(
        query_u64(
            &url,
            &w.database,
            "SELECT count() FROM ingest_errors WHERE category = 'oversized' AND payload_bytes > 1000000 - 300"
        )
        .await,
        Some(2)
    );
    stop_collector(c).await;
    assert_committed_to_end(
        &cfg.kafka.group_id,
        std::slice::from_ref(&topic),
        1,
        "the partition moved past the large messages",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_data_on_any_topic_never_reaches_clickhouse_or_the_normalized_topic() {
    let w = World::new("pii", 1).await;
    let p = producer();
    let secrets = [
        "13912345678",
        "Zhang.Wei@Example.cn",
        "张伟",
        "朝阳区建国路88号",
    ];
    let call = r#"{"call_id":"c-1","lead_id":"u-1","started_at":1763871000,"direction":"inbound","duration_sec":30,"outcome":"connected","phone":"13912345678","customer":{"name":"张伟","email":"Zhang.Wei@Example.cn","address":"朝阳区建国路88号","tier":"vip"}}"#;
    let contract = r#"{"contract_id":"ct-1","lead_id":"u-1","status":"signed","amount":"100","currency":"CNY","updated_at":1763872000,"contact":{"Mobile":"13912345678","full_name":"张伟"}}"#;
    let placeholder = r#"{"impression_id":"imp-1","ts":1763870400,"platform":"douyin","campaign_id":"c","device_id":"00000000-0000-0000-0000-000000000000"}"#;
    produce(&p, &w.topic(SourceKind::Call), None, call.as_bytes()).await;
    produce(
        &p,
        &w.topic(SourceKind::Contract),
        None,
        contract.as_bytes(),
    )
    .await;
    produce(
        &p,
        &w.topic(SourceKind::Exposure),
        None,
        placeholder.as_bytes(),
    )
    .await;
    let c = spawn_collector(w.collector_config());
    let url = clickhouse_url();
    assert_eq!(
        wait_for_count(
            &url,
            &w.database,
            "SELECT count() FROM lead_events_unique",
            2
        )
        .await,
        Some(2)
    );
    let rows = query_json(&url, &w.database, "SELECT * FROM lead_events_unique")
        .await
        .expect("rows")
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    let published: String = read_topic(&w.normalized_topic(), 2, WAIT)
        .await
        .iter()
        .map(|m| String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string())
        .collect();
    for secret in secrets {
        assert!(
            !rows.contains(secret),
            "{secret} reached ClickHouse: {rows}"
        );
        assert!(
            !published.contains(secret),
            "{secret} reached the normalized topic: {published}"
        );
    }
    assert!(rows.contains("vip"), "other extra attributes stay: {rows}");
    assert_eq!(
        query_u64(
            &url,
            &w.database,
            "SELECT count() FROM lead_events_unique WHERE event_type = 'call' AND length(phone_hash) = 64"
        )
        .await,
        Some(1),
        "the call's phone is kept as its salted hash"
    );
    let dlq = read_topic(&w.dead_letter_topic(), 1, WAIT).await;
    assert_eq!(dlq.len(), 1);
    assert_eq!(header(&dlq[0], "ls.error_category"), "invalid_id");
    assert_eq!(header(&dlq[0], "ls.error_field"), "device_id");
    stop_collector(c).await;
}
