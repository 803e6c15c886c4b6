//! One consumed message into the engine: decoded, applied (or dead-lettered) and counted in the
//! batch the next flush covers.

use crate::decode;
use crate::engine::Engine;
use crate::internal_events as events;
use crate::service::{Batch, Service};
use crate::writes::Unreadable;
use leadstream_runtime::dead_letter::Payload;
use rdkafka::message::Message;

impl Service<'_> {
    /// Applies one consumed message and adds it to `batch`: its offset is stored once the flush
    /// covering it went through, and an unreadable one is dead-lettered by that flush.
    pub(crate) fn take_in(&self, engine: &mut Engine, m: &impl Message, batch: &mut Batch) {
        batch.dead.extend(self.apply(engine, m));
        // rdkafka's store_offset takes the message's own offset (it commits the next one).
        batch
            .offsets
            .insert((m.topic().to_string(), m.partition()), m.offset());
        batch.messages += 1;
    }

    /// Applies one consumed message to the engine; an unreadable one comes back for the
    /// dead-letter topic.
    fn apply(&self, engine: &mut Engine, m: &impl Message) -> Option<Unreadable> {
        let payload = m.payload();
        let unreadable = |error: String| {
            events::message_unreadable(m.topic(), m.partition(), m.offset(), &error);
            Some(Unreadable {
                topic: m.topic().to_string(),
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                payload: Payload::of(payload.unwrap_or_default()),
                error,
            })
        };
        if m.topic() == self.cfg.kafka.stitch_topic {
            return match decode::recheck(payload) {
                Ok(r) => {
                    match r.copy {
                        Some((event_type, id)) => engine.recheck_copy(&r.lead, event_type, &id),
                        None => engine.recheck(&r.lead),
                    }
                    events::recheck_received();
                    None
                }
                Err(why) => unreadable(why),
            };
        }
        let received = chrono::Utc::now().timestamp_millis();
        match decode::normalized(payload) {
            Ok(e) => {
                // With one partition every key is where it belongs (no key to build per event).
                if engine.ownership().partitions() > 1 {
                    let key = e.lead_key();
                    if engine.ownership().partition(&key) as i32 != m.partition() {
                        events::misrouted(&key, m.partition());
                    }
                }
                events::ingested(engine.ingest(&e, received), &e.event_id);
                None
            }
            Err(why) => unreadable(why),
        }
    }
}
