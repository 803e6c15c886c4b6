//! The leadstream aggregator: keeps every lead's place in the funnels of `config/funnel.yaml`
//! from `leads.normalized`, writes stage transitions and lead states to ClickHouse, and answers
//! funnel questions (flow, cohort conversion, occupancy, losses, channel mix, A/B) over HTTP.

pub mod api;
pub mod config;
pub mod engine;
pub mod funnel;
pub mod internal_events;
pub mod machine;
pub mod rows;
pub mod service;
pub mod stats;
pub mod store;

pub use config::AggregatorConfig;
pub use engine::{Engine, Ingested, Output};
pub use funnel::{FunnelConfigError, Funnels};
pub use leadstream_runtime::telemetry;

use leadstream_runtime::clickhouse::Sink;
use rdkafka::consumer::{Consumer, StreamConsumer};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A failure that stops the aggregator before it could start.
#[derive(Debug, thiserror::Error)]
pub enum AggregatorError {
    /// The funnel file cannot be used.
    #[error(transparent)]
    Funnels(#[from] FunnelConfigError),
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
    /// ClickHouse refused the schema or the aggregator's rows.
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] leadstream_runtime::clickhouse::SinkError),
}

fn consumer(cfg: &config::KafkaConfig) -> rdkafka::error::KafkaResult<StreamConsumer> {
    let mut c = cfg
        .properties
        .client_config(&cfg.brokers, cfg.sasl_password.as_ref());
    c.set("group.id", &cfg.group_id)
        // At-least-once: only offsets stored after ClickHouse acknowledged the rows are committed.
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false");
    cfg.properties
        .default_to(&mut c, "auto.offset.reset", "earliest");
    cfg.properties
        .default_to(&mut c, "fetch.wait.max.ms", "100");
    cfg.properties
        .default_to(&mut c, "fetch.min.bytes", "65536");
    cfg.properties
        .default_to(&mut c, "max.partition.fetch.bytes", "10485760");
    c.create()
}

/// Runs the aggregator until `shutdown` is cancelled; then flushes, commits and returns.
///
/// At start the state is rebuilt from ClickHouse (`lead_events_unique` and the aggregator's own
/// `lead_funnels`), so a crash at any point loses nothing and a restart converges to the answers
/// of an uninterrupted run.
pub async fn run(
    cfg: AggregatorConfig,
    shutdown: CancellationToken,
) -> Result<(), AggregatorError> {
    let funnels = Arc::new(Funnels::load(&cfg.funnels.file)?);
    let health = Arc::new(api::Health::default());
    let tracker = TaskTracker::new();
    let listener = tokio::net::TcpListener::bind(&cfg.api.listen)
        .await
        .map_err(|source| AggregatorError::Http {
            addr: cfg.api.listen.clone(),
            source,
        })?;
    let sink = loop {
        match Sink::connect(&cfg.clickhouse, "aggregator").await {
            Ok(s) => break s,
            Err(leadstream_runtime::clickhouse::SinkError::Transient(e)) => {
                tracing::warn!(error = %e, "clickhouse not reachable yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    _ = shutdown.cancelled() => return Ok(()),
                }
            }
            Err(e) => return Err(e.into()),
        }
    };
    tracing::info!(addr = %cfg.api.listen, "serving the API, /metrics, /healthz, /readyz");
    let app = api::router(api::Api {
        client: sink.client().clone(),
        funnels: funnels.clone(),
        metrics: telemetry::metrics_handle(),
        health: health.clone(),
        min_sample: cfg.api.min_sample,
    });
    {
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
            {
                tracing::error!(error = %e, "http endpoint failed");
            }
        });
    }
    let lateness = i64::try_from(cfg.state.allowed_lateness.as_millis()).unwrap_or(i64::MAX);
    let mut versions = service::Versions::default();
    let engine = match service::recover(&sink, funnels, lateness, &mut versions, &shutdown).await {
        None => {
            tracker.close();
            tracker.wait().await;
            return Ok(());
        }
        Some(Err(e)) => return Err(e.into()),
        Some(Ok(engine)) => engine,
    };
    health
        .newest_event_ms
        .store(engine.watermark_ms().max(0), Ordering::Relaxed);
    let consumer = consumer(&cfg.kafka)?;
    consumer.subscribe(&[&cfg.kafka.topic])?;
    tracing::info!(topic = %cfg.kafka.topic, group = %cfg.kafka.group_id, "subscribed");
    health.ready.store(true, Ordering::Relaxed);
    service::consume(
        &cfg,
        &consumer,
        &sink,
        engine,
        versions,
        health.clone(),
        shutdown.clone(),
    )
    .await;
    health.ready.store(false, Ordering::Relaxed);
    tracker.close();
    tracker.wait().await;
    tracing::info!("aggregator stopped");
    Ok(())
}
