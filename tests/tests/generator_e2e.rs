//! The generator's seeded traffic through the real broker, the collector and ClickHouse: exactly
//! the valid events once each, and dead letters exactly as the truth counts them.
#![allow(missing_docs)]

use leadstream_generator::{run, Destination, RunOptions};
use leadstream_schemas::SourceKind;
use leadstream_tests::*;
use std::collections::{BTreeMap, BTreeSet};

fn counts(rows: Vec<serde_json::Value>) -> BTreeMap<String, u64> {
    rows.into_iter()
        .map(|r| {
            let k = r["k"].as_str().expect("key").to_string();
            let n = r["n"]
                .as_u64()
                .or_else(|| r["n"].as_str()?.parse().ok())
                .expect("count");
            (k, n)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_traffic_lands_exactly_once_and_dead_letters_match_the_truth() {
    let w = World::new("generator", 3).await;
    let mut g = w.generator_config(2026, 3000);
    // More of every irregularity than by default, so each is exercised many times.
    g.realism.late_share = 0.1;
    g.realism.duplicate_share = 0.05;
    g.realism.poison_share = 0.03;
    let truth_file = output_dir().join("generator_e2e.truth.json");
    let opts = RunOptions {
        destination: Destination::Kafka,
        truth_file: Some(truth_file.clone()),
        progress: false,
    };
    let report = run(g, opts, Default::default())
        .await
        .expect("generator run");
    let truth = &report.truth;
    let m = &truth.messages;
    assert!(
        m.valid > 10_000 && m.duplicates > 300 && m.poison > 200 && m.late > 500,
        "{m:?}"
    );
    assert_eq!(
        m.poison_by_category.len(),
        11,
        "every malformed kind: {m:?}"
    );
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&truth_file).expect("truth file")).expect("json");
    assert_eq!(written["messages"]["valid"].as_u64(), Some(m.valid));

    // Every message the generator counted is in the topics.
    let sources: Vec<String> = SourceKind::ALL.iter().map(|k| w.topic(*k)).collect();
    let in_topics: i64 = committed_vs_end("nobody", &sources, w.partitions)
        .iter()
        .map(|(_, _, _, end)| end)
        .sum();
    assert_eq!(in_topics as u64, m.sent);

    let cfg = w.collector_config();
    let group = cfg.kafka.group_id.clone();
    let collector = spawn_collector(cfg);
    let url = clickhouse_url();
    let db = &w.database;
    let got = wait_for_count(&url, db, "SELECT count() FROM lead_events_unique", m.valid).await;
    assert_eq!(got, Some(m.valid), "valid events in ClickHouse");
    let dead = wait_for_count(
        &url,
        db,
        "SELECT count() FROM ingest_errors FINAL",
        m.poison,
    )
    .await;
    assert_eq!(dead, Some(m.poison), "dead letters in ClickHouse");
    assert_eventually_committed_to_end(
        &w.brokers,
        &group,
        &sources,
        w.partitions,
        std::time::Duration::from_secs(90),
        "the collector committed every source partition",
    )
    .await;
    stop_collector(collector).await;

    // Exactly the valid events, once each: the same ids, no more rows than ids.
    let rows = query_json(&url, db, "SELECT event_id FROM lead_events_unique")
        .await
        .expect("ids");
    let stored: Vec<String> = rows
        .iter()
        .map(|r| r["event_id"].as_str().expect("id").to_string())
        .collect();
    let unique: BTreeSet<&String> = stored.iter().collect();
    assert_eq!(unique.len(), stored.len(), "an event is stored twice");
    let expected: BTreeSet<&String> = report.events.iter().map(|e| &e.event_id).collect();
    assert_eq!(expected.len() as u64, m.valid);
    assert!(
        unique == expected,
        "stored ids differ from the generated valid events"
    );

    let by_type = counts(
        query_json(
            &url,
            db,
            "SELECT event_type AS k, count() AS n FROM lead_events_unique GROUP BY k",
        )
        .await
        .expect("by type"),
    );
    assert_eq!(by_type, m.valid_by_event_type);
    let by_category = counts(
        query_json(
            &url,
            db,
            "SELECT category AS k, count() AS n FROM ingest_errors FINAL GROUP BY k",
        )
        .await
        .expect("by category"),
    );
    assert_eq!(by_category, m.poison_by_category);
    // No personal data in clear: the generator wrote Chinese names and phone numbers.
    let leaks = query_u64(
        &url,
        db,
        "SELECT count() FROM lead_events_unique WHERE extra LIKE '%\"name\"%' OR extra LIKE '%+86%'",
    )
    .await;
    assert_eq!(leaks, Some(0));
}
