//! Kafka clients as every service builds them: the consumer-group settings that at-least-once
//! delivery relies on, the producer settings that keep a shutdown bounded, and the defaults
//! both take unless `kafka.properties` says otherwise (written once, here).

use crate::config::KafkaProperties;
use crate::lag;
use leadstream_schemas::Secret;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// Consumer properties leadstream chooses unless the user sets them.
///
/// - `session.timeout.ms` / `heartbeat.interval.ms`: how soon a dead member's partitions move
///   (Kafka's pre-3.0 default; librdkafka's 45 s would keep a partition unread that long), and
///   the horizon of the membership watchdog (see [`crate::group`]).
/// - fetch sizes: consumers here are bound by fetch round-trips (measured on the local broker).
pub const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("session.timeout.ms", "10000"),
    ("heartbeat.interval.ms", "3000"),
    ("auto.offset.reset", "earliest"),
    ("auto.commit.interval.ms", "1000"),
    ("fetch.wait.max.ms", "100"),
    ("fetch.min.bytes", "65536"),
    ("max.partition.fetch.bytes", "10485760"),
    ("statistics.interval.ms", lag::STATISTICS_INTERVAL_MS),
];

/// Producer properties leadstream chooses unless the user sets them. `message.timeout.ms`
/// bounds how long librdkafka keeps retrying one message on its own (300 s by default), so a
/// failed delivery reaches leadstream's own retry loop, which races the shutdown.
pub const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
    ("enable.idempotence", "true"),
    ("linger.ms", "5"),
    ("message.timeout.ms", "30000"),
];

/// Consumer-only properties: shared `kafka.properties` give them to the consumer, and the
/// producer drops them (librdkafka would only log configuration warnings).
const CONSUMER_ONLY: &[&str] = &[
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "auto.commit.interval.ms",
    "enable.auto.commit",
    "auto.offset.reset",
    "fetch.wait.max.ms",
    "fetch.min.bytes",
    "fetch.max.bytes",
    "max.partition.fetch.bytes",
    "group.instance.id",
    "group.protocol",
    "isolation.level",
    "partition.assignment.strategy",
];

/// The partitioner of every keyed topic leadstream writes (Kafka's Java default, murmur2 of
/// the key): the aggregator derives which member owns a lead from it, so it is not
/// configurable.
pub const PARTITIONER: &str = "murmur2_random";

/// Properties leadstream manages itself; `kafka.properties` may not set them.
pub const MANAGED: &[&str] = &[
    "bootstrap.servers",
    "group.id",
    "enable.auto.offset.store",
    "partitioner",
];

/// Whether a failed delivery can never succeed as it is: the broker (or librdkafka on its
/// behalf) refuses the record itself. Everything else (the broker away, timeouts, leadership
/// moving, authorization an operator may fix) is worth retrying.
pub fn is_permanent(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::MessageSizeTooLarge
                | C::InvalidMessageSize
                | C::InvalidMessage
                | C::InvalidRecord
                | C::MessageBatchTooLarge
                | C::BadMessage
                | C::InvalidArgument
        )
    )
}

/// Drops a Kafka client on a thread of its own and waits at most `limit` for it. Closing a
/// consumer leaves the group and commits, which waits for a broker that may be away; the
/// offsets that matter were committed already, so a stop must not hang on it (the thread is
/// left behind and ends with the process).
pub fn close_within<T: Send + 'static>(client: T, limit: std::time::Duration, what: &'static str) {
    let (done, closed) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("close-{what}"))
        .spawn(move || {
            drop(client);
            let _ = done.send(());
        });
    if spawned.is_err() || closed.recv_timeout(limit).is_err() {
        tracing::warn!(
            what,
            limit_ms = limit.as_millis() as u64,
            "the Kafka client did not close in time (is the broker away?); stopping without it"
        );
    }
}

/// Where a service's Kafka clients connect.
#[derive(Debug, Clone, Copy)]
pub struct Connection<'a> {
    /// `bootstrap.servers`.
    pub brokers: &'a str,
    /// User properties (SASL/SSL included).
    pub properties: &'a KafkaProperties,
    /// SASL password, when configured.
    pub sasl_password: Option<&'a Secret<String>>,
}

impl Connection<'_> {
    /// A consumer of `group` that commits only offsets the service stored itself, after the
    /// writes they cover were acknowledged (librdkafka commits stored offsets in the background).
    pub fn consumer(&self, group: &str) -> ClientConfig {
        let mut c = self
            .properties
            .client_config(self.brokers, self.sasl_password);
        c.set("group.id", group)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false");
        for (k, v) in CONSUMER_DEFAULTS {
            self.properties.default_to(&mut c, k, v);
        }
        c
    }

    /// A producer: idempotent, keyed with [`PARTITIONER`], with a bounded message timeout.
    pub fn producer(&self) -> ClientConfig {
        let mut c = self
            .properties
            .client_config(self.brokers, self.sasl_password);
        for k in CONSUMER_ONLY {
            c.remove(k);
        }
        for (k, v) in PRODUCER_DEFAULTS {
            self.properties.default_to(&mut c, k, v);
        }
        c.set("partitioner", PARTITIONER);
        c.set_log_level(rdkafka::config::RDKafkaLogLevel::Error);
        c
    }

    /// The session timeout the consumer announces, in milliseconds.
    pub fn session_timeout_ms(&self) -> u64 {
        self.property_or_default("session.timeout.ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(45_000)
    }

    fn property_or_default(&self, key: &str) -> Option<&str> {
        self.properties.0.get(key).map(String::as_str).or_else(|| {
            CONSUMER_DEFAULTS
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| *v)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> KafkaProperties {
        KafkaProperties(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn user_properties_win_over_defaults_and_stay_out_of_the_producer() {
        let p = props(&[("session.timeout.ms", "30000"), ("linger.ms", "50")]);
        let conn = Connection {
            brokers: "b:9092",
            properties: &p,
            sasl_password: None,
        };
        let c = conn.consumer("g");
        assert_eq!(c.get("session.timeout.ms"), Some("30000"));
        assert_eq!(c.get("fetch.min.bytes"), Some("65536"));
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(conn.session_timeout_ms(), 30_000);
        let pr = conn.producer();
        assert_eq!(pr.get("session.timeout.ms"), None);
        assert_eq!(pr.get("linger.ms"), Some("50"));
        assert_eq!(pr.get("message.timeout.ms"), Some("30000"));
        assert_eq!(pr.get("partitioner"), Some(PARTITIONER));
    }

    #[test]
    fn refused_records_are_permanent_and_outages_are_not() {
        let produce = |c| KafkaError::MessageProduction(c);
        assert!(is_permanent(&produce(
            RDKafkaErrorCode::MessageSizeTooLarge
        )));
        assert!(!is_permanent(&produce(RDKafkaErrorCode::MessageTimedOut)));
        assert!(!is_permanent(&produce(RDKafkaErrorCode::AllBrokersDown)));
        assert!(!is_permanent(&produce(
            RDKafkaErrorCode::NotLeaderForPartition
        )));
    }

    #[test]
    fn the_default_session_timeout_is_the_shipped_one() {
        let p = KafkaProperties::default();
        let conn = Connection {
            brokers: "b",
            properties: &p,
            sasl_password: None,
        };
        assert_eq!(conn.session_timeout_ms(), 10_000);
    }
}
