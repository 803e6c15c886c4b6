//! Plumbing every leadstream service binary shares, so the collector, the generator and the
//! aggregator load configuration, talk to Kafka, log and stop the same way.

pub mod clickhouse;
pub mod config;
pub mod dead_letter;
pub mod lag;
pub mod signals;
pub mod telemetry;

pub use config::{ConfigError, KafkaProperties, LogConfig, LogFormat};
