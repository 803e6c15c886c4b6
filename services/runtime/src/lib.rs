//! Plumbing every leadstream service binary shares, so the collector, the generator and the
//! aggregator load configuration, talk to Kafka, log and stop the same way.

pub mod clickhouse;
pub mod config;
pub mod dead_letter;
pub mod group;
pub mod health;
mod internal_events;
pub mod kafka;
pub mod lag;
pub mod retry;
mod schema;
pub mod signals;
pub mod telemetry;
pub mod throttle;
pub mod watchdog;

pub use config::{ConfigError, KafkaProperties, LogConfig, LogFormat};
