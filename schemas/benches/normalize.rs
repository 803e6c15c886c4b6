//! Normalize-and-encode throughput per source topic, on one core.
//!
//! "Encode" is the JSON serialization the collector publishes to `leads.normalized`; the
//! ClickHouse RowBinary encoding is done by the `clickhouse` crate and measured end to end.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use leadstream_schemas::{
    ChannelRules, Normalizer, NormalizerConfig, Secret, SourceKind, SourceMeta,
};

fn payloads() -> Vec<(SourceKind, &'static str)> {
    vec![
        (
            SourceKind::Exposure,
            r#"{"impression_id":"imp-8842","ts":1763870400123,"platform":"douyin","campaign_id":"cmp-7","device_id":"dev-1f3a","adgroup_id":"ag-2","creative_id":"cr-9","cost_micros":1200}"#,
        ),
        (
            SourceKind::AdClick,
            r#"{"click_id":"clk-1","clicked_at":"2025-11-23T12:00:01+08:00","platform":"wechat","device_id":"dev-1f3a","landing_url":"https://shop.example.com/lp/spring?utm_source=wechat&utm_medium=cpc&utm_campaign=spring&utm_content=banner&ab=B","campaign_id":"cmp-7","cost_micros":"5300"}"#,
        ),
        (
            SourceKind::Signup,
            r#"{"signup_id":"su-1","created_at":"2025-11-23 12:05:00","user_id":"u-100","device_id":"dev-1f3a","phone":"+86 138-0013-8000","email":"Li.Wei@Example.com","name":"李伟","utm":{"source":"wechat","medium":"cpc","campaign":"spring"},"experiment":{"id":"lp-test","variant":"B"}}"#,
        ),
        (
            SourceKind::Trial,
            r#"{"trial_id":"tr-1","event":"trial_started","user_id":"u-100","at":"1763870700","plan":"pro"}"#,
        ),
        (
            SourceKind::Call,
            r#"{"call_id":"call-1","lead_id":"u-100","started_at":1763871000,"direction":"outbound","duration_sec":184,"outcome":"qualified","agent_id":"agent-7"}"#,
        ),
        (
            SourceKind::Contract,
            r#"{"contract_id":"ct-1","lead_id":"u-100","status":"signed","amount":"12800.00","currency":"CNY","updated_at":"2025-11-23T05:00:00Z"}"#,
        ),
        (
            SourceKind::Order,
            r#"{"order_id":"ord-1","user_id":"u-100","paid_at":"2025-11-23T05:10:00Z","amount_cents":19900,"currency":"cny"}"#,
        ),
    ]
}

fn bench(c: &mut Criterion) {
    let rules = ChannelRules::from_yaml(include_str!("../../config/channels.yaml"))
        .expect("config/channels.yaml is valid");
    let n = Normalizer::new(NormalizerConfig {
        channel_rules: rules,
        time_zone: chrono_tz::Asia::Shanghai,
        pii_salt: Secret::new("bench-salt".into()),
        max_message_bytes: leadstream_schemas::DEFAULT_MAX_MESSAGE_BYTES,
        screening: Default::default(),
    });
    let received_at =
        chrono::DateTime::from_timestamp_millis(1_763_871_000_000).expect("valid time");
    let all = payloads();
    let mut g = c.benchmark_group("normalize_and_encode");
    for (kind, payload) in &all {
        let meta = SourceMeta {
            kind: *kind,
            partition: 0,
            offset: 42,
            received_at,
        };
        g.throughput(Throughput::Elements(1));
        g.bench_function(kind.as_str(), |b| {
            b.iter(|| {
                let ev = n
                    .normalize(&meta, payload.as_bytes())
                    .expect("bench payload is valid");
                serde_json::to_vec(&ev).expect("serializable")
            })
        });
    }
    // The average payload: one of each topic per iteration.
    g.throughput(Throughput::Elements(all.len() as u64));
    g.bench_function("mixed", |b| {
        b.iter(|| {
            for (kind, payload) in &all {
                let meta = SourceMeta {
                    kind: *kind,
                    partition: 0,
                    offset: 42,
                    received_at,
                };
                let ev = n
                    .normalize(&meta, payload.as_bytes())
                    .expect("bench payload is valid");
                std::hint::black_box(serde_json::to_vec(&ev).expect("serializable"));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
