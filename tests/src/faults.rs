//! The fault suite's harness: a generator feed produced at a pace (so faults land mid-stream),
//! the service binaries with the shipped configuration, and the one verdict every scenario ends
//! with: no valid event lost, none counted twice, `lead_events_unique` equal to the generated
//! set, every API answer equal to the truth, offsets committed to the end.

use crate::aggregator::api_matches_truth;
use crate::process::{config_file, is_alive, spawn_aggregator, spawn_collector_binary, Running};
use crate::{eventually, free_addr, metric, query_json, query_u64, World};
use leadstream_generator::truth::{Truth, TruthBuilder};
use leadstream_generator::{GeneratorConfig, Label, Schedule};
use rdkafka::producer::FutureRecord;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Leads per scenario (`LEADSTREAM_FAULT_LEADS`; the soak script raises it).
pub fn leads() -> u64 {
    std::env::var("LEADSTREAM_FAULT_LEADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500)
}

/// Kills per kill scenario (`LEADSTREAM_FAULT_KILLS`; the soak script raises it).
pub fn kills() -> usize {
    std::env::var("LEADSTREAM_FAULT_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

/// How long a scenario waits for its verdict to hold (`LEADSTREAM_FAULT_SETTLE_SECS`).
pub fn settle() -> Duration {
    Duration::from_secs(
        std::env::var("LEADSTREAM_FAULT_SETTLE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300),
    )
}

/// What a finished feed sent.
pub struct Sent {
    /// The truth of everything delivered.
    pub truth: Truth,
    /// The distinct valid event ids.
    pub ids: BTreeSet<String>,
}

/// Produces a generator run into `w`'s topics over about `seconds` (so the services are
/// mid-stream while faults happen); `tune` adjusts the generator's configuration.
pub fn feed(
    w: &World,
    seed: u64,
    leads: u64,
    seconds: f64,
    tune: impl FnOnce(&mut GeneratorConfig),
) -> tokio::task::JoinHandle<Sent> {
    let mut cfg = w.generator_config(seed, leads);
    tune(&mut cfg);
    cfg.validate().expect("feed config");
    let start = cfg
        .start_time(chrono::Utc::now())
        .expect("start")
        .timestamp_millis();
    let deliveries: Vec<_> = Schedule::new(cfg, start).collect();
    let producer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", &w.brokers)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "300000")
        .create::<rdkafka::producer::FutureProducer>()
        .expect("feed producer");
    let topics: Vec<(leadstream_schemas::SourceKind, String)> = leadstream_schemas::SourceKind::ALL
        .iter()
        .map(|k| (*k, w.topic(*k)))
        .collect();
    let pace = Duration::from_secs_f64(seconds / deliveries.len().max(1) as f64);
    tokio::spawn(async move {
        let mut truth = TruthBuilder::default();
        let mut ids = BTreeSet::new();
        let started = Instant::now();
        let mut chunk = Vec::new();
        let total = deliveries.len();
        for (i, d) in deliveries.into_iter().enumerate() {
            if let Label::Valid(e) = &d.label {
                ids.insert(e.event_id.clone());
            }
            chunk.push(d);
            if chunk.len() >= 100 || i + 1 == total {
                send_all(&producer, &topics, &chunk).await;
                for d in chunk.drain(..) {
                    leadstream_generator::record(&mut truth, d);
                }
            }
            let due = pace * (i as u32 + 1);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        Sent {
            truth: truth.finish(seed, leads),
            ids,
        }
    })
}

/// Sends `chunk` and waits until every message is acknowledged, sending the failed ones again
/// (a broker restart fails deliveries in flight; a second copy of one is a duplicate, which the
/// pipeline must absorb anyway).
async fn send_all(
    producer: &rdkafka::producer::FutureProducer,
    topics: &[(leadstream_schemas::SourceKind, String)],
    chunk: &[leadstream_generator::Delivery],
) {
    let mut pending: Vec<usize> = (0..chunk.len()).collect();
    for attempt in 0..120 {
        let sends = pending.iter().map(|&i| {
            let d = &chunk[i];
            let topic = &topics.iter().find(|(k, _)| *k == d.kind).expect("topic").1;
            let mut rec = FutureRecord::<str, [u8]>::to(topic).payload(&d.payload);
            if let Some(k) = &d.key {
                rec = rec.key(k);
            }
            async move { (i, producer.send(rec, Duration::from_secs(30)).await.is_ok()) }
        });
        pending = futures::future::join_all(sends)
            .await
            .into_iter()
            .filter(|(_, ok)| !ok)
            .map(|(i, _)| i)
            .collect();
        if pending.is_empty() {
            return;
        }
        assert!(
            attempt < 119,
            "the feed could not deliver {} messages",
            pending.len()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A service binary with its config file and HTTP address, restartable.
pub struct Service {
    /// `/metrics`, `/readyz` (and the API, for the aggregator).
    pub addr: String,
    file: PathBuf,
    aggregator: bool,
    /// The running process, if any.
    pub process: Option<Running>,
}

impl Service {
    /// A collector of `w` with the shipped configuration (HTTP on a free port).
    pub fn collector(w: &World) -> Self {
        Self::collector_with(w, |_| {})
    }

    /// A collector of `w` with the shipped configuration as `change` leaves it.
    pub fn collector_with(
        w: &World,
        change: impl FnOnce(&mut leadstream_collector::CollectorConfig),
    ) -> Self {
        let addr = free_addr();
        let mut cfg = w.collector_config();
        cfg.http.listen = addr.clone();
        change(&mut cfg);
        Self {
            addr,
            file: config_file(&cfg, "fault-collector"),
            aggregator: false,
            process: None,
        }
    }

    /// An aggregator member of `w` with the shipped configuration.
    pub fn aggregator(w: &World) -> Self {
        Self::aggregator_with(w, |_| {})
    }

    /// An aggregator member of `w` with the shipped configuration as `change` leaves it.
    pub fn aggregator_with(
        w: &World,
        change: impl FnOnce(&mut leadstream_aggregator::AggregatorConfig),
    ) -> Self {
        let addr = free_addr();
        let mut cfg = w.aggregator_config(&addr);
        change(&mut cfg);
        Self {
            file: config_file(&cfg, "fault-aggregator"),
            addr,
            aggregator: true,
            process: None,
        }
    }

    /// Partition assignments and revocations this process went through (0 while it does not
    /// answer).
    pub async fn rebalances(&self) -> f64 {
        labelled_sum(&self.addr, "leadstream_aggregator_rebalances_total").await
    }

    /// Starts the process (again).
    pub fn start(&mut self) {
        self.process = Some(if self.aggregator {
            spawn_aggregator(&self.file)
        } else {
            spawn_collector_binary(&self.file)
        });
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill9();
        }
    }

    /// SIGTERM; asserts an exit 0 within `limit`.
    pub fn terminate(&mut self, limit: Duration) {
        if let Some(mut p) = self.process.take() {
            let exit = p.terminate_within(limit);
            let what = if self.aggregator {
                "aggregator"
            } else {
                "collector"
            };
            assert!(
                exit.is_some_and(|s| s.success()),
                "SIGTERM: the {what} ({}) exits 0 within {limit:?}, got {exit:?}",
                self.addr
            );
        }
    }

    /// Messages this process consumed so far (its own counter; 0 while it does not answer).
    pub async fn consumed(&self) -> f64 {
        let name = if self.aggregator {
            "leadstream_aggregator_events_total"
        } else {
            "leadstream_collector_received_total"
        };
        labelled_sum(&self.addr, name).await
    }

    /// Waits until the running process consumed something (or 120 s): it is mid-stream.
    pub async fn wait_for_progress(&self) {
        let _ = eventually(
            Duration::from_secs(120),
            || async { Some(self.consumed().await) },
            |n| *n > 0.0,
        )
        .await;
    }

    /// Whether the process answers HTTP.
    pub async fn alive(&self) -> bool {
        is_alive(&self.addr).await
    }
}

/// The sum of every series of a (possibly labelled) metric.
pub async fn labelled_sum(addr: &str, name: &str) -> f64 {
    let text = crate::http_get_text(addr, "/metrics")
        .await
        .unwrap_or_default();
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        // `sum` of no values is -0.0, which prints as "-0".
        .fold(0.0, |a, b| a + b)
}

/// Kills `s` with SIGKILL `kills` times, each time after the running process made progress
/// and a random pause up to `max_pause` (seeded: the moments differ from kill to kill), and
/// starts it again at once.
pub async fn kill_repeatedly(s: &mut Service, kills: usize, max_pause: Duration, seed: u64) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for _ in 0..kills {
        s.wait_for_progress().await;
        let pause = rng.random_range(0..=max_pause.as_millis() as u64);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        s.kill9();
        s.start();
    }
}

/// The verdict of every scenario: waits (up to `limit`) until it holds, then asserts it.
pub async fn assert_exact(w: &World, sent: &Sent, answering: &[&str], limit: Duration) {
    let url = &w.clickhouse_url;
    let expected = sent.ids.len() as u64;
    assert_eq!(
        expected, sent.truth.messages.valid,
        "the feed's distinct ids"
    );
    let stored = eventually(
        limit,
        || async { query_u64(url, &w.database, "SELECT count() FROM lead_events_unique").await },
        |n| *n >= expected,
    )
    .await;
    assert_eq!(stored, Some(expected), "every valid event stored once");
    let rows = query_json(url, &w.database, "SELECT event_id FROM lead_events_unique")
        .await
        .expect("stored ids");
    let got: BTreeSet<String> = rows
        .iter()
        .filter_map(|r| r["event_id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(got.len(), rows.len(), "no event id stored twice");
    assert!(got == sent.ids, "lead_events_unique is the generated set");
    for addr in answering {
        let verdict = eventually(
            limit,
            || async { Some(api_matches_truth(addr, &sent.truth).await) },
            |r| r.is_ok(),
        )
        .await
        .expect("answers");
        assert_eq!(verdict, Ok(()), "the API of {addr} answers the truth");
    }
    // The dashboards' per-minute source counts each event once too (copies in other minutes
    // than the winner's hidden).
    let by_minute = eventually(
        limit,
        || async {
            query_u64(
                url,
                &w.database,
                "SELECT count() FROM lead_events_by_minute FINAL",
            )
            .await
        },
        |n| *n == expected,
    )
    .await;
    assert_eq!(
        by_minute,
        Some(expected),
        "lead_events_by_minute counts each event once"
    );
    let collector_group = w.collector_config().kafka.group_id;
    let aggregator_group = w.aggregator_config("127.0.0.1:1").kafka.group_id;
    let sources: Vec<String> = leadstream_schemas::SourceKind::ALL
        .iter()
        .map(|k| w.topic(*k))
        .collect();
    let derived = vec![w.normalized_topic(), w.stitch_topic()];
    for (group, topics) in [(collector_group, sources), (aggregator_group, derived)] {
        crate::assert_eventually_committed_to_end(
            &w.brokers,
            &group,
            &topics,
            w.partitions,
            limit,
            &format!("{group} committed every partition to the end"),
        )
        .await;
    }
}

/// Whether `/readyz` of `addr` answers 503 with a reason containing `why`.
pub async fn not_ready_because(addr: &str, why: &str) -> bool {
    crate::process::readyz(addr)
        .await
        .is_some_and(|(ready, body)| !ready && body.contains(why))
}

/// The aggregator's published count of unreadable messages.
pub async fn unreadable(addr: &str) -> f64 {
    metric(addr, "leadstream_aggregator_unreadable_messages_total").await
}
