//! Shared harness for the integration tests: connection settings of the stack that
//! `scripts/test.sh` started, unique names per test, Kafka and ClickHouse helpers.
//!
//! Tests share one stack per run and isolate themselves by database and topic names.

pub mod aggregator;
pub mod browser;
pub mod faults;
pub mod fuzz;
pub mod grafana;
pub mod process;
pub mod servers;

pub use servers::{PrivateBroker, PrivateClickHouse};

use leadstream_collector::CollectorConfig;
use leadstream_schemas::{Secret, SourceKind};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Kafka bootstrap servers of the test stack.
pub fn brokers() -> String {
    std::env::var("LEADSTREAM_KAFKA__BROKERS")
        .expect("LEADSTREAM_KAFKA__BROKERS is unset: run the tests with scripts/test.sh")
}

/// ClickHouse URL of the test stack.
pub fn clickhouse_url() -> String {
    std::env::var("LEADSTREAM_CLICKHOUSE__URL")
        .expect("LEADSTREAM_CLICKHOUSE__URL is unset: run the tests with scripts/test.sh")
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A name unique to this process and call, safe for topics and databases.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis() % 1_000_000,
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// One test's world: a database and a set of source topics of its own, on the shared stack
/// or on servers of the test's own.
pub struct World {
    /// ClickHouse database.
    pub database: String,
    /// Topic prefix; source topics are `<prefix>.leads.<source>`.
    pub prefix: String,
    /// Partitions per topic.
    pub partitions: i32,
    /// The broker's bootstrap servers.
    pub brokers: String,
    /// ClickHouse's URL.
    pub clickhouse_url: String,
}

impl World {
    /// Creates the topics (7 sources, normalized, dead letters, stitching) on the shared broker.
    pub async fn new(name: &str, partitions: i32) -> Self {
        Self::on(name, partitions, &brokers(), &clickhouse_url()).await
    }

    /// Like [`World::new`], on the broker `brokers` and the ClickHouse at `clickhouse_url`.
    pub async fn on(name: &str, partitions: i32, brokers: &str, clickhouse_url: &str) -> Self {
        let id = unique(name);
        let w = World {
            database: format!("db_{id}"),
            prefix: id,
            partitions,
            brokers: brokers.to_string(),
            clickhouse_url: clickhouse_url.to_string(),
        };
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()
            .expect("admin client");
        let names: Vec<String> = SourceKind::ALL
            .iter()
            .map(|k| w.topic(*k))
            .chain([
                w.normalized_topic(),
                w.dead_letter_topic(),
                w.stitch_topic(),
            ])
            .collect();
        let topics: Vec<NewTopic<'_>> = names
            .iter()
            .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1)))
            .collect();
        let results = admin
            .create_topics(&topics, &AdminOptions::new())
            .await
            .expect("create topics");
        for r in results {
            if let Err((t, e)) = r {
                panic!("creating topic {t}: {e}");
            }
        }
        w
    }

    /// The source topic of a kind.
    pub fn topic(&self, k: SourceKind) -> String {
        format!("{}.{}", self.prefix, k.canonical_topic())
    }

    /// The normalized topic.
    pub fn normalized_topic(&self) -> String {
        format!("{}.leads.normalized", self.prefix)
    }

    /// The dead-letter topic.
    pub fn dead_letter_topic(&self) -> String {
        format!("{}.leads.dlq", self.prefix)
    }

    /// The aggregator members' stitching topic.
    pub fn stitch_topic(&self) -> String {
        format!("{}.leads.stitch", self.prefix)
    }

    /// A collector configuration for this world: the shipped defaults (= `config/collector.yaml`:
    /// group layout and Kafka properties included) pointed at the world's topics and database,
    /// with fast flushes and HTTP off.
    pub fn collector_config(&self) -> CollectorConfig {
        let mut c = CollectorConfig::default();
        c.kafka.brokers = self.brokers.clone();
        c.kafka.group_id = format!("{}-{}", self.prefix, c.kafka.group_id);
        c.kafka.topics = SourceKind::ALL
            .iter()
            .map(|k| (self.topic(*k), *k))
            .collect();
        c.kafka.normalized_topic = self.normalized_topic();
        c.kafka.dead_letter_topic = self.dead_letter_topic();
        c.clickhouse.url = self.clickhouse_url.clone();
        c.clickhouse.database = self.database.clone();
        c.normalize.channels_file = repo_root().join("config/channels.yaml");
        c.normalize.pii_salt = Some(Secret::new("golden-salt".into()));
        c.batch.flush_interval_ms = 200;
        c.retry.max_backoff_ms = 1000;
        c.http.listen = String::new();
        c.validate().expect("test config is valid");
        c
    }
}

impl World {
    /// A generator configuration producing `leads` leads with `seed` into this world's topics.
    pub fn generator_config(&self, seed: u64, leads: u64) -> leadstream_generator::GeneratorConfig {
        let mut g = leadstream_generator::GeneratorConfig {
            seed,
            ..Default::default()
        };
        g.traffic.leads = leads;
        g.kafka.brokers = self.brokers.clone();
        g.kafka.topic_prefix = format!("{}.", self.prefix);
        g.validate().expect("test generator config is valid");
        g
    }
}

/// The folder for files tests leave behind for people to look at (`tests/output`, git-ignored).
pub fn output_dir() -> PathBuf {
    let d = repo_root().join("tests/output");
    std::fs::create_dir_all(&d).expect("create tests/output");
    d
}

/// A plain producer on the shared broker.
pub fn producer() -> FutureProducer {
    producer_on(&brokers())
}

/// A plain producer on `brokers`.
pub fn producer_on(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "1")
        .create()
        .expect("producer")
}

/// Produces one message and waits for the acknowledgement; returns (partition, offset).
pub async fn produce(
    p: &FutureProducer,
    topic: &str,
    key: Option<&str>,
    payload: &[u8],
) -> (i32, i64) {
    let mut rec = FutureRecord::<str, [u8]>::to(topic).payload(payload);
    if let Some(k) = key {
        rec = rec.key(k);
    }
    let d = p
        .send(rec, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .expect("produce");
    (d.partition, d.offset)
}

/// A ClickHouse client on the world's database.
pub fn clickhouse(database: &str) -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(clickhouse_url())
        .with_database(database)
        .with_option("network_compression_method", "lz4")
}

/// Runs a query and returns its rows as JSON objects (JSONEachRow).
pub async fn query_json(
    url: &str,
    database: &str,
    sql: &str,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let client = clickhouse::Client::default()
        .with_url(url)
        .with_database(database)
        .with_option("network_compression_method", "lz4");
    let mut cursor = client.query(sql).fetch_bytes("JSONEachRow")?;
    let mut buf = Vec::new();
    while let Some(chunk) = cursor.next().await? {
        buf.extend_from_slice(&chunk);
    }
    buf.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| Ok(serde_json::from_slice(l)?))
        .collect()
}

/// A single number from a query, or None while the query fails (e.g. table not created yet).
pub async fn query_u64(url: &str, database: &str, sql: &str) -> Option<u64> {
    let rows = query_json(url, database, sql).await.ok()?;
    let v = rows.first()?.as_object()?.values().next()?.clone();
    v.as_u64().or_else(|| v.as_str()?.parse().ok())
}

/// Polls `probe` until it returns `Some(v)` with `pred(v)` or `limit` passes; returns the last value.
/// A functional wait (the data must arrive), not a speed assertion: the limit is generous.
pub async fn eventually<T, F, Fut>(
    limit: Duration,
    mut probe: F,
    pred: impl Fn(&T) -> bool,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < limit {
        if let Some(v) = probe().await {
            if pred(&v) {
                return Some(v);
            }
            last = Some(v);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    last
}

/// The raw fixtures of the data contract: (kind, file name, bytes).
pub fn raw_fixtures() -> Vec<(SourceKind, String, Vec<u8>)> {
    let dir = repo_root().join("schemas/fixtures/raw");
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .expect("fixtures")
        .map(|e| {
            let p = e.expect("entry").path();
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .expect("name")
                .to_string();
            let kind = SourceKind::parse(name.split("__").next().expect("prefix")).expect("kind");
            (kind, name, std::fs::read(&p).expect("read"))
        })
        .collect();
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out
}

/// The golden normalized output of a fixture.
pub fn golden(name: &str) -> serde_json::Value {
    let p = repo_root().join("schemas/fixtures/normalized").join(name);
    serde_json::from_str(&std::fs::read_to_string(p).expect("golden")).expect("json")
}

/// Runs the collector in-process until the returned token is cancelled.
pub fn spawn_collector(
    cfg: CollectorConfig,
) -> (
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let token = tokio_util::sync::CancellationToken::new();
    let t = token.clone();
    let h = tokio::spawn(async move {
        leadstream_collector::run(cfg, t)
            .await
            .expect("collector run")
    });
    (token, h)
}

/// Stops an in-process collector and waits for it to finish its flush and commit.
pub async fn stop_collector(
    (token, handle): (
        tokio_util::sync::CancellationToken,
        tokio::task::JoinHandle<()>,
    ),
) {
    token.cancel();
    tokio::time::timeout(Duration::from_secs(30), handle)
        .await
        .expect("collector stops")
        .expect("collector task");
}

/// For every partition of `topics`: (committed offset of `group`, high watermark).
pub fn committed_vs_end(
    group: &str,
    topics: &[String],
    partitions: i32,
) -> Vec<(String, i32, i64, i64)> {
    committed_vs_end_on(&brokers(), group, topics, partitions)
}

/// [`committed_vs_end`] on `brokers`.
pub fn committed_vs_end_on(
    brokers: &str,
    group: &str,
    topics: &[String],
    partitions: i32,
) -> Vec<(String, i32, i64, i64)> {
    try_committed_vs_end_on(brokers, group, topics, partitions).expect("committed offsets")
}

/// [`committed_vs_end`], or the broker's error (a busy broker may time a request out: a
/// benchmark polling it asks again).
pub fn try_committed_vs_end(
    group: &str,
    topics: &[String],
    partitions: i32,
) -> Result<Vec<(String, i32, i64, i64)>, rdkafka::error::KafkaError> {
    try_committed_vs_end_on(&brokers(), group, topics, partitions)
}

fn try_committed_vs_end_on(
    brokers: &str,
    group: &str,
    topics: &[String],
    partitions: i32,
) -> Result<Vec<(String, i32, i64, i64)>, rdkafka::error::KafkaError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for t in topics {
        for p in 0..partitions {
            tpl.add_partition(t, p);
        }
    }
    let committed = c.committed_offsets(tpl, Duration::from_secs(10))?;
    committed
        .elements()
        .iter()
        .map(|e| {
            let (_, high) =
                c.fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(10))?;
            let off = match e.offset() {
                Offset::Offset(o) => o,
                _ => -1,
            };
            Ok((e.topic().to_string(), e.partition(), off, high))
        })
        .collect()
}

/// Reads `count` messages from the beginning of `topic` (or fewer if `limit` passes first).
pub async fn read_topic(
    topic: &str,
    count: usize,
    limit: Duration,
) -> Vec<rdkafka::message::OwnedMessage> {
    read_topic_until(topic, limit, |m| m.len() >= count).await
}

/// Reads `topic` from the beginning until `done` holds for what was read (or `limit` passes).
pub async fn read_topic_until(
    topic: &str,
    limit: Duration,
    done: impl Fn(&[rdkafka::message::OwnedMessage]) -> bool,
) -> Vec<rdkafka::message::OwnedMessage> {
    read_topic_until_on(&brokers(), topic, limit, done).await
}

/// [`read_topic_until`] on `brokers`.
pub async fn read_topic_until_on(
    brokers: &str,
    topic: &str,
    limit: Duration,
    done: impl Fn(&[rdkafka::message::OwnedMessage]) -> bool,
) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    c.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    let start = Instant::now();
    while !done(&out) && start.elapsed() < limit {
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(500), c.recv()).await {
            out.push(m.detach());
        }
    }
    out
}

/// A header of a consumed message as text (empty when absent).
pub fn header(m: &rdkafka::message::OwnedMessage, key: &str) -> String {
    use rdkafka::message::{Headers, Message};
    m.headers()
        .and_then(|h| {
            h.iter()
                .find(|x| x.key == key)
                .and_then(|x| x.value.map(|v| String::from_utf8_lossy(v).to_string()))
        })
        .unwrap_or_default()
}

/// Waits until `sql` (a single count) on `url`/`database` reaches at least `n`; returns the last value seen.
pub async fn wait_for_count(url: &str, database: &str, sql: &str, n: u64) -> Option<u64> {
    eventually(
        Duration::from_secs(90),
        || query_u64(url, database, sql),
        |v| *v >= n,
    )
    .await
}

/// Asserts that `group` committed every partition of `topics` up to its end.
pub fn assert_committed_to_end(group: &str, topics: &[String], partitions: i32, context: &str) {
    for (t, part, committed, end) in committed_vs_end(group, topics, partitions) {
        assert_eq!(
            committed.max(0),
            end,
            "{context}: {t}[{part}] committed offset must reach the end"
        );
    }
}

/// Waits (up to `limit`) until `group` on `brokers` committed every partition of `topics` up to
/// its end, then asserts it, naming `context` and every partition's offsets.
pub async fn assert_eventually_committed_to_end(
    brokers: &str,
    group: &str,
    topics: &[String],
    partitions: i32,
    limit: Duration,
    context: &str,
) {
    let done = eventually(
        limit,
        || async {
            Some(
                committed_vs_end_on(brokers, group, topics, partitions)
                    .iter()
                    .all(|(_, _, committed, end)| committed.max(&0) == end),
            )
        },
        |done| *done,
    )
    .await;
    assert_eq!(
        done,
        Some(true),
        "{context}: {:?}",
        committed_vs_end_on(brokers, group, topics, partitions)
    );
}

impl World {
    /// An aggregator configuration for this world, serving on `listen`: the shipped defaults
    /// (= `config/aggregator.yaml`: its own consumer group, the shipped Kafka properties)
    /// pointed at the world's topics and database, with fast flushes.
    pub fn aggregator_config(&self, listen: &str) -> leadstream_aggregator::AggregatorConfig {
        let mut c = leadstream_aggregator::AggregatorConfig::default();
        c.kafka.brokers = self.brokers.clone();
        c.kafka.group_id = format!("{}-{}", self.prefix, c.kafka.group_id);
        c.kafka.topic = self.normalized_topic();
        c.kafka.stitch_topic = self.stitch_topic();
        c.kafka.dead_letter_topic = self.dead_letter_topic();
        c.clickhouse.url = self.clickhouse_url.clone();
        c.clickhouse.database = self.database.clone();
        c.funnels.file = repo_root().join("config/funnel.yaml");
        c.batch.flush_interval = Duration::from_millis(200);
        c.api.listen = listen.into();
        c.validate().expect("test aggregator config is valid");
        c
    }
}

/// A free local TCP address (`127.0.0.1:port`).
pub fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    format!("127.0.0.1:{port}")
}

/// GET `path` from `addr`: the body, or None while the server does not answer 200.
pub async fn http_get_text(addr: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return None;
    }
    Some(body.to_string())
}

/// GET `path` from `addr` and parse the JSON body; None while the server does not answer 200.
pub async fn http_get_json(addr: &str, path: &str) -> Option<serde_json::Value> {
    serde_json::from_str(&http_get_text(addr, path).await?).ok()
}

/// The value of an unlabelled Prometheus counter or gauge on `addr`'s `/metrics` (0 when absent).
pub async fn metric(addr: &str, name: &str) -> f64 {
    let text = http_get_text(addr, "/metrics").await.unwrap_or_default();
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .sum()
}

/// A workspace binary next to this test's deps directory (scripts/test.sh builds them first),
/// or next to this executable (a bench binary in `target/release`).
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe.parent().expect("target dir");
    let bin = match dir.join(name) {
        beside if beside.exists() => beside,
        _ => dir.parent().expect("target dir").join(name),
    };
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --bins` (scripts/test.sh does)",
        bin.display()
    );
    bin
}
