//! The leadstream aggregator: keeps every lead's place in the funnels of `config/funnel.yaml`
//! from `leads.normalized`, writes stage transitions and lead states to ClickHouse, and answers
//! funnel questions (flow, cohort conversion, occupancy, losses, channel mix, A/B) over HTTP.

pub mod api;
mod checkpoint;
pub mod config;
pub mod context;
pub mod copies;
pub mod decode;
pub mod engine;
mod flush;
pub mod funnel;
pub mod guard;
mod intake;
pub mod internal_events;
pub mod machine;
mod restore;
pub mod rollup;
pub mod rows;
pub mod service;
pub mod stats;
pub mod store;
pub mod versions;
pub mod wallboard;
pub mod writes;

pub use config::AggregatorConfig;
pub use engine::{Engine, Footprint, Ingested, Output};
pub use funnel::{FunnelConfigError, Funnels};
pub use leadstream_runtime::telemetry;

use leadstream_runtime::clickhouse::Sink;
use leadstream_runtime::group::Membership;
use leadstream_runtime::lag::{self, LagBoard};
use leadstream_runtime::retry::{give_up_after, Retry};
use leadstream_runtime::watchdog;
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureProducer;
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
    /// The topics are missing or cannot work together.
    #[error("topics: {0}")]
    Topics(String),
    /// ClickHouse refused the schema or the aggregator's rows.
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] leadstream_runtime::clickhouse::SinkError),
}

/// librdkafka's range assignor gives every member the same partition numbers of both topics,
/// which is what lets a member own a lead on both (Kafka Streams relies on the same property).
const ASSIGNMENT: &str = "range";

fn consumer(
    cfg: &config::KafkaConfig,
    lag: Arc<LagBoard>,
    membership: Arc<Membership>,
) -> rdkafka::error::KafkaResult<context::AggregatorConsumer> {
    let mut c = cfg.connection().consumer(&cfg.group_id);
    c.set("partition.assignment.strategy", ASSIGNMENT);
    c.create_with_context(context::RebalanceContext::new(lag, membership))
}

fn producer(cfg: &config::KafkaConfig) -> rdkafka::error::KafkaResult<FutureProducer> {
    // Keyed like the normalized topic, so a recheck lands on the partition of its lead.
    cfg.connection().producer().create()
}

/// Partition counts of the normalized and stitching topics, which must be equal.
fn partitions(
    consumer: &context::AggregatorConsumer,
    cfg: &config::KafkaConfig,
) -> Result<u32, AggregatorError> {
    let count = |topic: &str| -> Result<usize, AggregatorError> {
        let md = consumer.fetch_metadata(Some(topic), std::time::Duration::from_secs(10))?;
        let n = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map_or(0, |t| t.partitions().len());
        Ok(n)
    };
    let (n, s) = (count(&cfg.topic)?, count(&cfg.stitch_topic)?);
    if n == 0 || n != s {
        return Err(AggregatorError::Topics(format!(
            "kafka.topic {} has {n} partitions and kafka.stitch_topic {} has {s}; both must exist with the same count",
            cfg.topic, cfg.stitch_topic
        )));
    }
    Ok(n as u32)
}

/// Runs the aggregator until `shutdown` is cancelled; then flushes, commits and returns.
///
/// On every partition assignment the state of the owned leads is rebuilt from ClickHouse
/// (`lead_events_unique` and the aggregator's own `lead_funnels`), so a crash at any point loses
/// nothing and a restart converges to the answers of an uninterrupted run.
pub async fn run(
    cfg: AggregatorConfig,
    shutdown: CancellationToken,
) -> Result<(), AggregatorError> {
    let funnels = Arc::new(Funnels::load(&cfg.funnels.file)?);
    let health = Arc::new(api::Health::default());
    let tracker = TaskTracker::new();
    // Retries give up SHUTDOWN_GRACE after shutdown, so a clean stop still writes its last
    // batch but an outage of ClickHouse or the broker cannot hold the process.
    let give_up = give_up_after(&shutdown, service::SHUTDOWN_GRACE, &tracker);
    let listener = tokio::net::TcpListener::bind(&cfg.api.listen)
        .await
        .map_err(|source| AggregatorError::Http {
            addr: cfg.api.listen.clone(),
            source,
        })?;
    let retry = Retry::new(service::BACKOFF.0, service::BACKOFF.1, give_up);
    // The endpoints answer from the start (not ready while ClickHouse or the broker is away).
    tracing::info!(addr = %cfg.api.listen, "serving the API, /metrics, /healthz, /readyz");
    let app = api::router(api::Api {
        // Its own (optionally read-only) user, and ClickHouse stops what runs too long.
        client: leadstream_runtime::clickhouse::client(&cfg.api_clickhouse()).with_option(
            "max_execution_time",
            cfg.api.max_execution_time.as_secs().to_string(),
        ),
        funnels: funnels.clone(),
        metrics: telemetry::metrics_handle(),
        health: health.clone(),
        min_sample: cfg.api.min_sample,
        request_timeout: cfg.api.request_timeout,
        permits: Arc::new(tokio::sync::Semaphore::new(cfg.api.max_concurrent_requests)),
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
    health
        .readiness
        .block("clickhouse", "connecting and applying migrations");
    let connected = service::with_retry("connect", &retry, || {
        Sink::connect(&cfg.clickhouse, "aggregator")
    })
    .await;
    let Ok(connected) = connected else {
        return stopped(&tracker, retry.give_up()).await;
    };
    let sink = connected?;
    health.readiness.clear("clickhouse");
    tracker.spawn(leadstream_runtime::health::watch_clickhouse(
        health.readiness.clone(),
        sink.client().clone(),
        shutdown.clone(),
    ));
    if let Err(e) = store::publish_stages(sink.client(), &funnels).await {
        // Only dashboards read the stage list; the pipeline works without it.
        tracing::warn!(error = %e, "could not write the funnel stages for the dashboards");
    }
    let board = LagBoard::new("aggregator");
    let session = std::time::Duration::from_millis(cfg.kafka.connection().session_timeout_ms());
    let membership = Membership::new("aggregator", session);
    let consumer = Arc::new(consumer(&cfg.kafka, board.clone(), membership.clone())?);
    tracker.spawn(board.write_every(sink.client().clone(), lag::INTERVAL, shutdown.clone()));
    let producer = producer(&cfg.kafka)?;
    let partitions = loop {
        match partitions(&consumer, &cfg.kafka) {
            Ok(n) => break n,
            // The broker may still be starting; a wrong partition count is final.
            Err(AggregatorError::Kafka(e)) => {
                health
                    .readiness
                    .block("kafka", format!("metadata not available: {e}"));
                if retry
                    .pause(std::time::Duration::from_secs(1))
                    .await
                    .is_err()
                {
                    return stopped(&tracker, retry.give_up()).await;
                }
            }
            Err(e) => return Err(e),
        }
    };
    health.readiness.clear("kafka");
    let group = watchdog::Group {
        id: &cfg.kafka.group_id,
        topics: vec![cfg.kafka.topic.clone(), cfg.kafka.stitch_topic.clone()],
        membership: &membership,
    };
    watchdog::join(&consumer, group, &health.readiness, &tracker, &shutdown)?;
    health.readiness.clear("starting");
    let give_up = retry.give_up().clone();
    let result = service::Service {
        cfg: &cfg,
        consumer: &consumer,
        producer: &producer,
        sink: &sink,
        funnels,
        partitions,
        health: health.clone(),
        membership,
        retry,
    }
    .consume(shutdown.clone())
    .await;
    health.readiness.block("shutdown", "shutting down");
    // The loop is done: nothing left to retry, so the grace timer need not run out.
    give_up.cancel();
    tracker.close();
    tracker.wait().await;
    // Leaving the group waits for the broker, which may be away; the offsets are committed.
    leadstream_runtime::kafka::close_within(
        consumer,
        std::time::Duration::from_secs(2),
        "consumer",
    );
    result?;
    tracing::info!("aggregator stopped");
    Ok(())
}

/// Shutdown came before the aggregator could start consuming: wait for the background tasks.
async fn stopped(
    tracker: &TaskTracker,
    give_up: &CancellationToken,
) -> Result<(), AggregatorError> {
    give_up.cancel();
    tracker.close();
    tracker.wait().await;
    tracing::info!("aggregator stopped before it started consuming");
    Ok(())
}
