//! `leadstream-sample-feed`: a small built-in feed for README command one. Sends the contract's
//! golden fixtures (valid and malformed, every timestamp and money form) to the source topics in
//! rounds, with ids made unique per round and event times moved to "now", so rows keep arriving.
//! The full traffic generator is a separate service.

use anyhow::{bail, Context};
use clap::Parser;
use leadstream_schemas::SourceKind;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// Sends the fixture messages under schemas/fixtures/raw to the source topics, round after round.
#[derive(Parser, Debug)]
#[command(name = "leadstream-sample-feed", version, about, long_about)]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "LEADSTREAM_KAFKA__BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    brokers: String,
    /// Directory of raw fixtures named <source>__<case>.json.
    #[arg(long, default_value = "schemas/fixtures/raw")]
    fixtures: PathBuf,
    /// Rounds to send (0 = until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    rounds: u64,
    /// Pause between rounds, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Topic-name prefix (topics are <prefix>leads.<source>).
    #[arg(long, default_value = "")]
    topic_prefix: String,
}

const ID_FIELDS: &[&str] = &[
    "impression_id",
    "click_id",
    "signup_id",
    "trial_id",
    "call_id",
    "contract_id",
    "order_id",
    "user_id",
    "lead_id",
    "device_id",
];

/// A fixture payload for `round`: valid fixtures get round-unique ids and a current event time;
/// malformed ones (`__bad_` in the name) are sent byte for byte, so they stay malformed.
fn for_round(kind: SourceKind, raw: &[u8], malformed: bool, round: u64, now_ms: i64) -> Vec<u8> {
    let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(raw) else {
        return raw.to_vec();
    };
    if malformed {
        return raw.to_vec();
    }
    for f in ID_FIELDS {
        if let Some(Value::String(s)) = obj.get_mut(*f) {
            if !s.is_empty() {
                s.push_str(&format!("-r{round}"));
            }
        }
    }
    if let Some(v) = obj.get_mut(kind.time_field()) {
        *v = Value::from(now_ms);
    }
    serde_json::to_vec(&Value::Object(obj)).unwrap_or_else(|_| raw.to_vec())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut fixtures = Vec::new();
    let dir = std::fs::read_dir(&args.fixtures)
        .with_context(|| format!("reading {}", args.fixtures.display()))?;
    for entry in dir {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let Some(kind) = name.split("__").next().and_then(SourceKind::parse) else {
            continue;
        };
        fixtures.push((kind, name.contains("__bad_"), std::fs::read(&path)?));
    }
    if fixtures.is_empty() {
        bail!(
            "no fixtures named <source>__<case>.json in {}",
            args.fixtures.display()
        );
    }
    fixtures.sort_by_key(|(k, _, _)| SourceKind::ALL.iter().position(|x| x == k));
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .create()
        .context("creating producer")?;
    let mut round = 0;
    loop {
        round += 1;
        let now_ms = chrono::Utc::now().timestamp_millis();
        for (kind, malformed, raw) in &fixtures {
            let topic = format!("{}{}", args.topic_prefix, kind.canonical_topic());
            let payload = for_round(*kind, raw, *malformed, round, now_ms);
            producer
                .send(
                    FutureRecord::<(), _>::to(&topic).payload(&payload),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)
                .with_context(|| format!("producing to {topic}"))?;
        }
        println!("round {round}: sent {} messages", fixtures.len());
        if args.rounds != 0 && round >= args.rounds {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(args.interval_ms)) => {}
        }
    }
}
