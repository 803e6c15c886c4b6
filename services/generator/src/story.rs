//! One lead's story: which channel brought it, its anonymous touches, whether it signs up, and
//! what it does in the `b2c` and `sales` funnels afterwards, as events with event times.
//!
//! Every choice comes from the lead's own random stream, so a lead's story depends only on the
//! seed, the configuration, its index and its arrival time, never on other leads.

use crate::config::{GeneratorConfig, LiftStep};
use crate::truth::ATTRIBUTION_LOOKBACK_MS;
use leadstream_schemas::{EventType, SourceKind};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;

/// One event of a story, before it is written in a wire form.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedEvent {
    /// Source topic contract.
    pub kind: SourceKind,
    /// The normalized type it becomes.
    pub event_type: EventType,
    /// The source's own id.
    pub native_id: String,
    /// Event time, epoch milliseconds.
    pub time_ms: i64,
    /// `user_id` / `lead_id`; `None` on exposures and clicks.
    pub user_id: Option<String>,
    /// Device id, when the event carries one.
    pub device_id: Option<String>,
    /// The channel the collector's rules must assign (touch events only).
    pub channel: Option<String>,
    /// Experiment variant carried by the event (clicks and signups).
    pub variant: Option<String>,
    /// The rest of the contract's fields.
    pub detail: Detail,
}

/// Per-topic fields of a planned event.
#[derive(Debug, Clone, PartialEq)]
pub enum Detail {
    /// `leads.exposure`.
    Exposure {
        /// Ad platform.
        platform: String,
        /// Campaign id.
        campaign_id: String,
        /// Creative id, sometimes absent.
        creative_id: Option<String>,
        /// Cost in micros, sometimes absent.
        cost_micros: Option<i64>,
    },
    /// `leads.ad_click`.
    Click {
        /// Ad platform.
        platform: String,
        /// Landing URL with UTM parameters and the `ab` variant.
        landing_url: String,
        /// Campaign id.
        campaign_id: Option<String>,
    },
    /// `leads.signup`.
    Signup {
        /// Phone number in one of several written forms.
        phone: Option<String>,
        /// Email address.
        email: Option<String>,
        /// Personal name (Chinese, sometimes with an emoji); dropped by the collector.
        name: Option<String>,
        /// `utm` object: source, medium, campaign.
        utm: Option<(String, String, Option<String>)>,
        /// `experiment` object: id, variant.
        experiment: Option<(String, String)>,
        /// An extra attribute the contract does not list (kept as `extra`).
        city: Option<String>,
    },
    /// `leads.trial`.
    Trial {
        /// Plan.
        plan: Option<String>,
    },
    /// `leads.call`.
    Call {
        /// `inbound` / `outbound`.
        direction: &'static str,
        /// Duration in seconds.
        duration_sec: u32,
        /// Outcome.
        outcome: &'static str,
        /// Disqualify reason.
        reason: Option<String>,
        /// Agent id.
        agent_id: Option<String>,
    },
    /// `leads.contract`.
    Contract {
        /// Amount (required when signed).
        amount: Option<Decimal>,
        /// Reason when lost.
        reason: Option<String>,
    },
    /// `leads.order`.
    Order {
        /// Amount in CNY, two decimals.
        amount: Decimal,
    },
}

const SURNAMES: &[&str] = &[
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "欧阳",
];
const GIVEN: &[&str] = &[
    "伟", "芳", "娜", "敏", "静", "磊", "洋", "艳", "小明", "晓燕", "子涵",
];
const NAME_EMOJI: &[&str] = &["", "", "", " 😀", " 🌸", "🐼", " 🚀"];
const CITIES: &[&str] = &["上海", "北京", "深圳", "杭州", "成都", "Guangzhou"];
const PHONE_FORMS: usize = 4;
/// Share of second clicks that come from retargeting on another ad platform.
const RETARGETING_SHARE: f64 = 0.5;

/// Everything a story needs besides its random stream.
pub struct StoryContext<'a> {
    /// The configuration.
    pub cfg: &'a GeneratorConfig,
    /// Run tag inside every id, so runs with different seeds never share ids.
    pub tag: &'a str,
}

/// Picks an index by relative weights (all finite, ≥ 0, positive sum: checked by `validate`).
pub fn pick_weighted(rng: &mut ChaCha8Rng, weights: impl Iterator<Item = f64> + Clone) -> usize {
    let total: f64 = weights.clone().sum();
    let mut x = rng.random::<f64>() * total;
    let mut last = 0;
    for (i, w) in weights.enumerate() {
        if w > 0.0 {
            last = i;
            if x < w {
                return i;
            }
            x -= w;
        }
    }
    last
}

fn chance(rng: &mut ChaCha8Rng, p: f64) -> bool {
    rng.random::<f64>() < p.clamp(0.0, 1.0)
}

fn pick<'s>(rng: &mut ChaCha8Rng, items: &'s [&'s str]) -> &'s str {
    items[rng.random_range(0..items.len())]
}

/// Builds one lead's story.
struct Builder<'a, 'r> {
    ctx: &'a StoryContext<'a>,
    rng: &'r mut ChaCha8Rng,
    index: u64,
    /// Whole-second event times for this lead, so the epoch-seconds forms can carry them exactly.
    whole_seconds: bool,
    channel: usize,
    /// Channel of the latest touch: a second click may come from retargeting on another platform,
    /// which then also brings the signup's UTM (so last touch differs from first touch).
    touch_channel: usize,
    variant: Option<usize>,
    user: String,
    device: String,
    events: Vec<PlannedEvent>,
    calls: u32,
}

impl Builder<'_, '_> {
    fn delay(&mut self, mean: std::time::Duration) -> i64 {
        let mean_ms = mean.as_millis() as f64 * self.ctx.cfg.traffic.delay_scale;
        let u: f64 = self.rng.random();
        let ms = (-(1.0 - u).ln() * mean_ms).min(1e12) as i64;
        let ms = ms.max(1000);
        if self.whole_seconds {
            ms / 1000 * 1000
        } else {
            ms
        }
    }

    fn lift(&self, step: LiftStep) -> f64 {
        let e = &self.ctx.cfg.experiment;
        match self.variant {
            Some(v) if e.lift_step == step => 1.0 + e.variants[v].lift,
            _ => 1.0,
        }
    }

    fn variant_name(&self) -> Option<String> {
        self.variant
            .map(|v| self.ctx.cfg.experiment.variants[v].name.clone())
    }

    fn id(&self, prefix: &str, n: Option<u32>) -> String {
        match n {
            Some(n) => format!("{prefix}-{}-{}-{n}", self.ctx.tag, self.index),
            None => format!("{prefix}-{}-{}", self.ctx.tag, self.index),
        }
    }

    fn push(
        &mut self,
        kind: SourceKind,
        event_type: EventType,
        native_id: String,
        time_ms: i64,
        detail: Detail,
    ) {
        let profile = &self.ctx.cfg.channels[self.touch_channel];
        let touch = matches!(
            kind,
            SourceKind::Exposure | SourceKind::AdClick | SourceKind::Signup
        );
        let anonymous = matches!(kind, SourceKind::Exposure | SourceKind::AdClick);
        // Signups name the device only when linked; `signup()` sets it after the push.
        let device_id = anonymous.then(|| self.device.clone());
        let variant = match kind {
            SourceKind::AdClick => self.variant_name(),
            SourceKind::Signup => match &detail {
                Detail::Signup { experiment, .. } => experiment.as_ref().map(|e| e.1.clone()),
                _ => None,
            },
            _ => None,
        };
        self.events.push(PlannedEvent {
            kind,
            event_type,
            native_id,
            time_ms,
            user_id: (!anonymous).then(|| self.user.clone()),
            device_id,
            channel: touch.then(|| profile.name.clone()),
            variant,
            detail,
        });
    }

    fn campaign(&mut self) -> Option<String> {
        let c = &self.ctx.cfg.channels[self.touch_channel].campaigns;
        (!c.is_empty()).then(|| c[self.rng.random_range(0..c.len())].clone())
    }

    /// Anonymous exposures and clicks; returns the time of the signup, if the device signs up.
    fn touches(&mut self, mut t: i64) -> Option<i64> {
        let profile = self.ctx.cfg.channels[self.channel].clone();
        let Some(platform) = profile.platform.clone() else {
            return Some(t);
        };
        let share = self.ctx.cfg.realism.stale_touch_share;
        // Drawn only when asked for, so runs without it keep their random stream.
        if share > 0.0 && chance(self.rng, share) {
            self.stale_touch(t);
        }
        let gap = self.ctx.cfg.delays.exposure_gap;
        let n = self
            .rng
            .random_range(profile.min_exposures..=profile.max_exposures);
        for e in 0..n {
            if e > 0 {
                t += self.delay(gap);
            }
            let campaign_id = self.campaign().unwrap_or_else(|| "default".into());
            let creative_id =
                chance(self.rng, 0.7).then(|| format!("cr-{}", self.rng.random_range(1..40)));
            let cost_micros = chance(self.rng, 0.8).then(|| self.rng.random_range(1_000..400_000));
            let id = self.id("imp", Some(e));
            self.push(
                SourceKind::Exposure,
                EventType::Exposure,
                id,
                t,
                Detail::Exposure {
                    platform: platform.clone(),
                    campaign_id,
                    creative_id,
                    cost_micros,
                },
            );
        }
        if !chance(self.rng, profile.p_click) {
            return None;
        }
        let clicks = if chance(self.rng, 0.15) { 2 } else { 1 };
        let mut platform = platform;
        for c in 0..clicks {
            t += self.delay(if c == 0 {
                self.ctx.cfg.delays.click
            } else {
                gap
            });
            if c == 1 && chance(self.rng, RETARGETING_SHARE) {
                if let Some(other) = self.other_platform_channel() {
                    self.touch_channel = other;
                    platform = self.ctx.cfg.channels[other]
                        .platform
                        .clone()
                        .unwrap_or(platform);
                }
            }
            let touch_profile = self.ctx.cfg.channels[self.touch_channel].clone();
            let campaign = self.campaign();
            let url = self.landing_url(&touch_profile, campaign.as_deref());
            let id = self.id("clk", Some(c));
            self.push(
                SourceKind::AdClick,
                EventType::Click,
                id,
                t,
                Detail::Click {
                    platform: platform.clone(),
                    landing_url: url,
                    campaign_id: campaign,
                },
            );
        }
        let p = profile.p_signup * self.lift(LiftStep::Signup);
        if !chance(self.rng, p) {
            return None;
        }
        Some(t + self.delay(self.ctx.cfg.delays.signup))
    }

    /// A channel with an ad platform other than the lead's own, by weight (`None` if there is
    /// none; no draw then).
    fn other_platform_channel(&mut self) -> Option<usize> {
        let chans = &self.ctx.cfg.channels;
        let weights = chans.iter().enumerate().map(|(i, ch)| {
            if i != self.channel && ch.platform.is_some() {
                ch.weight
            } else {
                0.0
            }
        });
        (weights.clone().sum::<f64>() > 0.0).then(|| pick_weighted(self.rng, weights))
    }

    /// Another platform's exposure of this device from before the attribution lookback of a
    /// signup after `t` (so it never attributes).
    fn stale_touch(&mut self, t: i64) {
        let Some(other) = self.other_platform_channel() else {
            return;
        };
        let Some(platform) = self.ctx.cfg.channels[other].platform.clone() else {
            return;
        };
        let before = ATTRIBUTION_LOOKBACK_MS + self.rng.random_range(60..7 * 86_400) * 1000;
        let id = self.id("old", None);
        // `push` records the touch channel's name for the truth.
        let own = std::mem::replace(&mut self.touch_channel, other);
        self.push(
            SourceKind::Exposure,
            EventType::Exposure,
            id,
            t - before,
            Detail::Exposure {
                platform,
                campaign_id: "default".into(),
                creative_id: None,
                cost_micros: None,
            },
        );
        self.touch_channel = own;
    }

    fn landing_url(
        &mut self,
        profile: &crate::config::ChannelProfile,
        campaign: Option<&str>,
    ) -> String {
        let page = pick(
            self.rng,
            &[
                "https://www.example.cn/landing",
                "https://m.example.cn/lp/trial",
                "https://www.example.cn/活动/双11",
            ],
        );
        let mut url = url::Url::parse(page).expect("static landing pages are valid urls");
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = &profile.utm_source {
                q.append_pair("utm_source", s);
            }
            if let Some(m) = &profile.utm_medium {
                q.append_pair("utm_medium", m);
            }
            if let Some(c) = campaign {
                q.append_pair("utm_campaign", c);
            }
            if let Some(v) = self.variant_name() {
                q.append_pair("ab", &v);
            }
        }
        url.to_string()
    }

    fn signup(&mut self, t: i64, has_touches: bool) {
        let profile = self.ctx.cfg.channels[self.touch_channel].clone();
        let linked = if has_touches {
            chance(self.rng, self.ctx.cfg.b2c.p_device_linked)
        } else {
            chance(self.rng, 0.5)
        };
        let utm = profile.utm_source.clone().map(|s| {
            let campaign = self.campaign();
            (s, profile.utm_medium.clone().unwrap_or_default(), campaign)
        });
        let experiment = self
            .variant_name()
            .map(|v| (self.ctx.cfg.experiment.id.clone(), v));
        let phone = chance(self.rng, 0.8).then(|| self.phone());
        let email = chance(self.rng, 0.6)
            .then(|| format!("user{}.{}@Example.com", self.index, self.ctx.tag));
        let name = chance(self.rng, 0.7).then(|| {
            format!(
                "{}{}{}",
                pick(self.rng, SURNAMES),
                pick(self.rng, GIVEN),
                pick(self.rng, NAME_EMOJI)
            )
        });
        let city = chance(self.rng, 0.3).then(|| pick(self.rng, CITIES).to_string());
        let id = self.id("su", None);
        self.push(
            SourceKind::Signup,
            EventType::Signup,
            id,
            t,
            Detail::Signup {
                phone,
                email,
                name,
                utm,
                experiment,
                city,
            },
        );
        if linked {
            let device = self.device.clone();
            self.events.last_mut().expect("just pushed").device_id = Some(device);
        }
    }

    fn phone(&mut self) -> String {
        let n: u64 = self.rng.random_range(3_000_000_000..9_999_999_999);
        let digits = format!("1{n:010}");
        match self.rng.random_range(0..PHONE_FORMS) {
            0 => digits,
            1 => format!("+86 {} {} {}", &digits[..3], &digits[3..7], &digits[7..]),
            2 => format!("{}-{}-{}", &digits[..3], &digits[3..7], &digits[7..]),
            _ => format!("+86{digits}"),
        }
    }

    fn money(&mut self, range: [f64; 2]) -> Decimal {
        let low = (range[0] * 100.0).round() as i64;
        let high = (range[1] * 100.0).round() as i64;
        Decimal::new(self.rng.random_range(low..=high.max(low)), 2)
    }

    fn b2c(&mut self, signup_t: i64) {
        let b = self.ctx.cfg.b2c.clone();
        let d = self.ctx.cfg.delays.clone();
        let quality = self.ctx.cfg.channels[self.channel].quality;
        let p_trial = b.p_trial * quality * self.lift(LiftStep::Trial);
        if chance(self.rng, p_trial) {
            let started = signup_t + self.delay(d.trial);
            let expiry = started
                + (d.trial_length.as_millis() as f64 * self.ctx.cfg.traffic.delay_scale).max(1000.0)
                    as i64
                    / 1000
                    * 1000;
            let plan = chance(self.rng, 0.8)
                .then(|| b.plans[self.rng.random_range(0..b.plans.len())].clone());
            let trial_id = self.id("tr", None);
            self.push(
                SourceKind::Trial,
                EventType::TrialStarted,
                trial_id.clone(),
                started,
                Detail::Trial { plan: plan.clone() },
            );
            let mut last = started;
            let mut activated = false;
            if chance(self.rng, b.p_activate) {
                let at = started + self.delay(d.activation);
                if at < expiry {
                    activated = true;
                    last = at;
                    self.push(
                        SourceKind::Trial,
                        EventType::TrialActivated,
                        trial_id.clone(),
                        at,
                        Detail::Trial { plan: plan.clone() },
                    );
                }
            }
            let p_buy = if activated {
                b.p_purchase_activated
            } else {
                b.p_purchase_idle
            } * quality
                * self.lift(LiftStep::Purchase);
            let purchase_at = chance(self.rng, p_buy).then(|| last + self.delay(d.purchase));
            // Without a purchase before it, the trial expires (the b2c backflow to signup).
            let expires = purchase_at.is_none_or(|at| at >= expiry);
            if expires {
                self.push(
                    SourceKind::Trial,
                    EventType::TrialExpired,
                    trial_id,
                    expiry,
                    Detail::Trial { plan },
                );
            }
            match purchase_at {
                Some(at) if expires => self.orders(at.max(expiry + 1000)),
                Some(at) => self.orders(at),
                None if chance(self.rng, b.p_purchase_after_expiry * quality) => {
                    let at = expiry + self.delay(d.purchase);
                    self.orders(at);
                }
                None => {}
            }
        } else if chance(self.rng, b.p_purchase_direct * quality) {
            let at = signup_t + self.delay(d.purchase);
            self.orders(at);
        }
    }

    fn orders(&mut self, mut t: i64) {
        let b = self.ctx.cfg.b2c.clone();
        let mut n = 0;
        loop {
            let amount = self.money(b.order_amount);
            let id = self.id("ord", Some(n));
            self.push(
                SourceKind::Order,
                EventType::Order,
                id,
                t,
                Detail::Order { amount },
            );
            n += 1;
            if n >= b.max_orders || !chance(self.rng, b.p_repurchase) {
                return;
            }
            t += self.delay(self.ctx.cfg.delays.repurchase);
        }
    }

    fn call(&mut self, t: i64, outcome: &'static str, reason: Option<String>) {
        let s = &self.ctx.cfg.sales;
        let direction = if chance(self.rng, s.p_inbound) {
            "inbound"
        } else {
            "outbound"
        };
        let duration_sec = if outcome == "no_answer" {
            0
        } else {
            self.rng.random_range(20..1800)
        };
        let agent_id =
            chance(self.rng, 0.9).then(|| format!("agent-{:02}", self.rng.random_range(1..25)));
        let id = self.id("call", Some(self.calls));
        self.calls += 1;
        self.push(
            SourceKind::Call,
            EventType::Call,
            id,
            t,
            Detail::Call {
                direction,
                duration_sec,
                outcome,
                reason,
                agent_id,
            },
        );
    }

    fn reason(&mut self, list: &[crate::config::WeightedText]) -> String {
        list[pick_weighted(self.rng, list.iter().map(|w| w.weight))]
            .text
            .clone()
    }

    fn sales(&mut self, signup_t: i64) {
        let s = self.ctx.cfg.sales.clone();
        let d = self.ctx.cfg.delays.clone();
        if !chance(self.rng, s.p_worked) {
            return;
        }
        let mut t = signup_t;
        let mut contacted = false;
        for _ in 0..s.max_attempts {
            t += self.delay(d.call);
            if chance(self.rng, s.p_no_answer) {
                self.call(t, "no_answer", None);
            } else {
                contacted = true;
                break;
            }
        }
        if !contacted {
            return;
        }
        let first = if chance(self.rng, s.p_callback) {
            "callback"
        } else {
            "connected"
        };
        self.call(t, first, None);
        if chance(self.rng, s.p_signed_unqualified) {
            self.contract_decision(t, true);
            return;
        }
        t += self.delay(d.call);
        if chance(self.rng, s.p_qualified) {
            self.call(t, "qualified", None);
            self.contract_decision(t, false);
        } else if chance(self.rng, s.p_disqualified) {
            let reason = self.reason(&s.disqualify_reasons);
            self.call(t, "disqualified", Some(reason));
            if chance(self.rng, s.p_reactivated) {
                t += 3 * self.delay(d.call);
                self.call(t, "callback", None);
                t += self.delay(d.call);
                self.call(t, "qualified", None);
                self.contract_decision(t, false);
            }
        }
    }

    fn contract_decision(&mut self, t: i64, force_sign: bool) {
        let s = self.ctx.cfg.sales.clone();
        let d = self.ctx.cfg.delays.clone();
        let at = t + self.delay(d.contract);
        let id = self.id("ct", None);
        if force_sign || chance(self.rng, s.p_won) {
            let amount = Some(self.money(s.contract_amount));
            self.push(
                SourceKind::Contract,
                EventType::ContractSigned,
                id.clone(),
                at,
                Detail::Contract {
                    amount,
                    reason: None,
                },
            );
            if chance(self.rng, s.p_cancelled) {
                let when = at + self.delay(d.cancellation);
                self.push(
                    SourceKind::Contract,
                    EventType::ContractCancelled,
                    id,
                    when,
                    Detail::Contract {
                        amount: None,
                        reason: None,
                    },
                );
            }
        } else if chance(self.rng, s.p_lost) {
            let reason = Some(self.reason(&s.lost_reasons));
            let amount = chance(self.rng, 0.5).then(|| self.money(s.contract_amount));
            self.push(
                SourceKind::Contract,
                EventType::ContractLost,
                id,
                at,
                Detail::Contract { amount, reason },
            );
        }
    }
}

/// The events of lead `index`, arriving at `arrival_ms`, in event-time order per funnel chain.
pub fn lead_story(
    ctx: &StoryContext<'_>,
    rng: &mut ChaCha8Rng,
    index: u64,
    arrival_ms: i64,
) -> Vec<PlannedEvent> {
    let cfg = ctx.cfg;
    let whole_seconds = chance(rng, 0.3);
    let channel = pick_weighted(rng, cfg.channels.iter().map(|c| c.weight));
    let variant = (!cfg.experiment.id.is_empty())
        .then(|| pick_weighted(rng, cfg.experiment.variants.iter().map(|v| v.weight)));
    let mut b = Builder {
        ctx,
        rng,
        index,
        whole_seconds,
        channel,
        touch_channel: channel,
        variant,
        user: format!("u-{}-{index}", ctx.tag),
        device: format!("dev-{}-{index}", ctx.tag),
        events: Vec::new(),
        calls: 0,
    };
    // Rounded up, never down: the schedule relies on no event preceding its lead's arrival.
    let t0 = if whole_seconds {
        (arrival_ms + 999).div_euclid(1000) * 1000
    } else {
        arrival_ms
    };
    let has_touches = cfg.channels[channel].platform.is_some();
    if let Some(signup_t) = b.touches(t0) {
        b.signup(signup_t, has_touches);
        b.b2c(signup_t);
        b.sales(signup_t);
    }
    b.events
}
