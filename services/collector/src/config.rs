//! Typed, layered configuration: built-in defaults, then a YAML file, then `LEADSTREAM_*` environment
//! variables (`__` separates levels: `LEADSTREAM_CLICKHOUSE__URL`). Secrets never print.

use leadstream_runtime::config::{invalid, load_layered, read_secret_file};
pub use leadstream_runtime::config::{
    is_secret_property, ConfigError, KafkaProperties, LogConfig, LogFormat,
};
use leadstream_schemas::migrations::Topology;
use leadstream_schemas::{ChannelRules, NormalizerConfig, Screening, Secret, SourceKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Top-level sections, the only keys environment variables may set.
const SECTIONS: &[&str] = &[
    "kafka",
    "clickhouse",
    "normalize",
    "batch",
    "retry",
    "rate_limits",
    "http",
    "log",
];

/// The collector's whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    /// Kafka connection, topics and client properties.
    pub kafka: KafkaConfig,
    /// ClickHouse connection.
    pub clickhouse: ClickHouseConfig,
    /// Normalization settings.
    pub normalize: NormalizeConfig,
    /// Batching of inserts.
    pub batch: BatchConfig,
    /// Retry backoff for ClickHouse and Kafka writes.
    pub retry: RetryConfig,
    /// Per-source-topic rate limits in messages per second; topics not listed are unlimited.
    pub rate_limits: BTreeMap<String, u32>,
    /// HTTP endpoint for `/metrics`, `/healthz`, `/readyz`.
    pub http: HttpConfig,
    /// Logging.
    pub log: LogConfig,
}

/// Kafka settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Consumer group id; instances with one group id share the partitions.
    pub group_id: String,
    /// Source topic name → contract (`exposure`, `ad_click`, `signup`, `trial`, `call`, `contract`, `order`).
    pub topics: BTreeMap<String, SourceKind>,
    /// Topic the normalized events are published to, keyed by lead identity.
    pub normalized_topic: String,
    /// Dead-letter topic for rejected messages.
    pub dead_letter_topic: String,
    /// Extra librdkafka properties for both consumer and producer (SASL/SSL included).
    pub properties: KafkaProperties,
    /// SASL password; better set by `LEADSTREAM_KAFKA__SASL_PASSWORD` or `sasl_password_file`.
    pub sasl_password: Option<Secret<String>>,
    /// File holding the SASL password.
    pub sasl_password_file: Option<PathBuf>,
}

pub use leadstream_runtime::clickhouse::ClickHouseConfig;

impl KafkaConfig {
    /// Where the collector's Kafka clients connect.
    pub fn connection(&self) -> leadstream_runtime::kafka::Connection<'_> {
        leadstream_runtime::kafka::Connection {
            brokers: &self.brokers,
            properties: &self.properties,
            sasl_password: self.sasl_password.as_ref(),
        }
    }
}

/// Normalization settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormalizeConfig {
    /// IANA zone for timestamps written without an offset.
    pub time_zone: String,
    /// Channel rules file.
    pub channels_file: PathBuf,
    /// Messages above this size are dead-lettered unparsed.
    pub max_message_bytes: usize,
    /// Salt for phone/email hashes; set by `LEADSTREAM_NORMALIZE__PII_SALT` or `pii_salt_file`.
    pub pii_salt: Option<Secret<String>>,
    /// File holding the salt.
    pub pii_salt_file: Option<PathBuf>,
    /// Keys holding personal data, dropped on every topic at any depth (`phone` and `email`
    /// are always personal data: kept as salted hashes, or dropped where they do not parse).
    pub pii_keys: Vec<String>,
    /// Identity ids (native ids, `device_id`, `user_id`, `lead_id`) rejected as `invalid_id`
    /// because they identify nobody (ids of only `0` and `-` too).
    pub placeholder_ids: Vec<String>,
}

/// Insert batching.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// A batch is flushed at this many messages.
    pub max_rows: usize,
    /// ... or when the messages read hold this many bytes ...
    pub max_bytes: usize,
    /// ... or this long after its first message, whichever comes first.
    pub flush_interval_ms: u64,
}

/// Capped exponential backoff.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// First wait.
    pub initial_backoff_ms: u64,
    /// Longest wait.
    pub max_backoff_ms: u64,
}

/// HTTP endpoint settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address; empty disables the endpoint.
    pub listen: String,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            kafka: KafkaConfig {
                brokers: "127.0.0.1:9092".into(),
                group_id: "leadstream-collector".into(),
                topics: SourceKind::ALL
                    .iter()
                    .map(|k| (k.canonical_topic().to_string(), *k))
                    .collect(),
                normalized_topic: "leads.normalized".into(),
                dead_letter_topic: "leads.dlq".into(),
                properties: KafkaProperties::default(),
                sasl_password: None,
                sasl_password_file: None,
            },
            clickhouse: ClickHouseConfig {
                url: "http://127.0.0.1:8123".into(),
                database: "leadstream".into(),
                user: "default".into(),
                password: None,
                password_file: None,
                topology: Topology::Single,
                cluster: String::new(),
                request_timeout_ms: 30_000,
            },
            normalize: NormalizeConfig {
                time_zone: "Asia/Shanghai".into(),
                channels_file: "config/channels.yaml".into(),
                max_message_bytes: leadstream_schemas::DEFAULT_MAX_MESSAGE_BYTES,
                pii_salt: None,
                pii_salt_file: None,
                pii_keys: Screening::default().pii_keys,
                placeholder_ids: Screening::default().placeholder_ids,
            },
            batch: BatchConfig {
                max_rows: 10_000,
                max_bytes: 16 * 1024 * 1024,
                flush_interval_ms: 500,
            },
            retry: RetryConfig {
                initial_backoff_ms: 100,
                max_backoff_ms: 10_000,
            },
            rate_limits: BTreeMap::new(),
            http: HttpConfig {
                listen: "127.0.0.1:9464".into(),
            },
            log: LogConfig::default(),
        }
    }
}

impl CollectorConfig {
    /// Defaults, then `file` (when given), then `LEADSTREAM_*` environment variables; validated.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        // Figment merges maps key by key, so default topics in the base layer would stay subscribed
        // next to a file's own; the default topic map applies only when no layer gives one.
        let mut base = CollectorConfig::default();
        let default_topics = std::mem::take(&mut base.kafka.topics);
        let mut cfg = load_layered(base, file, SECTIONS)?;
        if cfg.kafka.topics.is_empty() {
            cfg.kafka.topics = default_topics;
        }
        cfg.resolve_secret_files()?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn resolve_secret_files(&mut self) -> Result<(), ConfigError> {
        read_secret_file(
            "kafka.sasl_password_file",
            &self.kafka.sasl_password_file,
            &mut self.kafka.sasl_password,
        )?;
        read_secret_file(
            "clickhouse.password_file",
            &self.clickhouse.password_file,
            &mut self.clickhouse.password,
        )?;
        read_secret_file(
            "normalize.pii_salt_file",
            &self.normalize.pii_salt_file,
            &mut self.normalize.pii_salt,
        )
    }

    /// Checks every value; the error names the first offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let k = &self.kafka;
        if k.brokers.trim().is_empty() {
            return Err(invalid("kafka.brokers", "must not be empty"));
        }
        if k.group_id.trim().is_empty() {
            return Err(invalid("kafka.group_id", "must not be empty"));
        }
        if k.topics.is_empty() {
            return Err(invalid(
                "kafka.topics",
                "must map at least one source topic to its contract",
            ));
        }
        for (name, key) in [
            (&k.normalized_topic, "kafka.normalized_topic"),
            (&k.dead_letter_topic, "kafka.dead_letter_topic"),
        ] {
            if name.trim().is_empty() {
                return Err(invalid(key, "must not be empty"));
            }
            if k.topics.contains_key(name.as_str()) {
                return Err(invalid(
                    key,
                    format!("{name} is also a source topic; that would loop"),
                ));
            }
        }
        if k.normalized_topic == k.dead_letter_topic {
            return Err(invalid(
                "kafka.dead_letter_topic",
                "must differ from kafka.normalized_topic",
            ));
        }
        k.properties
            .reject_managed(leadstream_runtime::kafka::MANAGED)?;
        self.clickhouse.validate()?;
        let n = &self.normalize;
        n.time_zone.parse::<chrono_tz::Tz>().map_err(|_| {
            invalid(
                "normalize.time_zone",
                format!("{:?} is not an IANA time zone", n.time_zone),
            )
        })?;
        if !(1024..=16 * 1024 * 1024).contains(&n.max_message_bytes) {
            return Err(invalid(
                "normalize.max_message_bytes",
                "must be between 1024 and 16777216",
            ));
        }
        match &n.pii_salt {
            None => {
                return Err(invalid(
                    "normalize.pii_salt",
                    "is required: set LEADSTREAM_NORMALIZE__PII_SALT or normalize.pii_salt_file",
                ))
            }
            Some(s) if s.expose().len() < 8 => {
                return Err(invalid(
                    "normalize.pii_salt",
                    "must be at least 8 characters",
                ))
            }
            Some(_) => {}
        }
        if self.batch.max_rows == 0 || self.batch.max_rows > 1_000_000 {
            return Err(invalid("batch.max_rows", "must be between 1 and 1000000"));
        }
        if !(64 * 1024..=1024 * 1024 * 1024).contains(&self.batch.max_bytes) {
            return Err(invalid(
                "batch.max_bytes",
                "must be between 65536 and 1073741824",
            ));
        }
        if !(1..=60_000).contains(&self.batch.flush_interval_ms) {
            return Err(invalid(
                "batch.flush_interval_ms",
                "must be between 1 and 60000",
            ));
        }
        let r = &self.retry;
        if r.initial_backoff_ms == 0 || r.max_backoff_ms < r.initial_backoff_ms {
            return Err(invalid(
                "retry",
                "initial_backoff_ms must be positive and not above max_backoff_ms",
            ));
        }
        for (topic, rate) in &self.rate_limits {
            if !k.topics.contains_key(topic) {
                return Err(invalid(
                    "rate_limits",
                    format!("{topic} is not a configured source topic"),
                ));
            }
            if *rate == 0 {
                return Err(invalid(
                    "rate_limits",
                    format!("{topic}: rate must be positive (remove the entry for no limit)"),
                ));
            }
        }
        if !self.http.listen.is_empty() && self.http.listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(invalid(
                "http.listen",
                format!("{:?} is not an ip:port address", self.http.listen),
            ));
        }
        Ok(())
    }

    /// Reads the channel rules file and builds the normalizer's configuration.
    pub fn normalizer_config(&self) -> Result<NormalizerConfig, ConfigError> {
        let n = &self.normalize;
        let text = std::fs::read_to_string(&n.channels_file).map_err(|e| {
            invalid(
                "normalize.channels_file",
                format!("cannot read {}: {e}", n.channels_file.display()),
            )
        })?;
        let rules = ChannelRules::from_yaml(&text)
            .map_err(|e| invalid("normalize.channels_file", e.to_string()))?;
        Ok(NormalizerConfig {
            channel_rules: rules,
            time_zone: n
                .time_zone
                .parse()
                .map_err(|_| invalid("normalize.time_zone", "not an IANA time zone"))?,
            pii_salt: n
                .pii_salt
                .clone()
                .ok_or_else(|| invalid("normalize.pii_salt", "is required"))?,
            max_message_bytes: n.max_message_bytes,
            screening: Screening {
                pii_keys: n.pii_keys.clone(),
                placeholder_ids: n.placeholder_ids.clone(),
            },
        })
    }

    /// Flush interval as a duration.
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.batch.flush_interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> CollectorConfig {
        let mut c = CollectorConfig::default();
        c.normalize.pii_salt = Some(Secret::new("a-long-salt".into()));
        c
    }

    #[test]
    fn defaults_with_a_salt_are_valid() {
        valid().validate().unwrap();
    }

    #[test]
    fn errors_name_the_key() {
        let mut c = valid();
        c.batch.max_rows = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("`batch.max_rows`"));
        let mut c = valid();
        c.normalize.pii_salt = None;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("`normalize.pii_salt`"));
        let mut c = valid();
        c.kafka.normalized_topic = "leads.signup".into();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("`kafka.normalized_topic`"));
        let mut c = valid();
        c.rate_limits.insert("leads.nope".into(), 5);
        assert!(c.validate().unwrap_err().to_string().contains("leads.nope"));
        let mut c = valid();
        c.normalize.time_zone = "Mars/Olympus".into();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("`normalize.time_zone`"));
    }

    #[test]
    fn secrets_never_print() {
        let mut c = valid();
        c.clickhouse.password = Some(Secret::new("ch-pass-123".into()));
        c.kafka
            .properties
            .0
            .insert("sasl.password".into(), "kafka-pass-456".into());
        c.kafka
            .properties
            .0
            .insert("sasl.username".into(), "svc-user".into());
        let dump = format!("{c:?}");
        assert!(
            !dump.contains("ch-pass-123")
                && !dump.contains("kafka-pass-456")
                && !dump.contains("a-long-salt"),
            "{dump}"
        );
        assert!(dump.contains("svc-user"));
    }

    #[test]
    fn environment_overrides_the_file_and_ignores_foreign_variables() {
        // Process-wide environment: this is the only test in this crate that sets variables.
        std::env::set_var("LEADSTREAM_NORMALIZE__PII_SALT", "salt-from-env");
        std::env::set_var("LEADSTREAM_BATCH__MAX_ROWS", "77");
        std::env::set_var("LEADSTREAM_SOMETHING_ELSE", "not a config key");
        let c = CollectorConfig::load(None).unwrap();
        assert_eq!(c.batch.max_rows, 77);
        assert_eq!(c.kafka.topics.len(), 7, "default topics without a file");
        let dir = std::env::temp_dir().join(format!("ls-cfg-topics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.yaml");
        std::fs::write(&f, "kafka:\n  topics:\n    shop.orders: order\n").unwrap();
        let c = CollectorConfig::load(Some(&f)).unwrap();
        assert_eq!(
            c.kafka.topics.keys().collect::<Vec<_>>(),
            ["shop.orders"],
            "a file's topics replace the defaults"
        );
        assert_eq!(
            c.normalize.pii_salt.as_ref().map(|s| s.expose().as_str()),
            Some("salt-from-env")
        );
        for v in [
            "LEADSTREAM_NORMALIZE__PII_SALT",
            "LEADSTREAM_BATCH__MAX_ROWS",
            "LEADSTREAM_SOMETHING_ELSE",
        ] {
            std::env::remove_var(v);
        }
    }

    #[test]
    fn the_shipped_file_equals_the_defaults() {
        let file = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../config/collector.yaml"
        ));
        let text = std::fs::read_to_string(file).expect("config/collector.yaml");
        let parsed: CollectorConfig = serde_yaml::from_str(&text).expect("parses");
        assert_eq!(
            serde_yaml::to_string(&parsed).unwrap(),
            serde_yaml::to_string(&CollectorConfig::default()).unwrap()
        );
    }

    #[test]
    fn yaml_unknown_keys_are_rejected() {
        let dir = std::env::temp_dir().join(format!("ls-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.yaml");
        std::fs::write(&f, "batch:\n  max_rowz: 5\n").unwrap();
        let e = CollectorConfig::load(Some(&f)).unwrap_err().to_string();
        assert!(e.contains("max_rowz"), "{e}");
    }
}
