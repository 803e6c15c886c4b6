//! Where deliveries go: the source topics of a Kafka cluster, or a JSON-lines file (`--dry-run`).

use crate::config::KafkaConfig;
use crate::schedule::{Delivery, Label};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// A message could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The Kafka producer could not be created.
    #[error("kafka producer: {0}")]
    Producer(#[source] KafkaError),
    /// The broker did not acknowledge a message.
    #[error("producing to {topic}: {source}")]
    Delivery {
        /// Topic.
        topic: String,
        /// Why.
        #[source]
        source: KafkaError,
    },
    /// Outstanding messages were not acknowledged in time at the end of the run.
    #[error("flushing the producer: {0}")]
    Flush(#[source] KafkaError),
    /// The dry-run file could not be written.
    #[error("writing {path}: {source}")]
    File {
        /// File.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Produces deliveries to `<topic_prefix><canonical topic>` with bounded in-flight messages.
pub struct KafkaOutput {
    producer: FutureProducer,
    prefix: String,
    in_flight: FuturesUnordered<Pending>,
    max_in_flight: usize,
}

/// An unacknowledged message; it fails with its topic.
type Pending = futures::future::BoxFuture<'static, Result<(), (String, KafkaError)>>;

fn acked(r: <DeliveryFuture as std::future::Future>::Output) -> Result<(), KafkaError> {
    match r {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(e),
        Err(_) => Err(KafkaError::Canceled),
    }
}

impl KafkaOutput {
    /// An idempotent producer: its own retries never duplicate a message, so the only duplicates
    /// are the ones the truth counts.
    pub fn new(cfg: &KafkaConfig) -> Result<Self, OutputError> {
        let mut c = cfg
            .properties
            .client_config(&cfg.brokers, cfg.sasl_password.as_ref());
        for (k, v) in [
            ("enable.idempotence", "true"),
            ("linger.ms", "20"),
            ("queue.buffering.max.messages", "1000000"),
            ("message.timeout.ms", "60000"),
        ] {
            cfg.properties.default_to(&mut c, k, v);
        }
        c.set_log_level(rdkafka::config::RDKafkaLogLevel::Error);
        let producer = c.create().map_err(OutputError::Producer)?;
        Ok(Self {
            producer,
            prefix: cfg.topic_prefix.clone(),
            in_flight: FuturesUnordered::new(),
            max_in_flight: cfg.max_in_flight,
        })
    }

    fn topic(&self, d: &Delivery) -> String {
        format!("{}{}", self.prefix, d.kind.canonical_topic())
    }

    async fn settle_one(&mut self) -> Result<(), OutputError> {
        if let Some(r) = self.in_flight.next().await {
            r.map_err(|(topic, source)| OutputError::Delivery { topic, source })?;
        }
        Ok(())
    }

    /// Enqueues one delivery, waiting for acknowledgements when too many are in flight.
    pub async fn send(&mut self, d: &Delivery) -> Result<(), OutputError> {
        while self.in_flight.len() >= self.max_in_flight {
            self.settle_one().await?;
        }
        let topic = self.topic(d);
        loop {
            let mut record = FutureRecord::<str, [u8]>::to(&topic).payload(&d.payload);
            if let Some(k) = &d.key {
                record = record.key(k.as_str());
            }
            match self.producer.send_result(record) {
                Ok(f) => {
                    let topic = topic.clone();
                    self.in_flight.push(Box::pin(
                        async move { acked(f.await).map_err(|e| (topic, e)) },
                    ));
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    if self.in_flight.is_empty() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    } else {
                        self.settle_one().await?;
                    }
                }
                Err((source, _)) => return Err(OutputError::Delivery { topic, source }),
            }
        }
    }

    /// Waits until every message is acknowledged.
    pub async fn flush(&mut self) -> Result<(), OutputError> {
        while !self.in_flight.is_empty() {
            self.settle_one().await?;
        }
        self.producer
            .flush(Duration::from_secs(30))
            .map_err(OutputError::Flush)
    }
}

/// Writes deliveries as JSON lines: `{"topic","key","label","payload"}` (`payload_hex` when the
/// bytes are not UTF-8).
pub struct FileOutput {
    path: PathBuf,
    out: Box<dyn Write + Send>,
    prefix: String,
}

impl FileOutput {
    /// Creates (truncates) `path`; `-` is standard output.
    pub fn create(path: PathBuf, prefix: String) -> Result<Self, OutputError> {
        let out: Box<dyn Write + Send> = if path.as_os_str() == "-" {
            Box::new(std::io::BufWriter::new(std::io::stdout()))
        } else {
            let f = std::fs::File::create(&path).map_err(|source| OutputError::File {
                path: path.clone(),
                source,
            })?;
            Box::new(std::io::BufWriter::new(f))
        };
        Ok(Self { path, out, prefix })
    }

    fn err(&self, source: std::io::Error) -> OutputError {
        OutputError::File {
            path: self.path.clone(),
            source,
        }
    }

    /// Writes one delivery.
    pub fn send(&mut self, d: &Delivery) -> Result<(), OutputError> {
        let label = match &d.label {
            Label::Valid(_) => "valid".to_string(),
            Label::Duplicate => "duplicate".to_string(),
            Label::Copy(_) => "copy".to_string(),
            Label::Poison(c) => format!("poison:{c}"),
        };
        let mut line = json!({
            "topic": format!("{}{}", self.prefix, d.kind.canonical_topic()),
            "key": d.key,
            "label": label,
            "deliver_at_ms": d.deliver_at_ms,
        });
        match std::str::from_utf8(&d.payload) {
            Ok(s) => line["payload"] = json!(s),
            Err(_) => line["payload_hex"] = json!(hex::encode(&d.payload)),
        }
        serde_json::to_writer(&mut self.out, &line).map_err(|e| self.err(e.into()))?;
        self.out.write_all(b"\n").map_err(|e| self.err(e))
    }

    /// Flushes the file.
    pub fn flush(&mut self) -> Result<(), OutputError> {
        self.out.flush().map_err(|e| self.err(e))
    }
}
