//! Publishing a flushed batch: normalized events to the normalized topic (keyed by lead) and
//! rejects to the dead-letter topic, waiting for every acknowledgement before the batch's
//! offsets may be stored.
//!
//! A delivery that fails for a reason that may pass (broker away, timeouts, leader changes) is
//! sent again with backoff until the give-up token fires. One the broker refuses for good (the
//! record itself is too large or invalid) is never retried, so one bad record cannot stall the
//! partitions behind it: a refused normalized event becomes a dead letter (`sink_rejected`;
//! its row stays in ClickHouse), a refused dead letter is dropped (its `ingest_errors` row
//! stays). Both are logged and counted.

use crate::config::KafkaConfig;
use crate::internal_events as events;
use crate::pipeline::DeadLetter;
use leadstream_runtime::dead_letter::{self, Payload};
use leadstream_runtime::health::Readiness;
use leadstream_runtime::kafka::is_permanent;
use leadstream_runtime::retry::{GaveUp, Retry};
use leadstream_schemas::{ErrorCategory, NormalizedEvent};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::Duration;

/// What one flush publishes with.
pub(crate) struct Publisher<'a> {
    pub(crate) producer: &'a FutureProducer,
    pub(crate) retry: &'a Retry,
    pub(crate) readiness: &'a Readiness,
    pub(crate) kafka: &'a KafkaConfig,
}

/// One record to deliver.
enum Item<'a> {
    Normalized {
        event: &'a NormalizedEvent,
        key: Vec<u8>,
        json: Vec<u8>,
    },
    Dead(&'a DeadLetter),
    /// A normalized event the broker refused, on its way to the dead-letter topic.
    Refused {
        event: &'a NormalizedEvent,
        key: Vec<u8>,
        payload: Payload,
        message: String,
    },
}

impl Item<'_> {
    fn label(&self) -> &'static str {
        match self {
            Item::Normalized { .. } => "normalized",
            Item::Dead(_) | Item::Refused { .. } => "dead_letter",
        }
    }
}

impl Publisher<'_> {
    /// Delivers `events` and `dead`; `Err` only when the give-up token fired first.
    pub(crate) async fn publish(
        &self,
        events: &[NormalizedEvent],
        dead: &[DeadLetter],
    ) -> Result<(), GaveUp> {
        let mut items: Vec<Item<'_>> = events
            .iter()
            .map(|e| Item::Normalized {
                event: e,
                key: e.lead_key().into_bytes(),
                json: serde_json::to_vec(e).unwrap_or_default(),
            })
            .chain(dead.iter().map(Item::Dead))
            .collect();
        let mut pending: Vec<usize> = (0..items.len()).collect();
        let mut backoff = self.retry.backoff();
        let mut attempt = 0;
        while !pending.is_empty() {
            let sends = pending.iter().map(|&i| {
                let item = &items[i];
                async move { (i, self.send(item).await) }
            });
            let results = self.retry.race(futures::future::join_all(sends)).await?;
            let mut again = Vec::new();
            let mut transient: Option<KafkaError> = None;
            let mut refused = Vec::new();
            for (i, r) in results {
                match r {
                    Ok(()) => events::published(items[i].label(), 1),
                    Err(e) if is_permanent(&e) => refused.push((i, e)),
                    Err(e) => {
                        again.push(i);
                        transient.get_or_insert(e);
                    }
                }
            }
            for (i, e) in refused {
                if let Some(item) = self.refused(&items[i], &e) {
                    again.push(items.len());
                    items.push(item);
                }
            }
            if let Some(e) = transient {
                attempt += 1;
                let wait = backoff.step();
                self.readiness
                    .block("kafka", format!("publishing failing: {e}"));
                events::write_retry("kafka", attempt, wait, &e);
                self.retry.pause(wait).await?;
            }
            pending = again;
        }
        self.readiness.clear("kafka");
        Ok(())
    }

    /// What follows a permanent refusal of `item`: a dead letter for a normalized event,
    /// nothing for a dead letter.
    fn refused<'a>(&self, item: &Item<'a>, e: &KafkaError) -> Option<Item<'a>> {
        match item {
            Item::Normalized { event, key, json } => {
                events::publish_refused("normalized", &event.event_id, e);
                Some(Item::Refused {
                    event,
                    key: key.clone(),
                    payload: Payload::of(json),
                    message: format!("kafka refused the normalized event: {e}"),
                })
            }
            Item::Dead(d) => {
                events::publish_refused("dead_letter", &d.payload.sha256, e);
                None
            }
            Item::Refused { event, .. } => {
                events::publish_refused("dead_letter", &event.event_id, e);
                None
            }
        }
    }

    async fn send(&self, item: &Item<'_>) -> Result<(), KafkaError> {
        let timeout = Duration::from_secs(30);
        let to_dead = |letter| dead_letter::record(&self.kafka.dead_letter_topic, &letter);
        let rec: FutureRecord<'_, [u8], [u8]> = match item {
            Item::Normalized { key, json, .. } => FutureRecord::to(&self.kafka.normalized_topic)
                .key(key.as_slice())
                .payload(json.as_slice()),
            Item::Dead(d) => to_dead(dead_letter::DeadLetter {
                topic: &d.topic,
                partition: d.partition,
                offset: d.offset,
                key: d.key.as_deref(),
                payload: &d.payload,
                category: d.error.category.as_str(),
                field: d.error.field.as_deref(),
                message: &d.error.message,
            }),
            Item::Refused {
                event,
                key,
                payload,
                message,
            } => to_dead(dead_letter::DeadLetter {
                topic: &event.source_topic,
                partition: event.source_partition,
                offset: event.source_offset,
                key: Some(key.as_slice()),
                payload,
                category: ErrorCategory::SinkRejected.as_str(),
                field: None,
                message,
            }),
        };
        self.producer
            .send(rec, timeout)
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
    }
}
