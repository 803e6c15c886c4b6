//! The dead-letter record every service writes to `leads.dlq`: the original bytes and key (up to
//! a bound), with where they came from and why they were refused in `ls.*` headers, so a dead
//! letter can be inspected and replayed without knowing which service refused it.
//!
//! Why bounded: a refused message can be as large as the broker lets a producer write (an
//! oversized one is refused *because* it is large). Copying it whole would make the dead letter
//! itself too large to publish and stall everything behind it, so the record keeps the first
//! [`MAX_PAYLOAD_BYTES`] and says how large the original was and what its SHA-256 is.

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use sha2::{Digest, Sha256};

/// Payload bytes a dead letter keeps (the collector's default message limit).
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// Key bytes a dead letter keeps.
pub const MAX_KEY_BYTES: usize = 1024;

/// A refused message's bytes as a dead letter keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// The first [`MAX_PAYLOAD_BYTES`] of the original.
    pub kept: Vec<u8>,
    /// Size of the original.
    pub original_bytes: usize,
    /// SHA-256 of the original, lowercase hex.
    pub sha256: String,
}

impl Payload {
    /// Bounds `bytes`, recording its size and digest.
    pub fn of(bytes: &[u8]) -> Self {
        Self {
            kept: bytes[..bytes.len().min(MAX_PAYLOAD_BYTES)].to_vec(),
            original_bytes: bytes.len(),
            sha256: hex::encode(Sha256::digest(bytes)),
        }
    }

    /// Whether bytes were cut off.
    pub fn truncated(&self) -> bool {
        self.kept.len() < self.original_bytes
    }
}

/// A refused message.
#[derive(Debug, Clone, Copy)]
pub struct DeadLetter<'a> {
    /// Topic it was read from.
    pub topic: &'a str,
    /// Partition it was read from.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
    /// Its key (cut to [`MAX_KEY_BYTES`] in the record).
    pub key: Option<&'a [u8]>,
    /// Its bytes, bounded.
    pub payload: &'a Payload,
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
    let size = d.payload.original_bytes.to_string();
    let headers = [
        ("ls.source_topic", d.topic),
        ("ls.source_partition", partition.as_str()),
        ("ls.source_offset", offset.as_str()),
        ("ls.error_category", d.category),
        ("ls.error_field", d.field.unwrap_or_default()),
        ("ls.error_message", d.message),
        ("ls.payload_bytes", size.as_str()),
        ("ls.payload_sha256", d.payload.sha256.as_str()),
        (
            "ls.payload_truncated",
            if d.payload.truncated() {
                "true"
            } else {
                "false"
            },
        ),
    ]
    .into_iter()
    .fold(OwnedHeaders::new(), |h, (key, value)| {
        h.insert(Header {
            key,
            value: Some(value.as_bytes()),
        })
    });
    let rec = FutureRecord::to(to)
        .payload(d.payload.kept.as_slice())
        .headers(headers);
    match d.key {
        Some(k) => rec.key(&k[..k.len().min(MAX_KEY_BYTES)]),
        None => rec,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_payloads_are_cut_and_described() {
        let big = vec![b'x'; MAX_PAYLOAD_BYTES * 16];
        let p = Payload::of(&big);
        assert_eq!(p.kept.len(), MAX_PAYLOAD_BYTES);
        assert_eq!(p.original_bytes, big.len());
        assert!(p.truncated());
        assert_eq!(p.sha256, hex::encode(Sha256::digest(&big)));
        let small = Payload::of(b"{}");
        assert!(!small.truncated());
        assert_eq!(small.kept, b"{}");
    }
}
