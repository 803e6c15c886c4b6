//! `leadstream-collector`: loads configuration, sets up telemetry and signals, and runs the collector.

use anyhow::Context;
use clap::Parser;
use leadstream_collector::{run, telemetry, CollectorConfig};
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

/// Reads lead events from the source Kafka topics, validates and normalizes them, writes them to
/// ClickHouse (`lead_events`, `ingest_errors`), publishes them to `leads.normalized` for the
/// aggregator and sends rejects to `leads.dlq`.
///
/// Configuration: built-in defaults, then the YAML file given by --config, then environment
/// variables LEADSTREAM_<SECTION>__<KEY> (e.g. LEADSTREAM_CLICKHOUSE__URL,
/// LEADSTREAM_CLICKHOUSE__PASSWORD, LEADSTREAM_KAFKA__SASL_PASSWORD, LEADSTREAM_NORMALIZE__PII_SALT).
/// See config/collector.yaml for every key. SIGTERM or Ctrl-C stops consuming, flushes the batch,
/// commits offsets and exits 0.
#[derive(Parser, Debug)]
#[command(name = "leadstream-collector", version, about, long_about)]
struct Args {
    /// YAML configuration file.
    #[arg(
        short,
        long,
        env = "LEADSTREAM_CONFIG",
        default_value = "config/collector.yaml"
    )]
    config: PathBuf,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    print_config: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cfg = CollectorConfig::load(Some(&args.config))
        .with_context(|| format!("loading {}", args.config.display()))?;
    if args.print_config {
        println!(
            "{}",
            serde_yaml::to_string(&cfg).context("rendering configuration")?
        );
        return Ok(());
    }
    telemetry::init_logging(&cfg.log);
    let shutdown = CancellationToken::new();
    tokio::spawn(leadstream_runtime::signals::cancel_on_signal(
        shutdown.clone(),
    ));
    run(cfg, shutdown).await.context("collector failed")
}
