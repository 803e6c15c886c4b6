//! The generator's configuration: the traffic shape (leads, rate, start), the channel mix and each
//! channel's behaviour, the two default funnels' step probabilities and delays, the experiment and
//! its true lift, and the realism knobs (late, duplicate and malformed deliveries).
//!
//! Layered like every leadstream service: built-in defaults (equal to `config/generator.yaml`),
//! then the YAML file, then `LEADSTREAM_<SECTION>__<KEY>` variables, then command-line flags.

use chrono::{DateTime, Utc};
use leadstream_runtime::config::{invalid, load_layered, read_secret_file};
use leadstream_runtime::{ConfigError, KafkaProperties, LogConfig};
use leadstream_schemas::{ErrorCategory, Secret};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Top-level sections, the only keys environment variables may set.
const SECTIONS: &[&str] = &[
    "seed",
    "traffic",
    "kafka",
    "channels",
    "experiment",
    "b2c",
    "sales",
    "delays",
    "realism",
    "log",
];

/// The generator's whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorConfig {
    /// Seed of every random choice: one seed, one configuration, one start → one byte-identical output.
    pub seed: u64,
    /// How many leads, how fast, from when.
    pub traffic: TrafficConfig,
    /// Where to produce.
    pub kafka: KafkaConfig,
    /// Acquisition channels, their share of leads and how their leads behave.
    pub channels: Vec<ChannelProfile>,
    /// The landing-page experiment.
    pub experiment: ExperimentConfig,
    /// Step probabilities of the `b2c` funnel after signup.
    pub b2c: B2cConfig,
    /// Step probabilities of the `sales` funnel.
    pub sales: SalesConfig,
    /// Mean delays between steps (exponentially distributed, at least one second).
    pub delays: DelayConfig,
    /// Out-of-order, late, duplicate and malformed deliveries.
    pub realism: RealismConfig,
    /// Logging.
    pub log: LogConfig,
}

/// Traffic volume and timing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficConfig {
    /// Leads to generate in fixed-count mode; 0 runs continuously until stopped.
    pub leads: u64,
    /// New leads per second of event time (and of wall time in continuous mode).
    pub rate: f64,
    /// Event time of the first lead: RFC 3339, `now`, or `auto`: a fixed instant for fixed-count
    /// runs (so a seed alone reproduces them) and now for continuous runs.
    pub start: String,
    /// Zone in which timestamps without an offset are written; must equal the collector's
    /// `normalize.time_zone`.
    pub time_zone: String,
    /// Multiplies every delay (0.1 makes funnels complete ten times faster).
    pub delay_scale: f64,
}

/// Kafka settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Prepended to every source topic name (`<prefix>leads.signup`).
    pub topic_prefix: String,
    /// Extra librdkafka producer properties (SASL/SSL included).
    pub properties: KafkaProperties,
    /// SASL password; better set by `LEADSTREAM_KAFKA__SASL_PASSWORD` or `sasl_password_file`.
    pub sasl_password: Option<Secret<String>>,
    /// File holding the SASL password.
    pub sasl_password_file: Option<PathBuf>,
    /// Messages in flight at once in fixed-count mode.
    pub max_in_flight: usize,
}

/// One acquisition channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelProfile {
    /// The channel name `config/channels.yaml` assigns to this traffic (checked by the tests).
    pub name: String,
    /// Relative share of new leads.
    pub weight: f64,
    /// Ad platform of its exposures and clicks; without one, leads arrive at signup with no touches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// `utm_source` on landing URLs and signups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utm_source: Option<String>,
    /// `utm_medium` on landing URLs and signups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utm_medium: Option<String>,
    /// Campaigns (ids and `utm_campaign` values), chosen uniformly.
    #[serde(default)]
    pub campaigns: Vec<String>,
    /// Fewest exposures of a lead of an ad channel.
    pub min_exposures: u32,
    /// Most exposures of a lead of an ad channel.
    pub max_exposures: u32,
    /// Probability that an exposed device clicks.
    pub p_click: f64,
    /// Probability that a device that clicked signs up.
    pub p_signup: f64,
    /// Multiplies the b2c trial and purchase probabilities of this channel's leads (lead quality).
    pub quality: f64,
}

/// The landing-page experiment: variants, their share and their true lift on one step.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// Experiment id on signups; empty disables the experiment (no variants anywhere).
    pub id: String,
    /// The step whose probability the variants change.
    pub lift_step: LiftStep,
    /// Variants.
    pub variants: Vec<VariantProfile>,
}

/// A step an experiment can lift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LiftStep {
    /// click → signup (`p_signup` of the channel).
    Signup,
    /// signup → trial.
    Trial,
    /// trial → purchase.
    Purchase,
}

/// One experiment variant.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantProfile {
    /// Variant name (`ab=` on landing URLs, `experiment.variant` on signups).
    pub name: String,
    /// Relative share of leads.
    pub weight: f64,
    /// True relative lift on the lift step's probability: 0.15 multiplies it by 1.15.
    pub lift: f64,
}

/// The b2c funnel after signup.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct B2cConfig {
    /// The signup carries the device id of the lead's ad touches (stitching); otherwise the
    /// touches stay an anonymous lead of their own.
    pub p_device_linked: f64,
    /// A signed-up lead starts a trial.
    pub p_trial: f64,
    /// A started trial is activated.
    pub p_activate: f64,
    /// An activated trial ends in a purchase.
    pub p_purchase_activated: f64,
    /// A trial never activated ends in a purchase.
    pub p_purchase_idle: f64,
    /// A lead without a trial buys directly (a skip over `trial`).
    pub p_purchase_direct: f64,
    /// A lead whose trial expired (backflow to `signup`) buys later anyway.
    pub p_purchase_after_expiry: f64,
    /// After each paid order, another one follows.
    pub p_repurchase: f64,
    /// Most paid orders per lead.
    pub max_orders: u32,
    /// Trial plans, chosen uniformly.
    pub plans: Vec<String>,
    /// Lowest and highest order amount in CNY.
    pub order_amount: [f64; 2],
}

/// The sales funnel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SalesConfig {
    /// A signed-up lead is worked by the sales team (gets calls).
    pub p_worked: f64,
    /// A call is inbound rather than outbound.
    pub p_inbound: f64,
    /// Most unanswered calls before the team gives up.
    pub max_attempts: u32,
    /// A call is not answered.
    pub p_no_answer: f64,
    /// An answered first conversation is a `callback` rather than `connected`.
    pub p_callback: f64,
    /// A contacted lead is qualified on a later call.
    pub p_qualified: f64,
    /// A contacted lead that is not qualified is disqualified (with a reason).
    pub p_disqualified: f64,
    /// A disqualified lead comes back later (reactivation) and is qualified.
    pub p_reactivated: f64,
    /// A contacted lead signs without ever being qualified (a skip over `qualified`).
    pub p_signed_unqualified: f64,
    /// A qualified lead signs a contract.
    pub p_won: f64,
    /// A qualified lead that did not sign is lost (with a reason); otherwise it stays open.
    pub p_lost: f64,
    /// A signed contract is cancelled later (backflow to `qualified`).
    pub p_cancelled: f64,
    /// Disqualify reasons and their weights.
    pub disqualify_reasons: Vec<WeightedText>,
    /// Contract loss reasons and their weights.
    pub lost_reasons: Vec<WeightedText>,
    /// Lowest and highest contract amount in CNY.
    pub contract_amount: [f64; 2],
}

/// A text and its relative weight.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedText {
    /// The text.
    pub text: String,
    /// Relative weight.
    pub weight: f64,
}

/// Mean delays between steps.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelayConfig {
    /// Between two exposures of one device.
    #[serde(with = "humantime_serde")]
    pub exposure_gap: Duration,
    /// Last exposure → click.
    #[serde(with = "humantime_serde")]
    pub click: Duration,
    /// Click → signup.
    #[serde(with = "humantime_serde")]
    pub signup: Duration,
    /// Signup → trial started.
    #[serde(with = "humantime_serde")]
    pub trial: Duration,
    /// Trial started → activated.
    #[serde(with = "humantime_serde")]
    pub activation: Duration,
    /// Trial started → purchase (also signup → direct purchase).
    #[serde(with = "humantime_serde")]
    pub purchase: Duration,
    /// Trial started → expired, when no purchase came first (fixed, not random).
    #[serde(with = "humantime_serde")]
    pub trial_length: Duration,
    /// Between paid orders.
    #[serde(with = "humantime_serde")]
    pub repurchase: Duration,
    /// Signup → first call, and between calls.
    #[serde(with = "humantime_serde")]
    pub call: Duration,
    /// Last call → contract decision.
    #[serde(with = "humantime_serde")]
    pub contract: Duration,
    /// Signed → cancelled.
    #[serde(with = "humantime_serde")]
    pub cancellation: Duration,
}

/// Delivery realism.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealismConfig {
    /// Share of valid events delivered late: after events up to `max_lateness` newer than they are.
    pub late_share: f64,
    /// How late a late event can be; keep it within the aggregator's allowed lateness.
    #[serde(with = "humantime_serde")]
    pub max_lateness: Duration,
    /// Share of valid events delivered a second time (same bytes), as producer retries do.
    pub duplicate_share: f64,
    /// Share of valid events re-sent with another event time (a CRM re-saving a record with a
    /// new `updated_at`, a source correcting a time), earlier or later by up to a third of
    /// `max_lateness`. The earliest copy is the event (the truth follows that rule).
    pub resend_share: f64,
    /// Share of valid events re-sent under another lead key (another user or lead id, another
    /// device for anonymous touches), with another event time too. The earliest copy wins.
    pub rekey_share: f64,
    /// Share of leads with an ad platform whose device also saw another platform's exposure
    /// from before the attribution lookback (a campaign of weeks ago): it counts in the funnel
    /// but attributes nothing (the truth applies the lookback). Such an exposure is delivered
    /// weeks after its event time, so consumers see it as too late.
    pub stale_touch_share: f64,
    /// Malformed messages per valid event.
    pub poison_share: f64,
    /// Relative weight of each malformed kind (`unknown_topic` and `sink_rejected` cannot be
    /// produced into a source topic and are not accepted).
    pub poison_categories: BTreeMap<ErrorCategory, f64>,
    /// Size limit the collector enforces; oversized poison is just above it.
    pub max_message_bytes: usize,
}

fn text(s: &str, weight: f64) -> WeightedText {
    WeightedText {
        text: s.into(),
        weight,
    }
}

#[allow(clippy::too_many_arguments)]
fn ad_channel(
    name: &str,
    weight: f64,
    platform: &str,
    utm_source: &str,
    exposures: (u32, u32),
    p_click: f64,
    p_signup: f64,
    quality: f64,
    campaigns: &[&str],
) -> ChannelProfile {
    ChannelProfile {
        name: name.into(),
        weight,
        platform: Some(platform.into()),
        utm_source: Some(utm_source.into()),
        utm_medium: Some("cpc".into()),
        campaigns: campaigns.iter().map(|c| c.to_string()).collect(),
        min_exposures: exposures.0,
        max_exposures: exposures.1,
        p_click,
        p_signup,
        quality,
    }
}

/// The poison kinds the generator can produce into a source topic.
pub const PRODUCIBLE_POISON: [ErrorCategory; 11] = [
    ErrorCategory::Oversized,
    ErrorCategory::InvalidUtf8,
    ErrorCategory::InvalidJson,
    ErrorCategory::NotAnObject,
    ErrorCategory::MissingField,
    ErrorCategory::InvalidType,
    ErrorCategory::InvalidId,
    ErrorCategory::InvalidTimestamp,
    ErrorCategory::InvalidMoney,
    ErrorCategory::InvalidEnum,
    ErrorCategory::InvalidValue,
];

/// The start instant of fixed-count runs with `start: auto`: fixed, so a seed alone reproduces a run.
pub const DEFAULT_START: &str = "2026-11-02T09:00:00+08:00";

impl Default for GeneratorConfig {
    fn default() -> Self {
        let min = |m: u64| Duration::from_secs(m * 60);
        Self {
            seed: 1,
            traffic: TrafficConfig {
                leads: 10_000,
                rate: 20.0,
                start: "auto".into(),
                time_zone: "Asia/Shanghai".into(),
                delay_scale: 1.0,
            },
            kafka: KafkaConfig {
                brokers: "127.0.0.1:9092".into(),
                topic_prefix: String::new(),
                properties: KafkaProperties::default(),
                sasl_password: None,
                sasl_password_file: None,
                max_in_flight: 20_000,
            },
            channels: vec![
                // Paid social: many exposures, few clicks, a low click → signup rate.
                ad_channel(
                    "douyin",
                    30.0,
                    "douyin",
                    "douyin",
                    (2, 9),
                    0.12,
                    0.10,
                    0.8,
                    &["双11大促🔥", "short-video-q4"],
                ),
                ad_channel(
                    "wechat",
                    20.0,
                    "wechat",
                    "wechat",
                    (1, 6),
                    0.15,
                    0.16,
                    1.0,
                    &["moments-feed", "公众号推文"],
                ),
                ad_channel(
                    "baidu",
                    12.0,
                    "baidu",
                    "baidu",
                    (1, 3),
                    0.30,
                    0.22,
                    1.1,
                    &["brand-search", "品牌词"],
                ),
                ad_channel(
                    "xiaohongshu",
                    10.0,
                    "xiaohongshu",
                    "xhs",
                    (1, 5),
                    0.18,
                    0.14,
                    1.0,
                    &["种草笔记✨"],
                ),
                ad_channel(
                    "google",
                    4.0,
                    "google",
                    "google",
                    (1, 3),
                    0.28,
                    0.20,
                    1.2,
                    &["search-intl"],
                ),
                ad_channel(
                    "meta",
                    4.0,
                    "meta",
                    "facebook",
                    (1, 6),
                    0.10,
                    0.12,
                    0.9,
                    &["ig-stories"],
                ),
                // Partner links: no ad touches, a UTM on the signup.
                ChannelProfile {
                    name: "referral".into(),
                    weight: 8.0,
                    platform: None,
                    utm_source: Some("partner-blog".into()),
                    utm_medium: Some("referral".into()),
                    campaigns: vec!["老带新".into()],
                    min_exposures: 0,
                    max_exposures: 0,
                    p_click: 0.0,
                    p_signup: 1.0,
                    quality: 1.4,
                },
                // Found us by itself: signs up directly, converts best.
                ChannelProfile {
                    name: "organic".into(),
                    weight: 12.0,
                    platform: None,
                    utm_source: None,
                    utm_medium: None,
                    campaigns: vec![],
                    min_exposures: 0,
                    max_exposures: 0,
                    p_click: 0.0,
                    p_signup: 1.0,
                    quality: 1.5,
                },
            ],
            experiment: ExperimentConfig {
                id: "lp-hero-2026q4".into(),
                lift_step: LiftStep::Signup,
                variants: vec![
                    VariantProfile {
                        name: "A".into(),
                        weight: 1.0,
                        lift: 0.0,
                    },
                    VariantProfile {
                        name: "B".into(),
                        weight: 1.0,
                        lift: 0.25,
                    },
                ],
            },
            b2c: B2cConfig {
                p_device_linked: 0.92,
                p_trial: 0.45,
                p_activate: 0.6,
                p_purchase_activated: 0.45,
                p_purchase_idle: 0.08,
                p_purchase_direct: 0.05,
                p_purchase_after_expiry: 0.08,
                p_repurchase: 0.35,
                max_orders: 4,
                plans: vec!["basic".into(), "pro".into(), "团队版".into()],
                order_amount: [49.0, 1999.0],
            },
            sales: SalesConfig {
                p_worked: 0.35,
                p_inbound: 0.2,
                max_attempts: 3,
                p_no_answer: 0.35,
                p_callback: 0.3,
                p_qualified: 0.5,
                p_disqualified: 0.5,
                p_reactivated: 0.1,
                p_signed_unqualified: 0.05,
                p_won: 0.45,
                p_lost: 0.6,
                p_cancelled: 0.08,
                disqualify_reasons: vec![
                    text("预算不足", 3.0),
                    text("no decision maker", 2.0),
                    text("联系不上😶", 1.0),
                    text("not a fit", 2.0),
                ],
                lost_reasons: vec![
                    text("选择了竞品", 3.0),
                    text("price too high", 3.0),
                    text("项目暂停 ⏸️", 1.0),
                    text("no budget this year", 1.0),
                ],
                contract_amount: [5_000.0, 200_000.0],
            },
            delays: DelayConfig {
                exposure_gap: min(3),
                click: min(2),
                signup: min(5),
                trial: min(10),
                activation: min(8),
                purchase: min(15),
                trial_length: min(30),
                repurchase: min(45),
                call: min(8),
                contract: min(20),
                cancellation: min(30),
            },
            realism: RealismConfig {
                late_share: 0.05,
                max_lateness: min(30),
                duplicate_share: 0.02,
                resend_share: 0.01,
                rekey_share: 0.002,
                stale_touch_share: 0.0,
                poison_share: 0.01,
                poison_categories: PRODUCIBLE_POISON.iter().map(|c| (*c, 1.0)).collect(),
                max_message_bytes: leadstream_schemas::DEFAULT_MAX_MESSAGE_BYTES,
            },
            log: LogConfig::default(),
        }
    }
}

fn probability(key: &'static str, p: f64) -> Result<(), ConfigError> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(invalid(key, format!("{p} is not a probability in 0..=1")))
    }
}

fn weights<'a>(
    key: &'static str,
    ws: impl IntoIterator<Item = &'a f64>,
) -> Result<(), ConfigError> {
    let mut sum = 0.0;
    for w in ws {
        if !(w.is_finite() && *w >= 0.0) {
            return Err(invalid(
                key,
                format!("weight {w} must be a finite number ≥ 0"),
            ));
        }
        sum += w;
    }
    if sum > 0.0 {
        Ok(())
    } else {
        Err(invalid(key, "needs at least one positive weight"))
    }
}

fn amount_range(key: &'static str, r: [f64; 2]) -> Result<(), ConfigError> {
    if r[0] > 0.0 && r[0] <= r[1] && r[1] < 1e12 {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("{r:?} must be [low, high] with 0 < low ≤ high"),
        ))
    }
}

impl GeneratorConfig {
    /// Defaults, then `file` (when given), then `LEADSTREAM_*` environment variables; validated.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut cfg = load_layered(Self::default(), file, SECTIONS)?;
        read_secret_file(
            "kafka.sasl_password_file",
            &cfg.kafka.sasl_password_file,
            &mut cfg.kafka.sasl_password,
        )?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every value; the error names the first offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let t = &self.traffic;
        if !(t.rate.is_finite() && t.rate > 0.0 && t.rate <= 1e6) {
            return Err(invalid(
                "traffic.rate",
                format!("{} must be in (0, 1000000] leads/s", t.rate),
            ));
        }
        self.start_time(Utc::now())?;
        self.time_zone()?;
        if !(t.delay_scale.is_finite() && t.delay_scale > 0.0 && t.delay_scale <= 1000.0) {
            return Err(invalid("traffic.delay_scale", "must be in (0, 1000]"));
        }
        let k = &self.kafka;
        if k.brokers.trim().is_empty() {
            return Err(invalid("kafka.brokers", "must not be empty"));
        }
        if k.max_in_flight == 0 {
            return Err(invalid("kafka.max_in_flight", "must be positive"));
        }
        k.properties.reject_managed(&["bootstrap.servers"])?;
        if self.channels.is_empty() {
            return Err(invalid("channels", "must list at least one channel"));
        }
        weights("channels[].weight", self.channels.iter().map(|c| &c.weight))?;
        let mut names = std::collections::BTreeSet::new();
        for c in &self.channels {
            if c.name.trim().is_empty() || !names.insert(c.name.as_str()) {
                return Err(invalid(
                    "channels[].name",
                    format!("{:?} is empty or listed twice", c.name),
                ));
            }
            probability("channels[].p_click", c.p_click)?;
            probability("channels[].p_signup", c.p_signup)?;
            if c.min_exposures > c.max_exposures || c.max_exposures > 1000 {
                return Err(invalid(
                    "channels[].max_exposures",
                    format!(
                        "channel {}: need min_exposures ≤ max_exposures ≤ 1000",
                        c.name
                    ),
                ));
            }
            if c.platform.is_some() && c.min_exposures == 0 {
                return Err(invalid(
                    "channels[].min_exposures",
                    format!(
                        "channel {} has a platform, so its leads need at least one exposure",
                        c.name
                    ),
                ));
            }
            if !(c.quality.is_finite() && c.quality >= 0.0) {
                return Err(invalid("channels[].quality", "must be a finite number ≥ 0"));
            }
        }
        let e = &self.experiment;
        if !e.id.is_empty() {
            if e.variants.is_empty() {
                return Err(invalid(
                    "experiment.variants",
                    "an experiment needs variants",
                ));
            }
            weights(
                "experiment.variants[].weight",
                e.variants.iter().map(|v| &v.weight),
            )?;
            for v in &e.variants {
                if v.name.trim().is_empty() || v.name.len() > 64 {
                    return Err(invalid(
                        "experiment.variants[].name",
                        "must be 1..=64 bytes",
                    ));
                }
                if !(v.lift.is_finite() && v.lift > -1.0) {
                    return Err(invalid(
                        "experiment.variants[].lift",
                        "must be greater than -1",
                    ));
                }
            }
        }
        let b = &self.b2c;
        for (key, p) in [
            ("b2c.p_device_linked", b.p_device_linked),
            ("b2c.p_trial", b.p_trial),
            ("b2c.p_activate", b.p_activate),
            ("b2c.p_purchase_activated", b.p_purchase_activated),
            ("b2c.p_purchase_idle", b.p_purchase_idle),
            ("b2c.p_purchase_direct", b.p_purchase_direct),
            ("b2c.p_purchase_after_expiry", b.p_purchase_after_expiry),
            ("b2c.p_repurchase", b.p_repurchase),
        ] {
            probability(key, p)?;
        }
        if b.max_orders == 0 || b.max_orders > 100 {
            return Err(invalid("b2c.max_orders", "must be in 1..=100"));
        }
        if b.plans.is_empty() {
            return Err(invalid("b2c.plans", "must list at least one plan"));
        }
        amount_range("b2c.order_amount", b.order_amount)?;
        let s = &self.sales;
        for (key, p) in [
            ("sales.p_worked", s.p_worked),
            ("sales.p_inbound", s.p_inbound),
            ("sales.p_no_answer", s.p_no_answer),
            ("sales.p_callback", s.p_callback),
            ("sales.p_qualified", s.p_qualified),
            ("sales.p_disqualified", s.p_disqualified),
            ("sales.p_reactivated", s.p_reactivated),
            ("sales.p_signed_unqualified", s.p_signed_unqualified),
            ("sales.p_won", s.p_won),
            ("sales.p_lost", s.p_lost),
            ("sales.p_cancelled", s.p_cancelled),
        ] {
            probability(key, p)?;
        }
        if s.max_attempts == 0 || s.max_attempts > 100 {
            return Err(invalid("sales.max_attempts", "must be in 1..=100"));
        }
        weights(
            "sales.disqualify_reasons",
            s.disqualify_reasons.iter().map(|w| &w.weight),
        )?;
        weights(
            "sales.lost_reasons",
            s.lost_reasons.iter().map(|w| &w.weight),
        )?;
        for w in s.disqualify_reasons.iter().chain(&s.lost_reasons) {
            if w.text.trim().is_empty() {
                return Err(invalid("sales.lost_reasons", "reasons must not be empty"));
            }
        }
        amount_range("sales.contract_amount", s.contract_amount)?;
        let d = &self.delays;
        for (key, v) in [
            ("delays.exposure_gap", d.exposure_gap),
            ("delays.click", d.click),
            ("delays.signup", d.signup),
            ("delays.trial", d.trial),
            ("delays.activation", d.activation),
            ("delays.purchase", d.purchase),
            ("delays.trial_length", d.trial_length),
            ("delays.repurchase", d.repurchase),
            ("delays.call", d.call),
            ("delays.contract", d.contract),
            ("delays.cancellation", d.cancellation),
        ] {
            if v > Duration::from_secs(90 * 24 * 3600) {
                return Err(invalid(key, "must be at most 90 days"));
            }
        }
        let r = &self.realism;
        probability("realism.late_share", r.late_share)?;
        probability("realism.duplicate_share", r.duplicate_share)?;
        probability("realism.resend_share", r.resend_share)?;
        probability("realism.rekey_share", r.rekey_share)?;
        probability("realism.stale_touch_share", r.stale_touch_share)?;
        if r.max_lateness < Duration::from_secs(3) && r.resend_share + r.rekey_share > 0.0 {
            return Err(invalid(
                "realism.max_lateness",
                "must be at least 3s when resend_share or rekey_share > 0 (copies move by up to a third of it)",
            ));
        }
        probability("realism.poison_share", r.poison_share)?;
        if r.max_lateness < Duration::from_secs(1) && r.late_share > 0.0 {
            return Err(invalid(
                "realism.max_lateness",
                "must be at least 1s when late_share > 0",
            ));
        }
        for c in r.poison_categories.keys() {
            if !PRODUCIBLE_POISON.contains(c) {
                return Err(invalid(
                    "realism.poison_categories",
                    format!("{c} cannot be produced into a source topic"),
                ));
            }
        }
        if r.poison_share > 0.0 {
            weights("realism.poison_categories", r.poison_categories.values())?;
        }
        if !(1024..=16 * 1024 * 1024).contains(&r.max_message_bytes) {
            return Err(invalid(
                "realism.max_message_bytes",
                "must be between 1024 and 16777216",
            ));
        }
        Ok(())
    }

    /// The event time of the first lead; `now` is taken from `now`.
    pub fn start_time(&self, now: DateTime<Utc>) -> Result<DateTime<Utc>, ConfigError> {
        let s = self.traffic.start.trim();
        if s.eq_ignore_ascii_case("now") || (s.eq_ignore_ascii_case("auto") && self.continuous()) {
            return Ok(now);
        }
        let s = if s.eq_ignore_ascii_case("auto") {
            DEFAULT_START
        } else {
            s
        };
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                invalid(
                    "traffic.start",
                    format!("{s:?} is not RFC 3339, `now` or `auto`: {e}"),
                )
            })
    }

    /// The zone for offset-less timestamps.
    pub fn time_zone(&self) -> Result<chrono_tz::Tz, ConfigError> {
        self.traffic.time_zone.parse().map_err(|_| {
            invalid(
                "traffic.time_zone",
                format!("{:?} is not an IANA time zone", self.traffic.time_zone),
            )
        })
    }

    /// Whether the run is continuous (no fixed lead count).
    pub fn continuous(&self) -> bool {
        self.traffic.leads == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        GeneratorConfig::default().validate().unwrap();
    }

    #[test]
    fn errors_name_the_key() {
        type Mutation = Box<dyn Fn(&mut GeneratorConfig)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("traffic.rate", Box::new(|c| c.traffic.rate = 0.0)),
            (
                "traffic.start",
                Box::new(|c| c.traffic.start = "yesterday".into()),
            ),
            (
                "traffic.time_zone",
                Box::new(|c| c.traffic.time_zone = "Mars/Base".into()),
            ),
            (
                "channels[].p_click",
                Box::new(|c| c.channels[0].p_click = 1.5),
            ),
            (
                "channels[].name",
                Box::new(|c| c.channels[1].name = c.channels[0].name.clone()),
            ),
            ("b2c.p_trial", Box::new(|c| c.b2c.p_trial = -0.1)),
            (
                "sales.lost_reasons",
                Box::new(|c| c.sales.lost_reasons.clear()),
            ),
            (
                "experiment.variants[].lift",
                Box::new(|c| c.experiment.variants[1].lift = -2.0),
            ),
            (
                "realism.poison_categories",
                Box::new(|c| {
                    c.realism
                        .poison_categories
                        .insert(ErrorCategory::SinkRejected, 1.0);
                }),
            ),
            (
                "kafka.properties",
                Box::new(|c| {
                    c.kafka
                        .properties
                        .0
                        .insert("bootstrap.servers".into(), "x".into());
                }),
            ),
        ];
        for (key, mutate) in cases {
            let mut c = GeneratorConfig::default();
            mutate(&mut c);
            let err = c.validate().expect_err(key).to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn the_shipped_file_equals_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/generator.yaml");
        // Parsed directly: the test environment sets LEADSTREAM_KAFKA__BROKERS.
        let from_file: GeneratorConfig =
            serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let shown = |c: &GeneratorConfig| serde_yaml::to_string(c).unwrap();
        assert_eq!(shown(&from_file), shown(&GeneratorConfig::default()));
    }
}
