//! The leadstream traffic generator: realistic multi-channel lead traffic for the seven source
//! topics, deterministic for a seed, with the exact expected results (the truth) computed from
//! the delivered events by an independent batch pass.
//!
//! Pure parts: [`story`] (what each lead does), [`wire`] (how it is written), [`poison`]
//! (malformed messages), [`schedule`] (delivery order: late, duplicate and malformed deliveries),
//! [`truth`] (the oracle). [`run`] sends a schedule to Kafka or to a file.

pub mod config;
pub mod output;
pub mod poison;
pub mod schedule;
pub mod story;
pub mod truth;
pub mod wire;

pub use config::GeneratorConfig;
pub use schedule::{Delivery, Label, Schedule};
pub use truth::{Truth, TruthBuilder, TruthEvent};

use output::{FileOutput, KafkaOutput, OutputError};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A run that could not complete.
#[derive(Debug, thiserror::Error)]
pub enum GeneratorError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] leadstream_runtime::ConfigError),
    /// A message could not be delivered or written.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// The truth file could not be written.
    #[error("writing the truth to {path}: {source}")]
    Truth {
        /// File.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Where the messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// The configured Kafka cluster.
    Kafka,
    /// A JSON-lines file (`-` for standard output), nothing sent.
    File(PathBuf),
}

/// Per-run choices that are not configuration.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where the messages go.
    pub destination: Destination,
    /// Write the truth here at the end of the run.
    pub truth_file: Option<PathBuf>,
    /// Show a progress bar (fixed-count runs on a terminal).
    pub progress: bool,
}

/// What a run did.
#[derive(Debug)]
pub struct RunReport {
    /// The truth over every delivered message.
    pub truth: Truth,
    /// The distinct valid events delivered, in delivery order.
    pub events: Vec<TruthEvent>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

enum Sink {
    Kafka(Box<KafkaOutput>),
    File(FileOutput),
}

impl Sink {
    async fn send(&mut self, d: &Delivery) -> Result<(), OutputError> {
        match self {
            Sink::Kafka(k) => k.send(d).await,
            Sink::File(f) => f.send(d),
        }
    }

    async fn flush(&mut self) -> Result<(), OutputError> {
        match self {
            Sink::Kafka(k) => k.flush().await,
            Sink::File(f) => f.flush(),
        }
    }
}

/// Records a delivery in the truth, by its label.
pub fn record(truth: &mut TruthBuilder, d: Delivery) {
    match d.label {
        Label::Valid(e) => truth.valid(*e, d.deliver_at_ms),
        Label::Duplicate => truth.duplicate(),
        Label::Copy(e) => truth.copy(*e),
        Label::Poison(c) => truth.poison(c),
    }
}

/// Generates and sends the configured traffic until a fixed-count run is complete or `shutdown`
/// is cancelled; then waits for every acknowledgement and writes the truth of what was sent.
///
/// Fixed-count runs send as fast as the destination takes. Continuous runs send each message at
/// its delivery time on the wall clock.
pub async fn run(
    cfg: GeneratorConfig,
    opts: RunOptions,
    shutdown: CancellationToken,
) -> Result<RunReport, GeneratorError> {
    cfg.validate()?;
    let started = Instant::now();
    let start_ms = cfg.start_time(chrono::Utc::now())?.timestamp_millis();
    let continuous = cfg.continuous();
    let seed = cfg.seed;
    let total_leads = cfg.traffic.leads;
    let mut sink = match &opts.destination {
        Destination::Kafka => Sink::Kafka(Box::new(KafkaOutput::new(&cfg.kafka)?)),
        Destination::File(p) => Sink::File(FileOutput::create(
            p.clone(),
            cfg.kafka.topic_prefix.clone(),
        )?),
    };
    let mut schedule = Schedule::new(cfg, start_ms);
    let mut truth = TruthBuilder::default();
    let bar = (opts.progress && !continuous).then(|| progress_bar(total_leads));
    let mut last_report = Instant::now();
    let mut sent_at_report = 0u64;
    loop {
        if continuous {
            let Some(at) = schedule.peek_time() else {
                break;
            };
            let wait = at - chrono::Utc::now().timestamp_millis();
            if wait > 0 {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
                }
            }
        }
        if shutdown.is_cancelled() {
            break;
        }
        let Some(d) = schedule.next() else { break };
        sink.send(&d).await?;
        record(&mut truth, d);
        let sent = truth.sent();
        if let Some(b) = &bar {
            if sent % 1024 == 0 {
                b.set_position(schedule.leads_generated());
                b.set_message(format!("{sent} messages"));
            }
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            let rate = (sent - sent_at_report) as f64 / last_report.elapsed().as_secs_f64();
            tracing::info!(
                sent,
                leads = schedule.leads_generated(),
                rate = format!("{rate:.0}/s"),
                "producing"
            );
            last_report = Instant::now();
            sent_at_report = sent;
        }
    }
    sink.flush().await?;
    if let Some(b) = bar {
        b.set_position(schedule.leads_generated());
        b.finish_with_message(format!("{} messages", truth.sent()));
    }
    let t = truth.finish(seed, schedule.leads_generated());
    if let Some(path) = &opts.truth_file {
        write_truth(path, &t)?;
    }
    let report = RunReport {
        truth: t,
        events: truth.events().to_vec(),
        elapsed: started.elapsed(),
    };
    let m = &report.truth.messages;
    tracing::info!(
        sent = m.sent,
        valid = m.valid,
        duplicates = m.duplicates,
        poison = m.poison,
        leads = report.truth.leads_generated,
        seconds = report.elapsed.as_secs_f64(),
        "generator finished"
    );
    Ok(report)
}

fn progress_bar(leads: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(leads);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} leads, {msg} ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// Writes the truth as pretty JSON (a trailing newline included).
pub fn write_truth(path: &std::path::Path, t: &Truth) -> Result<(), GeneratorError> {
    let err = |source| GeneratorError::Truth {
        path: path.to_path_buf(),
        source,
    };
    let mut text = serde_json::to_string_pretty(t).map_err(|e| err(e.into()))?;
    text.push('\n');
    std::fs::write(path, text).map_err(err)
}
