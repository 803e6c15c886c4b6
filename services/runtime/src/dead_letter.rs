//! The dead-letter record every service writes to `leads.dlq`: the original bytes and key, with
//! where they came from and why they were refused in `ls.*` headers, so a dead letter can be
//! inspected and replayed without knowing which service refused it.

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;

/// A refused message.
#[derive(Debug, Clone, Copy)]
pub struct DeadLetter<'a> {
    /// Topic it was read from.
    pub topic: &'a str,
    /// Partition it was read from.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
    /// Its key.
    pub key: Option<&'a [u8]>,
    /// Its bytes, unchanged.
    pub payload: &'a [u8],
    /// Why, as a small fixed set of categories.
    pub category: &'a str,
    /// The offending field, when one is to blame.
    pub field: Option<&'a str>,
    /// Why, in words.
    pub message: &'a str,
}

/// The record for `d` on the dead-letter topic `to`.
pub fn record<'a>(to: &'a str, d: &DeadLetter<'a>) -> FutureRecord<'a, [u8], [u8]> {
    let partition = d.partition.to_string();
    let offset = d.offset.to_string();
    let headers = [
        ("ls.source_topic", d.topic),
        ("ls.source_partition", partition.as_str()),
        ("ls.source_offset", offset.as_str()),
        ("ls.error_category", d.category),
        ("ls.error_field", d.field.unwrap_or_default()),
        ("ls.error_message", d.message),
    ]
    .into_iter()
    .fold(OwnedHeaders::new(), |h, (key, value)| {
        h.insert(Header {
            key,
            value: Some(value.as_bytes()),
        })
    });
    let rec = FutureRecord::to(to).payload(d.payload).headers(headers);
    match d.key {
        Some(k) => rec.key(k),
        None => rec,
    }
}
