//! The leadstream collector: reads the lead source topics, normalizes every message by the
//! `leadstream-schemas` contract, writes `lead_events` / `ingest_errors` in ClickHouse, publishes
//! normalized events to `leads.normalized` and rejects to `leads.dlq`, and stores a partition's
//! offsets only after all of that was acknowledged.

pub mod config;
pub mod http;
pub mod internal_events;
pub mod kafka;
mod pipeline;
mod publish;
pub mod sink;

pub use config::CollectorConfig;
pub use leadstream_runtime::telemetry;

use leadstream_runtime::group::Membership;
use leadstream_runtime::health::Readiness;
use leadstream_runtime::lag::{self, LagBoard};
use leadstream_runtime::retry::{give_up_after, Retry};
use leadstream_runtime::watchdog;
use leadstream_schemas::Normalizer;
use pipeline::Pipeline;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a shutdown waits for an in-flight flush before giving up on it (it is re-read on restart).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How long a stop waits for the consumer to leave the group (the broker may be away).
const CLOSE_LIMIT: Duration = Duration::from_secs(2);

/// A failure that stops the collector before it could start consuming.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    /// Configuration that validated but cannot be used (channel rules file, ...).
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// A Kafka client could not be created or subscribed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The HTTP endpoint could not bind.
    #[error("http endpoint {addr}: {source}")]
    Http {
        /// Address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// Runs the collector until `shutdown` is cancelled; then flushes, commits and returns.
///
/// ClickHouse being down at start is not an error: the collector waits for it (not ready meanwhile).
pub async fn run(cfg: CollectorConfig, shutdown: CancellationToken) -> Result<(), CollectorError> {
    let normalizer = Normalizer::new(cfg.normalizer_config()?);
    let readiness = Readiness::new("collector");
    let tracker = TaskTracker::new();
    if !cfg.http.listen.is_empty() {
        let listener = tokio::net::TcpListener::bind(&cfg.http.listen)
            .await
            .map_err(|source| CollectorError::Http {
                addr: cfg.http.listen.clone(),
                source,
            })?;
        tracing::info!(addr = %cfg.http.listen, "serving /metrics, /healthz, /readyz");
        tracker.spawn(http::serve(
            listener,
            telemetry::metrics_handle(),
            readiness.clone(),
            shutdown.clone(),
        ));
    }
    // Retries stop SHUTDOWN_GRACE after shutdown, so a stuck flush cannot hold the process.
    let give_up = give_up_after(&shutdown, SHUTDOWN_GRACE, &tracker);
    let retry = Retry::new(
        Duration::from_millis(cfg.retry.initial_backoff_ms),
        Duration::from_millis(cfg.retry.max_backoff_ms),
        give_up.clone(),
    );
    let sink = match pipeline::retry_sink(&retry, &readiness, || {
        sink::Sink::connect(&cfg.clickhouse, "collector")
    })
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(why)) => {
            tracing::error!(reason = %why, "clickhouse refused the schema migrations");
            give_up.cancel();
            tracker.close();
            tracker.wait().await;
            return Ok(());
        }
        Err(_) => {
            tracker.close();
            tracker.wait().await;
            return Ok(());
        }
    };
    tracing::info!(database = %cfg.clickhouse.database, "clickhouse schema is up to date");
    tracker.spawn(leadstream_runtime::health::watch_clickhouse(
        readiness.clone(),
        sink.client().clone(),
        shutdown.clone(),
    ));
    let lag = LagBoard::new("collector");
    let session = Duration::from_millis(cfg.kafka.connection().session_timeout_ms());
    let membership = Membership::new("collector", session);
    let consumer = Arc::new(kafka::consumer(
        &cfg.kafka,
        lag.clone(),
        membership.clone(),
    )?);
    tracker.spawn(lag.write_every(sink.client().clone(), lag::INTERVAL, shutdown.clone()));
    let group = watchdog::Group {
        id: &cfg.kafka.group_id,
        topics: cfg.kafka.topics.keys().cloned().collect(),
        membership: &membership,
    };
    watchdog::join(&consumer, group, &readiness, &tracker, &shutdown)?;
    let producer = kafka::producer(&cfg.kafka)?;
    readiness.clear("starting");
    let pipeline = Pipeline {
        normalizer,
        limiters: pipeline::limiters(&cfg),
        kinds: cfg.kafka.topics.clone().into_iter().collect(),
        consumer,
        producer,
        sink,
        retry,
        readiness: readiness.clone(),
        membership,
        cfg,
    };
    let consumer = pipeline.run(shutdown.clone()).await;
    readiness.block("shutdown", "shutting down");
    give_up.cancel();
    tracker.close();
    tracker.wait().await;
    leadstream_runtime::kafka::close_within(consumer, CLOSE_LIMIT, "consumer");
    tracing::info!("collector stopped");
    Ok(())
}
