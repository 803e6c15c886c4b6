//! `leadstream-aggregator`: loads configuration, sets up telemetry and signals, and runs the
//! aggregator.

use anyhow::Context;
use clap::Parser;
use leadstream_aggregator::{run, telemetry, AggregatorConfig, Funnels};
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

/// Keeps every lead's place in the funnels declared in config/funnel.yaml from the collector's
/// normalized topic: identity stitching (device to user), first/last-touch attribution, event-time
/// replays (late and out-of-order events correct earlier answers; duplicates count once). Writes
/// stage_transitions and lead_funnels to ClickHouse and answers over HTTP: /api/v1/funnels/{funnel}/
/// cohort, flow, occupancy, losses, transitions, channels, compare; /metrics, /healthz, /readyz.
///
/// Configuration: built-in defaults, then the YAML file given by --config, then environment
/// variables LEADSTREAM_<SECTION>__<KEY> (e.g. LEADSTREAM_API__LISTEN,
/// LEADSTREAM_CLICKHOUSE__PASSWORD). See config/aggregator.yaml for every key. At start the state
/// is rebuilt from ClickHouse; SIGTERM or Ctrl-C flushes, commits offsets and exits 0.
#[derive(Parser, Debug)]
#[command(name = "leadstream-aggregator", version, about, long_about)]
struct Args {
    /// YAML configuration file.
    #[arg(
        short,
        long,
        env = "LEADSTREAM_CONFIG",
        default_value = "config/aggregator.yaml"
    )]
    config: PathBuf,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    print_config: bool,
    /// Validate the funnel file and exit.
    #[arg(long)]
    check_funnels: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cfg = AggregatorConfig::load(Some(&args.config))
        .with_context(|| format!("loading {}", args.config.display()))?;
    if args.print_config {
        println!(
            "{}",
            serde_yaml::to_string(&cfg).context("rendering configuration")?
        );
        return Ok(());
    }
    if args.check_funnels {
        let f = Funnels::load(&cfg.funnels.file)?;
        for funnel in &f.funnels {
            println!(
                "{}: {} stages, {} special, {} rules",
                funnel.name,
                funnel.stages.len(),
                funnel.special_stages.len(),
                funnel.rules.len()
            );
        }
        return Ok(());
    }
    telemetry::init_logging(&cfg.log);
    let shutdown = CancellationToken::new();
    tokio::spawn(leadstream_runtime::signals::cancel_on_signal(
        shutdown.clone(),
    ));
    run(cfg, shutdown).await.context("aggregator failed")
}
