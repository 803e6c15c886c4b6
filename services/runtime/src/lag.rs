//! Consumer lag for the dashboards: a Kafka client's statistics callback records the latest lag
//! of every partition it consumes, and a task writes those to ClickHouse's `consumer_lag` table
//! (Grafana reads ClickHouse only; `/metrics` keeps the same figures for Prometheus users).

use clickhouse::Client;
use rdkafka::statistics::Statistics;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the services ask librdkafka for statistics and write the lag (seconds matter on a
/// health dashboard; rows are a handful per partition).
pub const INTERVAL: Duration = Duration::from_secs(5);

/// `statistics.interval.ms` matching [`INTERVAL`].
pub const STATISTICS_INTERVAL_MS: &str = "5000";

/// One row of `consumer_lag`.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Serialize)]
pub struct LagRow {
    /// When librdkafka reported it, epoch ms.
    pub at: i64,
    /// `collector` or `aggregator`.
    pub service: &'static str,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Messages behind the partition's end.
    pub lag: i64,
}

/// The latest lag per consumed partition of one service, waiting to be written.
#[derive(Debug)]
pub struct LagBoard {
    service: &'static str,
    latest: Mutex<Vec<LagRow>>,
}

impl LagBoard {
    /// An empty board for `service`.
    pub fn new(service: &'static str) -> Arc<Self> {
        Arc::new(Self {
            service,
            latest: Mutex::new(Vec::new()),
        })
    }

    /// Keeps what one statistics report says (replacing the previous report) and returns it.
    pub fn record(&self, stats: &Statistics) -> Vec<LagRow> {
        let at = stats.time * 1000;
        let mut rows = Vec::new();
        for (topic, t) in &stats.topics {
            for (partition, p) in &t.partitions {
                // librdkafka reports -1 for partitions it does not consume and for the internal
                // UA partition.
                if *partition >= 0 && p.consumer_lag >= 0 {
                    rows.push(LagRow {
                        at,
                        service: self.service,
                        topic: topic.clone(),
                        partition: *partition,
                        lag: p.consumer_lag,
                    });
                }
            }
        }
        if let Ok(mut latest) = self.latest.lock() {
            latest.clone_from(&rows);
        }
        rows
    }

    fn take(&self) -> Vec<LagRow> {
        self.latest
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default()
    }

    /// Writes the latest report every `every` until `shutdown`; a failed write is logged and the
    /// next report tried (lag is a gauge: a missed sample loses nothing that matters).
    pub async fn write_every(
        self: Arc<Self>,
        client: Client,
        every: Duration,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.cancelled() => return,
            }
            let rows = self.take();
            if rows.is_empty() {
                continue;
            }
            if let Err(e) = insert(&client, &rows).await {
                tracing::warn!(error = %e, service = self.service, "could not write consumer lag");
            }
        }
    }
}

async fn insert(client: &Client, rows: &[LagRow]) -> Result<(), clickhouse::error::Error> {
    let mut insert = client.insert::<LagRow>("consumer_lag").await?;
    for r in rows {
        insert.write(r).await?;
    }
    insert.end().await
}
