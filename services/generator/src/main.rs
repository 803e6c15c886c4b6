//! `leadstream-generator`: loads configuration, applies command-line overrides, wires signals and
//! runs the generator.

use anyhow::Context;
use clap::Parser;
use leadstream_generator::{run, Destination, GeneratorConfig, RunOptions};
use leadstream_runtime::{signals, telemetry};
use std::io::IsTerminal;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

/// Produces realistic multi-channel lead traffic into the seven source topics (leads.exposure,
/// leads.ad_click, leads.signup, leads.trial, leads.call, leads.contract, leads.order) in the wire
/// contracts of SPEC §1: anonymous ad touches linked to signups by device id, trials that expire,
/// calls with every outcome, contracts signed, lost and cancelled, repurchases, experiment variants
/// with a true lift; plus late, out-of-order, duplicate and malformed deliveries.
///
/// Two modes: a fixed number of leads sent as fast as the broker takes (--leads N, with a progress
/// bar on a terminal), or continuous traffic at --rate leads per second on the wall clock
/// (--continuous) until SIGTERM or Ctrl-C.
///
/// The output is a pure function of the seed, the configuration and the start time: the same
/// --seed gives byte-identical messages and truth. --truth FILE writes the exact expected results
/// (funnel stage counts per first-touch channel, last-touch channel and variant, losses, backflows,
/// message counts by kind): see "The truth file" in README.md.
///
/// Configuration: built-in defaults, then --config (config/generator.yaml lists every key), then
/// LEADSTREAM_<SECTION>__<KEY> variables (LEADSTREAM_KAFKA__BROKERS, LEADSTREAM_KAFKA__SASL_PASSWORD),
/// then these flags.
#[derive(Parser, Debug)]
#[command(name = "leadstream-generator", version, about, long_about)]
struct Args {
    /// YAML configuration file.
    #[arg(short, long, default_value = "config/generator.yaml")]
    config: PathBuf,
    /// Seed of every random choice.
    #[arg(long)]
    seed: Option<u64>,
    /// Fixed-count mode: generate this many leads, as fast as the broker takes.
    #[arg(long, conflicts_with = "continuous")]
    leads: Option<u64>,
    /// Continuous mode: new leads at --rate per second of wall time until stopped.
    #[arg(long)]
    continuous: bool,
    /// New leads per second of event time (and of wall time when continuous).
    #[arg(long)]
    rate: Option<f64>,
    /// Event time of the first lead: RFC 3339, `now`, or `auto` (a fixed instant for fixed-count
    /// runs, now for continuous ones).
    #[arg(long)]
    start: Option<String>,
    /// Multiply every delay between funnel steps (0.1 = ten times faster funnels).
    #[arg(long)]
    delay_scale: Option<f64>,
    /// Kafka bootstrap servers.
    #[arg(long)]
    brokers: Option<String>,
    /// Prefix for the topic names (`<prefix>leads.signup`).
    #[arg(long)]
    topic_prefix: Option<String>,
    /// Write the exact expected results of the run to this JSON file at the end.
    #[arg(long, value_name = "FILE")]
    truth: Option<PathBuf>,
    /// Write the messages as JSON lines to FILE (`-` for stdout) instead of producing them.
    #[arg(long, value_name = "FILE")]
    dry_run: Option<PathBuf>,
    /// Never draw a progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    print_config: bool,
}

impl Args {
    fn apply(&self, cfg: &mut GeneratorConfig) {
        if let Some(s) = self.seed {
            cfg.seed = s;
        }
        if let Some(n) = self.leads {
            cfg.traffic.leads = n;
        }
        if self.continuous {
            cfg.traffic.leads = 0;
        }
        if let Some(r) = self.rate {
            cfg.traffic.rate = r;
        }
        if let Some(s) = &self.start {
            cfg.traffic.start = s.clone();
        }
        if let Some(s) = self.delay_scale {
            cfg.traffic.delay_scale = s;
        }
        if let Some(b) = &self.brokers {
            cfg.kafka.brokers = b.clone();
        }
        if let Some(p) = &self.topic_prefix {
            cfg.kafka.topic_prefix = p.clone();
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut cfg = GeneratorConfig::load(Some(&args.config))
        .with_context(|| format!("loading {}", args.config.display()))?;
    args.apply(&mut cfg);
    cfg.validate().context("command-line overrides")?;
    if args.print_config {
        println!(
            "{}",
            serde_yaml::to_string(&cfg).context("rendering configuration")?
        );
        return Ok(());
    }
    telemetry::init_logging(&cfg.log);
    let shutdown = CancellationToken::new();
    tokio::spawn(signals::cancel_on_signal(shutdown.clone()));
    let opts = RunOptions {
        destination: match &args.dry_run {
            Some(p) => Destination::File(p.clone()),
            None => Destination::Kafka,
        },
        truth_file: args.truth.clone(),
        progress: !args.no_progress && std::io::stderr().is_terminal(),
    };
    run(cfg, opts, shutdown).await.context("generator failed")?;
    Ok(())
}
