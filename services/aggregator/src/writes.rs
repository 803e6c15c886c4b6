//! What one flush sends out: its rows to ClickHouse, unreadable messages to the dead-letter
//! topic and rechecks to the other members. Each is idempotent, so a retry or a replay after a
//! crash changes nothing.

use crate::copies::MinuteTombstoneRow;
use crate::decode::Recheck;
use crate::engine::Output;
use crate::rollup::{CohortRollupRow, ReachRollupRow, TransitionRollupRow};
use crate::rows::{LateEventRow, LeadFunnelRow, TransitionRow};
use leadstream_runtime::clickhouse::{Sink, SinkError};
use leadstream_runtime::dead_letter::{self, Payload};
use leadstream_runtime::kafka::is_permanent;
use leadstream_schemas::EventType;
use rdkafka::producer::{FutureProducer, FutureRecord};
use smol_str::SmolStr;
use std::time::Duration;

/// Rows per INSERT: big flushes (the first one after a rebuild rewrites every lead) go in pieces
/// so no single request holds the whole state; each piece is idempotent on its own.
const ROWS_PER_INSERT: usize = 5000;

/// Writes one flush's rows. Transitions, late events, rollups and per-minute tombstones first,
/// lead states last: a reader that sees a lead's new state also sees its transitions.
pub async fn write(sink: &Sink, out: &Output) -> Result<(), SinkError> {
    debug_assert!(
        out.unresolved.is_empty(),
        "rows are resolved before they are written"
    );
    for chunk in out.transitions.chunks(ROWS_PER_INSERT) {
        sink.insert::<TransitionRow>("stage_transitions", chunk)
            .await?;
    }
    sink.insert::<LateEventRow>("late_events", &out.late_events)
        .await?;
    for chunk in out.cohort_rollup.chunks(ROWS_PER_INSERT) {
        sink.insert::<CohortRollupRow>("funnel_cohort_minute", chunk)
            .await?;
    }
    for chunk in out.reach_rollup.chunks(ROWS_PER_INSERT) {
        sink.insert::<ReachRollupRow>("funnel_reach_minute", chunk)
            .await?;
    }
    for chunk in out.transition_rollup.chunks(ROWS_PER_INSERT) {
        sink.insert::<TransitionRollupRow>("funnel_transition_minute", chunk)
            .await?;
    }
    for chunk in out.minute_tombstones.chunks(ROWS_PER_INSERT) {
        sink.insert::<MinuteTombstoneRow>("lead_events_by_minute", chunk)
            .await?;
    }
    for chunk in out.leads.chunks(ROWS_PER_INSERT) {
        sink.insert::<LeadFunnelRow>("lead_funnels", chunk).await?;
    }
    Ok(())
}

/// A consumed message that could not be read, kept for the dead-letter topic.
#[derive(Debug)]
pub struct Unreadable {
    /// Topic it was read from.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its bytes, bounded.
    pub payload: Payload,
    /// Why it could not be read.
    pub error: String,
}

/// A recheck for another member: re-read a lead's devices, or settle one of its event ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Note {
    /// The lead (its key routes the message to the owner's partition).
    pub lead: SmolStr,
    /// An event id the lead holds a losing copy of, with its type.
    pub copy: Option<(EventType, String)>,
}

/// Where a flush's messages go.
pub struct Outbox<'a> {
    /// The producer.
    pub producer: &'a FutureProducer,
    /// The dead-letter topic.
    pub dead_letter_topic: &'a str,
    /// The stitching topic (rechecks).
    pub stitch_topic: &'a str,
}

impl Outbox<'_> {
    /// Produces the unreadable messages to the dead-letter topic and waits for the
    /// acknowledgements.
    pub async fn dead_letters(&self, dead: &[Unreadable]) -> Result<(), SinkError> {
        let records = dead.iter().map(|u| {
            dead_letter::record(
                self.dead_letter_topic,
                &dead_letter::DeadLetter {
                    topic: &u.topic,
                    partition: u.partition,
                    offset: u.offset,
                    key: u.key.as_deref(),
                    payload: &u.payload,
                    category: "unreadable",
                    field: None,
                    message: &u.error,
                },
            )
        });
        self.produce_all("a dead letter", records).await
    }

    /// Produces one recheck message per note and waits for every acknowledgement.
    pub async fn rechecks(&self, notes: &[Note]) -> Result<(), SinkError> {
        let payloads: Vec<Vec<u8>> = notes
            .iter()
            .map(|n| {
                serde_json::to_vec(&Recheck {
                    recheck: n.lead.to_string(),
                    event_type: n.copy.as_ref().map(|(t, _)| t.as_str().to_string()),
                    event_id: n.copy.as_ref().map(|(_, id)| id.clone()),
                })
                .unwrap_or_default()
            })
            .collect();
        let records = notes.iter().zip(&payloads).map(|(n, p)| {
            FutureRecord::to(self.stitch_topic)
                .key(n.lead.as_bytes())
                .payload(p.as_slice())
        });
        self.produce_all("a recheck", records).await
    }

    /// Sends every record and waits for all acknowledgements. A record the broker refuses for
    /// good is reported as rejected (not retried); any other failure is transient.
    async fn produce_all<'a>(
        &self,
        what: &str,
        records: impl Iterator<Item = FutureRecord<'a, [u8], [u8]>>,
    ) -> Result<(), SinkError> {
        let deliveries: Vec<_> = records
            .map(|r| self.producer.send(r, Duration::from_secs(10)))
            .collect();
        let mut refused = None;
        for d in futures::future::join_all(deliveries).await {
            match d {
                Ok(_) => {}
                Err((e, _)) if is_permanent(&e) => {
                    refused = Some(SinkError::Rejected(format!("producing {what}: {e}")));
                }
                Err((e, _)) => return Err(SinkError::Transient(format!("producing {what}: {e}"))),
            }
        }
        refused.map_or(Ok(()), Err)
    }
}
