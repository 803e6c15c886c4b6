//! The leadstream collector: reads the lead source topics, normalizes every message by the
//! `leadstream-schemas` contract, writes `lead_events` / `ingest_errors` in ClickHouse, publishes
//! normalized events to `leads.normalized` and rejects to `leads.dlq`, and stores a partition's
//! offsets only after all of that was acknowledged.

pub mod config;
pub mod http;
pub mod internal_events;
pub mod kafka;
mod pipeline;
pub mod sink;

pub use config::CollectorConfig;
pub use leadstream_runtime::telemetry;
pub use pipeline::Readiness;

use leadstream_runtime::lag::{self, LagBoard};
use leadstream_schemas::Normalizer;
use pipeline::{Pipeline, Retry};
use rdkafka::consumer::Consumer;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a shutdown waits for an in-flight flush before giving up on it (it is re-read on restart).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(7);

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
    let readiness = Arc::new(Readiness::default());
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
    let give_up = CancellationToken::new();
    {
        let (shutdown, give_up) = (shutdown.clone(), give_up.clone());
        tracker.spawn(async move {
            // The grace sleep sits inside the raced future: a finished pipeline (give_up cancelled)
            // must end the wait at once, not after the full grace.
            let grace = async {
                shutdown.cancelled().await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            };
            tokio::select! {
                _ = grace => {}
                _ = give_up.cancelled() => {}
            }
            give_up.cancel();
        });
    }
    let retry = Retry::new(&cfg, give_up.clone());
    let sink = match retry
        .sink(&readiness, || {
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
    let lag = LagBoard::new("collector");
    let consumer = kafka::consumer(&cfg.kafka, lag.clone())?;
    tracker.spawn(lag.write_every(sink.client().clone(), lag::INTERVAL, shutdown.clone()));
    let topics: Vec<&str> = cfg.kafka.topics.keys().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    tracing::info!(?topics, group = %cfg.kafka.group_id, "subscribed");
    let producer = kafka::producer(&cfg.kafka)?;
    readiness.set(true, "subscribed and clickhouse migrated");
    let pipeline = Pipeline {
        normalizer,
        limiters: pipeline::limiters(&cfg),
        kinds: cfg.kafka.topics.clone().into_iter().collect(),
        consumer,
        producer,
        sink,
        retry,
        readiness: readiness.clone(),
        cfg,
    };
    pipeline.run(shutdown.clone()).await;
    readiness.set(false, "shutting down");
    give_up.cancel();
    tracker.close();
    tracker.wait().await;
    tracing::info!("collector stopped");
    Ok(())
}
