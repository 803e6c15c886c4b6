//! Typed, layered configuration: built-in defaults (= `config/aggregator.yaml`), then a YAML
//! file, then `LEADSTREAM_<SECTION>__<KEY>` environment variables. Secrets never print.

use leadstream_runtime::clickhouse::ClickHouseConfig;
use leadstream_runtime::config::{invalid, load_layered, read_secret_file};
pub use leadstream_runtime::config::{ConfigError, KafkaProperties, LogConfig};
use leadstream_schemas::migrations::Topology;
use leadstream_schemas::Secret;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

const SECTIONS: &[&str] = &[
    "kafka",
    "clickhouse",
    "funnels",
    "state",
    "attribution",
    "batch",
    "api",
    "log",
];

/// The aggregator's whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatorConfig {
    /// Kafka connection.
    pub kafka: KafkaConfig,
    /// ClickHouse connection (events are read from it at start, results written to it).
    pub clickhouse: ClickHouseConfig,
    /// Funnel declarations.
    pub funnels: FunnelsConfig,
    /// Event-time handling.
    pub state: StateConfig,
    /// Which touches attribute a lead.
    pub attribution: AttributionConfig,
    /// Batching of result writes.
    pub batch: BatchConfig,
    /// HTTP API and operational endpoints.
    pub api: ApiConfig,
    /// Logging.
    pub log: LogConfig,
}

/// Kafka settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Consumer group id.
    pub group_id: String,
    /// The collector's normalized topic.
    pub topic: String,
    /// Where members of the group ask each other to recheck a lead (identity stitching across
    /// partitions); needs the normalized topic's partition count.
    pub stitch_topic: String,
    /// Where messages that cannot be read go (original bytes, reason in `ls.*` headers).
    pub dead_letter_topic: String,
    /// Any librdkafka property (SASL/SSL included).
    pub properties: KafkaProperties,
    /// SASL password; better `LEADSTREAM_KAFKA__SASL_PASSWORD` or `sasl_password_file`.
    pub sasl_password: Option<Secret<String>>,
    /// File holding the SASL password.
    pub sasl_password_file: Option<PathBuf>,
}

impl KafkaConfig {
    /// Where the aggregator's Kafka clients connect.
    pub fn connection(&self) -> leadstream_runtime::kafka::Connection<'_> {
        leadstream_runtime::kafka::Connection {
            brokers: &self.brokers,
            properties: &self.properties,
            sasl_password: self.sasl_password.as_ref(),
        }
    }
}

/// Where the funnels are declared.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunnelsConfig {
    /// `config/funnel.yaml`.
    pub file: PathBuf,
}

/// Event-time handling.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// Events older than the newest event time seen minus this are "too late": still applied
    /// exactly (a lead's settled events that left memory are read back first) but counted and
    /// recorded in `late_events`, since they change answers dashboards already showed as
    /// settled.
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// Touches kept per device; further ones are counted
    /// (`leadstream_aggregator_touches_capped_total`) and dropped: a hot key (a placeholder id
    /// the collector's screening missed, a bot) would otherwise make every touch replay them all.
    pub max_touches_per_device: usize,
    /// How often the owned partitions' state is checkpointed to ClickHouse
    /// (`aggregator_checkpoints`). Offsets are committed only with a checkpoint, so a restart
    /// loads it and replays at most this much of the Kafka tail, instead of all history. A
    /// large state stretches it: checkpoints are spaced at least ten times what the last one
    /// took.
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// A lead with no event for this long in event time leaves memory with the devices whose
    /// touches it holds (stored in `aggregator_evicted`, read back when an event, a copy or a
    /// claim for it arrives), so memory follows the active leads, not history. Only a single
    /// member owning every partition evicts.
    #[serde(with = "humantime_serde")]
    pub idle_after: Duration,
    /// A per-minute rollup bucket of a minute this much older than its partition's newest
    /// event leaves memory (its count stored in `aggregator_evicted`, read back when a change
    /// touches it): shorter holds less, and reads back more often for leads that started
    /// earlier and still move. Evicted only where leads are (`idle_after`).
    #[serde(with = "humantime_serde")]
    pub rollup_idle_after: Duration,
    /// A lead's events older than the newest event time minus `allowed_lateness` are settled;
    /// once a lead (with the devices it holds) has at least this many, those its replays can
    /// do without (repeated exposures, calls that change nothing) leave memory, stored in
    /// `aggregator_evicted` and read back when an event the rest cannot absorb arrives (earlier
    /// than them, or a copy of one). Where leads are evicted (`idle_after`).
    pub fold_min_events: usize,
}

/// Which touches attribute a lead.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributionConfig {
    /// Touches (exposures, clicks) older than this before a lead's signup do not attribute it
    /// (first and last touch), as in ad platforms; they still count in the funnel. Leads without
    /// a signup attribute to all their touches. The generator's truth uses the default.
    #[serde(with = "humantime_serde")]
    pub lookback: Duration,
}

/// Batching of result writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Flush after this many consumed messages.
    pub max_events: usize,
    /// Flush at least this often while messages arrive.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
}

/// HTTP settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Listen address for the API, `/metrics`, `/healthz`, `/readyz`.
    pub listen: String,
    /// Below this many leads in either arm, the A/B comparison answers "insufficient data".
    pub min_sample: u64,
    /// ClickHouse user the API queries as (e.g. a read-only one); default: `clickhouse.user`.
    pub clickhouse_user: Option<String>,
    /// Its password; better `LEADSTREAM_API__CLICKHOUSE_PASSWORD` or `clickhouse_password_file`.
    pub clickhouse_password: Option<Secret<String>>,
    /// File holding that password.
    pub clickhouse_password_file: Option<PathBuf>,
    /// ClickHouse stops an API query after this long (`max_execution_time`).
    #[serde(with = "humantime_serde")]
    pub max_execution_time: Duration,
    /// A request gets a 503 when it takes longer than this.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Requests served at once; more get a 503 at once instead of queueing on ClickHouse.
    pub max_concurrent_requests: usize,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        Self {
            kafka: KafkaConfig {
                brokers: "127.0.0.1:9092".into(),
                group_id: "leadstream-aggregator".into(),
                topic: "leads.normalized".into(),
                stitch_topic: "leads.stitch".into(),
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
            funnels: FunnelsConfig {
                file: "config/funnel.yaml".into(),
            },
            state: StateConfig {
                allowed_lateness: Duration::from_secs(3600),
                max_touches_per_device: crate::engine::DEFAULT_TOUCH_CAP,
                checkpoint_interval: Duration::from_secs(10),
                idle_after: Duration::from_secs(30 * 86_400),
                rollup_idle_after: Duration::from_secs(86_400),
                fold_min_events: crate::engine::DEFAULT_FOLD_MIN,
            },
            attribution: AttributionConfig {
                lookback: Duration::from_secs(30 * 86_400),
            },
            batch: BatchConfig {
                max_events: 20_000,
                flush_interval: Duration::from_millis(500),
            },
            api: ApiConfig {
                listen: "127.0.0.1:9465".into(),
                min_sample: 100,
                clickhouse_user: None,
                clickhouse_password: None,
                clickhouse_password_file: None,
                max_execution_time: Duration::from_secs(5),
                request_timeout: Duration::from_secs(10),
                max_concurrent_requests: 32,
            },
            log: LogConfig::default(),
        }
    }
}

impl AggregatorConfig {
    /// The ClickHouse settings of the API's queries: its own user when one is configured.
    pub fn api_clickhouse(&self) -> ClickHouseConfig {
        let mut c = self.clickhouse.clone();
        if let Some(user) = &self.api.clickhouse_user {
            c.user = user.clone();
            c.password = self.api.clickhouse_password.clone();
        }
        c
    }

    /// Defaults, then `file` (when given), then `LEADSTREAM_*` environment variables; validated.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut cfg: Self = load_layered(Self::default(), file, SECTIONS)?;
        read_secret_file(
            "kafka.sasl_password_file",
            &cfg.kafka.sasl_password_file,
            &mut cfg.kafka.sasl_password,
        )?;
        read_secret_file(
            "clickhouse.password_file",
            &cfg.clickhouse.password_file,
            &mut cfg.clickhouse.password,
        )?;
        read_secret_file(
            "api.clickhouse_password_file",
            &cfg.api.clickhouse_password_file,
            &mut cfg.api.clickhouse_password,
        )?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every value; the error names the first offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let k = &self.kafka;
        for (v, key) in [
            (&k.brokers, "kafka.brokers"),
            (&k.group_id, "kafka.group_id"),
            (&k.topic, "kafka.topic"),
            (&k.stitch_topic, "kafka.stitch_topic"),
            (&k.dead_letter_topic, "kafka.dead_letter_topic"),
        ] {
            if v.trim().is_empty() {
                return Err(invalid(key, "must not be empty"));
            }
        }
        k.properties
            .reject_managed(leadstream_runtime::kafka::MANAGED)?;
        k.properties
            .reject_managed(&["partition.assignment.strategy"])?;
        if k.topic == k.stitch_topic {
            return Err(invalid(
                "kafka.stitch_topic",
                "must differ from kafka.topic",
            ));
        }
        self.clickhouse.validate()?;
        if self.state.allowed_lateness.is_zero() {
            return Err(invalid("state.allowed_lateness", "must be positive"));
        }
        if self.state.checkpoint_interval.is_zero() {
            return Err(invalid("state.checkpoint_interval", "must be positive"));
        }
        if self.state.idle_after.is_zero() {
            return Err(invalid("state.idle_after", "must be positive"));
        }
        if self.state.rollup_idle_after.is_zero() {
            return Err(invalid("state.rollup_idle_after", "must be positive"));
        }
        if self.state.fold_min_events == 0 {
            return Err(invalid("state.fold_min_events", "must be positive"));
        }
        if self.state.max_touches_per_device == 0 {
            return Err(invalid("state.max_touches_per_device", "must be positive"));
        }
        if self.attribution.lookback.is_zero() {
            return Err(invalid("attribution.lookback", "must be positive"));
        }
        if self.batch.max_events == 0 {
            return Err(invalid("batch.max_events", "must be positive"));
        }
        if self.batch.flush_interval.is_zero() {
            return Err(invalid("batch.flush_interval", "must be positive"));
        }
        if self.api.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "api.listen",
                format!("{:?} is not an ip:port address", self.api.listen),
            ));
        }
        if self.api.min_sample == 0 {
            return Err(invalid("api.min_sample", "must be positive"));
        }
        if self.api.max_execution_time < Duration::from_secs(1) {
            return Err(invalid(
                "api.max_execution_time",
                "must be at least 1s (ClickHouse counts whole seconds)",
            ));
        }
        if self.api.request_timeout.is_zero() {
            return Err(invalid("api.request_timeout", "must be positive"));
        }
        if self.api.max_concurrent_requests == 0 {
            return Err(invalid("api.max_concurrent_requests", "must be positive"));
        }
        if self.api.clickhouse_password.is_some() && self.api.clickhouse_user.is_none() {
            return Err(invalid(
                "api.clickhouse_user",
                "is required when api.clickhouse_password is set",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_file_equals_the_defaults() {
        let file = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../config/aggregator.yaml"
        ));
        let text = std::fs::read_to_string(file).expect("config/aggregator.yaml");
        let parsed: AggregatorConfig = serde_yaml::from_str(&text).expect("parses");
        assert_eq!(
            serde_yaml::to_string(&parsed).unwrap(),
            serde_yaml::to_string(&AggregatorConfig::default()).unwrap()
        );
    }

    #[test]
    fn the_lookback_is_the_one_the_generators_truth_applies() {
        assert_eq!(
            AggregatorConfig::default().attribution.lookback,
            Duration::from_millis(leadstream_generator::truth::ATTRIBUTION_LOOKBACK_MS as u64)
        );
    }

    #[test]
    fn invalid_values_name_their_key() {
        let mut c = AggregatorConfig::default();
        c.api.listen = "nowhere".into();
        assert!(c.validate().unwrap_err().to_string().contains("api.listen"));
        let mut c = AggregatorConfig::default();
        c.state.allowed_lateness = Duration::ZERO;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("state.allowed_lateness"));
    }
}
