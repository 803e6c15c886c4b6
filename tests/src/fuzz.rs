//! A structured mutation fuzzer over the two decoders that face untrusted bytes: the collector's
//! normalizer (every source topic) and the aggregator's reader of the normalized and stitching
//! topics, with every event it accepts fed through a real engine. Seeds are the golden raw
//! fixtures, the generator's wire forms (valid and malformed) and the normalized events of
//! those; mutations flip and splice bytes, change JSON types and values, add personal-data and
//! placeholder keys, and nest deeply. What must hold for every input:
//!
//! - nothing panics (the runner catches a panic and reports the input that caused it);
//! - whatever the normalizer accepts, the aggregator's decoder accepts after the collector's
//!   serialization (the two ends agree on the contract), and it holds no personal-data key.
//!
//! `fuzz` (a binary of this crate) runs a fixed budget and prints the figures; a test runs a
//! short budget in the test command.

use leadstream_aggregator::{decode, Engine, Funnels};
use leadstream_generator::{Delivery, GeneratorConfig, Schedule};
use leadstream_schemas::{
    ChannelRules, Normalizer, NormalizerConfig, Screening, Secret, SourceKind, SourceMeta,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a run did.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Inputs tried (each through the normalizer and the aggregator's decoders).
    pub inputs: u64,
    /// Normalizer verdicts: accepted.
    pub accepted: u64,
    /// Normalizer verdicts: rejected (by any category).
    pub rejected: u64,
    /// Inputs the aggregator's decoder read as a normalized event (and its engine ingested).
    pub decoded: u64,
    /// Seeds the mutations start from.
    pub seeds: usize,
    /// Wall time.
    pub elapsed: Duration,
    /// Violations found: a panic or a broken agreement, with the input (lossy UTF-8, cut).
    pub failures: Vec<String>,
}

fn normalizer() -> Normalizer {
    let rules = std::fs::read_to_string(crate::repo_root().join("config/channels.yaml"))
        .expect("config/channels.yaml");
    Normalizer::new(NormalizerConfig {
        channel_rules: ChannelRules::from_yaml(&rules).expect("channel rules"),
        time_zone: chrono_tz::Asia::Shanghai,
        pii_salt: Secret::new("fuzz-salt".into()),
        max_message_bytes: leadstream_schemas::DEFAULT_MAX_MESSAGE_BYTES,
        screening: Screening::default(),
    })
}

fn funnels() -> Arc<Funnels> {
    Arc::new(Funnels::load(&crate::repo_root().join("config/funnel.yaml")).expect("funnels"))
}

/// The seeds: (kind, bytes).
fn seeds(n: &Normalizer) -> Vec<(SourceKind, Vec<u8>)> {
    let mut out: Vec<(SourceKind, Vec<u8>)> = crate::raw_fixtures()
        .into_iter()
        .map(|(k, _, b)| (k, b))
        .collect();
    let mut g = GeneratorConfig {
        seed: 99,
        ..Default::default()
    };
    g.traffic.leads = 300;
    g.realism.poison_share = 0.2;
    g.realism.max_message_bytes = 4096;
    let start = chrono::DateTime::parse_from_rfc3339("2026-11-02T09:00:00+08:00")
        .expect("time")
        .timestamp_millis();
    for Delivery { kind, payload, .. } in Schedule::new(g, start).take(3000) {
        out.push((kind, payload.to_vec()));
    }
    // Normalized events too, so the aggregator's decoder gets near-valid inputs to chew on.
    let meta = |kind| SourceMeta {
        kind,
        partition: 0,
        offset: 0,
        received_at: chrono::Utc::now(),
    };
    let normalized: Vec<(SourceKind, Vec<u8>)> = out
        .iter()
        .filter_map(|(k, b)| {
            let e = n.normalize(&meta(*k), b).ok()?;
            Some((*k, serde_json::to_vec(&e).ok()?))
        })
        .step_by(5)
        .collect();
    out.extend(normalized);
    out.push((SourceKind::Signup, br#"{"recheck":"u-1"}"#.to_vec()));
    out
}

const KEYS: &[&str] = &[
    "event_id",
    "lead_id",
    "device_id",
    "user_id",
    "phone",
    "email",
    "name",
    "customer",
    "extra",
    "event_time",
    "ts",
    "amount",
    "amount_cents",
    "currency",
    "status",
    "outcome",
    "recheck",
    "utm",
    "experiment",
    "landing_url",
];

fn random_value(rng: &mut ChaCha8Rng, depth: u32) -> Value {
    match rng.random_range(0..14) {
        0 => Value::Null,
        1 => Value::Bool(rng.random()),
        2 => Value::from(rng.random::<i64>()),
        3 => Value::from(rng.random::<f64>() * 1e20 - 1e19),
        4 => Value::from(rng.random_range(946_684_800_000i64..4_102_444_800_000)),
        5 => Value::from("00000000-0000-0000-0000-000000000000"),
        6 => Value::from("unknown"),
        7 => Value::from("é".repeat(rng.random_range(1..40))),
        8 => Value::from("x".repeat(rng.random_range(0..300))),
        9 => Value::from("0123456789abcdef0123456789abcdef"),
        10 => Value::from("2026-11-02 09:00:00"),
        11 if depth < 40 => Value::Array(
            (0..rng.random_range(0..3))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        12 if depth < 40 => {
            let mut m = Map::new();
            for _ in 0..rng.random_range(0..3) {
                let k = KEYS[rng.random_range(0..KEYS.len())].to_string();
                m.insert(k, random_value(rng, depth + 1));
            }
            Value::Object(m)
        }
        _ => Value::from("🔥\u{0}\u{7f}\"\\"),
    }
}

/// One JSON-aware change: a key's value replaced, a key removed or added.
fn mutate_json(v: &mut Value, rng: &mut ChaCha8Rng) {
    let Value::Object(m) = v else {
        *v = random_value(rng, 0);
        return;
    };
    let keys: Vec<String> = m.keys().cloned().collect();
    match rng.random_range(0..4) {
        0 if !keys.is_empty() => {
            let k = &keys[rng.random_range(0..keys.len())];
            m.insert(k.clone(), random_value(rng, 0));
        }
        1 if !keys.is_empty() => {
            m.remove(&keys[rng.random_range(0..keys.len())]);
        }
        2 if !keys.is_empty() => {
            let k = &keys[rng.random_range(0..keys.len())];
            if let Some(Value::Object(inner)) = m.get_mut(k) {
                inner.insert("name".into(), Value::from("张三"));
            } else {
                m.insert(
                    k.clone(),
                    Value::Object(Map::from_iter([(
                        "phone".to_string(),
                        Value::from("13800138000"),
                    )])),
                );
            }
        }
        _ => {
            let k = KEYS[rng.random_range(0..KEYS.len())].to_string();
            m.insert(k, random_value(rng, 0));
        }
    }
}

fn mutate(seed: &[u8], other: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..rng.random_range(1..4) {
        match rng.random_range(0..9) {
            0..=2 => {
                if let Ok(mut v) = serde_json::from_slice::<Value>(&b) {
                    mutate_json(&mut v, rng);
                    b = serde_json::to_vec(&v).unwrap_or_default();
                }
            }
            3 if !b.is_empty() => {
                let i = rng.random_range(0..b.len());
                b[i] ^= 1 << rng.random_range(0..8);
            }
            4 if !b.is_empty() => {
                let i = rng.random_range(0..b.len());
                b.truncate(i);
            }
            5 => {
                let i = rng.random_range(0..=b.len());
                const TOKENS: [&[u8]; 9] = [
                    b"{", b"[", b"\"", b"\\u0000", b",", b"}", b"]", b"\xff", b"null",
                ];
                let tok = TOKENS[rng.random_range(0..TOKENS.len())];
                b.splice(i..i, tok.iter().copied());
            }
            6 if !other.is_empty() => {
                let (i, j) = (
                    rng.random_range(0..=b.len()),
                    rng.random_range(0..other.len()),
                );
                b.truncate(i);
                b.extend_from_slice(&other[j..]);
            }
            7 => {
                let d = rng.random_range(1..140);
                let mut w = "[".repeat(d).into_bytes();
                w.extend_from_slice(&b);
                w.extend(std::iter::repeat_n(b']', d));
                b = w;
            }
            _ => {
                if let Ok(Value::Object(mut m)) = serde_json::from_slice::<Value>(&b) {
                    let mut nest = random_value(rng, 0);
                    for _ in 0..rng.random_range(20..40) {
                        nest = Value::Array(vec![nest]);
                    }
                    m.insert("deep".into(), nest);
                    b = serde_json::to_vec(&Value::Object(m)).unwrap_or_default();
                }
            }
        }
    }
    b
}

fn excerpt(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(300)]).to_string()
}

/// Runs `inputs` mutated inputs from `seed`.
pub fn run(inputs: u64, seed: u64) -> Report {
    let n = normalizer();
    let corpus = seeds(&n);
    let funnels = funnels();
    let mut engine = Engine::new(funnels.clone(), 3_600_000);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut report = Report {
        seeds: corpus.len(),
        ..Report::default()
    };
    let screening = Screening::default();
    let started = Instant::now();
    let mut version = 1u64;
    for i in 0..inputs {
        let (kind, base) = &corpus[rng.random_range(0..corpus.len())];
        let other = &corpus[rng.random_range(0..corpus.len())].1;
        let input = mutate(base, other, &mut rng);
        let kind = if rng.random_bool(0.8) {
            *kind
        } else {
            SourceKind::ALL[rng.random_range(0..SourceKind::ALL.len())]
        };
        let meta = SourceMeta {
            kind,
            partition: 0,
            offset: i as i64,
            received_at: chrono::Utc::now(),
        };
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let mut failure = None;
            match n.normalize(&meta, &input) {
                Ok(e) => {
                    report.accepted += 1;
                    let wire = serde_json::to_vec(&e).unwrap_or_default();
                    if let Err(why) = decode::normalized(Some(&wire)) {
                        failure = Some(format!("the aggregator refuses a collector event ({why})"));
                    }
                    if e.extra
                        .keys()
                        .any(|k| screening.pii_keys.iter().any(|p| p.eq_ignore_ascii_case(k)))
                    {
                        failure = Some("personal data kept in extra".into());
                    }
                }
                Err(_) => report.rejected += 1,
            }
            if let Ok(e) = decode::normalized(Some(&input)) {
                report.decoded += 1;
                engine.ingest(&e, 0);
            }
            let _ = decode::recheck(Some(&input));
            if i % 4096 == 4095 {
                version += 1;
                let _ = engine.flush(version);
                if engine.leads_held() > 50_000 {
                    engine = Engine::new(funnels.clone(), 3_600_000);
                }
            }
            failure
        }));
        report.inputs += 1;
        match outcome {
            Ok(None) => {}
            Ok(Some(why)) => report.failures.push(format!("{why}: {}", excerpt(&input))),
            Err(_) => {
                report
                    .failures
                    .push(format!("panic on {kind:?}: {}", excerpt(&input)));
                engine = Engine::new(funnels.clone(), 3_600_000);
            }
        }
        if report.failures.len() >= 20 {
            break;
        }
    }
    report.elapsed = started.elapsed();
    report
}
