//! Funnel declarations (`config/funnel.yaml`): the file's shape, its validation (errors name the
//! key) and the compiled form the stage machine runs. Adding a funnel is a configuration change.

use leadstream_schemas::{EventType, NormalizedEvent};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

/// Rules across all funnels share one 64-bit match mask per event (see [`Funnels::match_mask`]).
pub const MAX_RULES: usize = 64;
/// Stages per funnel (main plus special); indexes are stored in a byte.
pub const MAX_STAGES: usize = 32;

/// A funnel file that cannot be used; `key` is the dotted path of the offending entry.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("funnel configuration: `{key}`: {reason}")]
pub struct FunnelConfigError {
    /// Dotted path, e.g. `funnels.b2c.rules[3].enter`.
    pub key: String,
    /// Why the value cannot be used.
    pub reason: String,
}

fn err(key: impl Into<String>, reason: impl Into<String>) -> FunnelConfigError {
    FunnelConfigError {
        key: key.into(),
        reason: reason.into(),
    }
}

/// One value or a list of them (`on: order` or `on: [trial_started, trial_activated]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single value.
    One(String),
    /// Several values.
    Many(Vec<String>),
}

impl OneOrMany {
    fn to_vec(&self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s.clone()],
            Self::Many(v) => v.clone(),
        }
    }
}

/// The file: funnel name → declaration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunnelsFile {
    /// Funnels by name (lowercase letters, digits, `_`).
    pub funnels: BTreeMap<String, FunnelSpec>,
}

/// One funnel as declared.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunnelSpec {
    /// Human title for dashboards.
    #[serde(default)]
    pub title: String,
    /// Main stages in order.
    pub stages: Vec<String>,
    /// Stages outside the main order ("urgent opportunity", "executive approval"): a lead enters
    /// one by a rule and stays there until its next main-stage change.
    #[serde(default)]
    pub special_stages: Vec<String>,
    /// Rules, tried in order; the first that applies to an event wins.
    pub rules: Vec<RuleSpec>,
}

/// One rule as declared: which events (`on`, `when`, `occurrence`) do what (`enter`, `backflow`
/// or `lose`; exactly one).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Normalized event types (`exposure`, `click`, `signup`, `trial_started`, ...).
    pub on: OneOrMany,
    /// Field → accepted values; all must hold. Fields: see [`Field`].
    #[serde(default)]
    pub when: BTreeMap<String, OneOrMany>,
    /// `N` (the lead's N-th matching event) or `N+` (the N-th and later); absent: every one.
    #[serde(default)]
    pub occurrence: Option<String>,
    /// Move the lead forward into this (main or special) stage.
    #[serde(default)]
    pub enter: Option<String>,
    /// Move the lead back.
    #[serde(default)]
    pub backflow: Option<BackflowSpec>,
    /// End the lead in `lost`.
    #[serde(default)]
    pub lose: Option<LoseSpec>,
}

/// A backflow rule's target.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackflowSpec {
    /// Stage the lead flows back to.
    pub to: String,
    /// Only while the lead is in one of these stages (and not lost).
    pub from: Vec<String>,
    /// Reason recorded on the transition.
    pub reason: String,
}

/// A loss rule's details.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoseSpec {
    /// Reason when the event carries none (its `reason` field wins).
    #[serde(default = "unspecified")]
    pub default_reason: String,
}

fn unspecified() -> String {
    "unspecified".into()
}

/// A normalized-event field a rule can test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// `call_outcome`.
    CallOutcome,
    /// `call_direction`.
    CallDirection,
    /// `channel`.
    Channel,
    /// `platform`.
    Platform,
    /// `plan`.
    Plan,
    /// `reason`.
    Reason,
    /// `variant`.
    Variant,
    /// `currency`.
    Currency,
    /// `utm_source`.
    UtmSource,
    /// `utm_medium`.
    UtmMedium,
    /// `utm_campaign`.
    UtmCampaign,
    /// `campaign_id`.
    CampaignId,
    /// `agent_id`.
    AgentId,
    /// `extra.<key>`: a key the source sent beyond its contract (strings, numbers, booleans).
    Extra(String),
}

impl Field {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "call_outcome" => Self::CallOutcome,
            "call_direction" => Self::CallDirection,
            "channel" => Self::Channel,
            "platform" => Self::Platform,
            "plan" => Self::Plan,
            "reason" => Self::Reason,
            "variant" => Self::Variant,
            "currency" => Self::Currency,
            "utm_source" => Self::UtmSource,
            "utm_medium" => Self::UtmMedium,
            "utm_campaign" => Self::UtmCampaign,
            "campaign_id" => Self::CampaignId,
            "agent_id" => Self::AgentId,
            _ => Self::Extra(s.strip_prefix("extra.").filter(|k| !k.is_empty())?.into()),
        })
    }

    fn value<'e>(&self, e: &'e NormalizedEvent) -> Option<Cow<'e, str>> {
        let s = |o: &'e Option<String>| o.as_deref().map(Cow::Borrowed);
        match self {
            Self::CallOutcome => s(&e.call_outcome),
            Self::CallDirection => s(&e.call_direction),
            Self::Channel => s(&e.channel),
            Self::Platform => s(&e.platform),
            Self::Plan => s(&e.plan),
            Self::Reason => s(&e.reason),
            Self::Variant => s(&e.variant),
            Self::Currency => s(&e.currency),
            Self::UtmSource => s(&e.utm_source),
            Self::UtmMedium => s(&e.utm_medium),
            Self::UtmCampaign => s(&e.utm_campaign),
            Self::CampaignId => s(&e.campaign_id),
            Self::AgentId => s(&e.agent_id),
            Self::Extra(k) => match e.extra.get(k)? {
                serde_json::Value::String(v) => Some(Cow::Borrowed(v)),
                v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_)) => {
                    Some(Cow::Owned(v.to_string()))
                }
                _ => None,
            },
        }
    }
}

/// Which events a rule looks at.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// Event types, any of.
    pub types: Vec<EventType>,
    /// Field conditions, all of.
    pub when: Vec<(Field, Vec<String>)>,
}

impl Matcher {
    /// Whether `e` is one of the events this matcher looks at.
    pub fn matches(&self, e: &NormalizedEvent) -> bool {
        self.types.contains(&e.event_type)
            && self
                .when
                .iter()
                .all(|(f, vals)| f.value(e).is_some_and(|v| vals.iter().any(|x| *x == v)))
    }
}

/// Which of a lead's matching events a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occurrence {
    /// Every one.
    Any,
    /// Only the N-th (1-based).
    Exactly(u32),
    /// The N-th and later.
    AtLeast(u32),
}

impl Occurrence {
    /// Whether the `n`-th (1-based) matching event qualifies.
    pub fn admits(self, n: u32) -> bool {
        match self {
            Self::Any => true,
            Self::Exactly(k) => n == k,
            Self::AtLeast(k) => n >= k,
        }
    }

    /// The count from which a match's count no longer matters: for any `n`, `m` at or above
    /// it, the `n`-th and the `m`-th match are admitted alike (`Exactly(k)`: neither, past `k`;
    /// `AtLeast(k)`: both, from `k` on).
    pub fn saturation(self) -> u32 {
        match self {
            Self::Any => 1,
            Self::Exactly(k) => k.saturating_add(1),
            Self::AtLeast(k) => k.max(1),
        }
    }
}

/// A stage a rule moves a lead into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// A main stage, by index.
    Main(u8),
    /// A special stage, by index into `special_stages`.
    Special(u8),
}

/// What a rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Forward into a stage (reactivates a lost lead).
    Enter(Target),
    /// Back to main stage `to` while the current main stage is one of `from`.
    Backflow {
        /// Target main stage.
        to: u8,
        /// Main stages it applies from.
        from: Vec<u8>,
        /// Recorded reason.
        reason: String,
    },
    /// Into `lost`, with the event's reason or this default.
    Lose {
        /// Reason when the event has none.
        default_reason: String,
    },
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Events it looks at.
    pub matcher: Matcher,
    /// Which of them.
    pub occurrence: Occurrence,
    /// What it does.
    pub action: Action,
}

/// A compiled funnel.
#[derive(Debug, Clone)]
pub struct Funnel {
    /// Name (`b2c`).
    pub name: String,
    /// Title for humans.
    pub title: String,
    /// Main stages in order.
    pub stages: Vec<String>,
    /// Special stages.
    pub special_stages: Vec<String>,
    /// Rules in order.
    pub rules: Vec<Rule>,
    /// Bit of rule 0 in the shared match mask.
    pub first_bit: u32,
}

impl Funnel {
    /// The name of a stage target.
    pub fn stage_name(&self, t: Target) -> &str {
        match t {
            Target::Main(i) => &self.stages[i as usize],
            Target::Special(i) => &self.special_stages[i as usize],
        }
    }

    /// This funnel's rule bits out of a shared match mask, rule 0 in bit 0.
    pub fn rule_bits(&self, mask: u64) -> u64 {
        let n = self.rules.len() as u32;
        let bits = mask >> self.first_bit;
        if n >= 64 {
            bits
        } else {
            bits & ((1u64 << n) - 1)
        }
    }
}

/// All funnels, compiled.
#[derive(Debug, Clone)]
pub struct Funnels {
    /// In name order.
    pub funnels: Vec<Funnel>,
    /// Per event type (by discriminant), the bits of the rules whose `on` lists it: an event is
    /// tried only against those (every event is matched once, on the engine's hot path).
    by_type: Vec<u64>,
}

impl Funnels {
    /// Reads and compiles a funnel file.
    pub fn load(path: &Path) -> Result<Self, FunnelConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err("--funnels", format!("cannot read {}: {e}", path.display())))?;
        Self::from_yaml(&text)
    }

    /// Parses and compiles funnel YAML.
    pub fn from_yaml(text: &str) -> Result<Self, FunnelConfigError> {
        let file: FunnelsFile = serde_yaml::from_str(text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!(" (line {}, column {})", l.line(), l.column()))
                .unwrap_or_default();
            err("funnels", format!("{e}{at}"))
        })?;
        Self::compile(&file)
    }

    /// Validates and compiles a parsed file.
    pub fn compile(file: &FunnelsFile) -> Result<Self, FunnelConfigError> {
        if file.funnels.is_empty() {
            return Err(err("funnels", "declare at least one funnel"));
        }
        let mut funnels = Vec::new();
        let mut bit = 0u32;
        for (name, spec) in &file.funnels {
            let f = compile_funnel(name, spec, bit)?;
            bit += f.rules.len() as u32;
            if bit as usize > MAX_RULES {
                return Err(err(
                    format!("funnels.{name}.rules"),
                    format!("at most {MAX_RULES} rules across all funnels"),
                ));
            }
            funnels.push(f);
        }
        let mut by_type = vec![0u64; EventType::ALL.len()];
        for f in &funnels {
            for (i, r) in f.rules.iter().enumerate() {
                for t in &r.matcher.types {
                    by_type[*t as usize] |= 1 << (f.first_bit + i as u32);
                }
            }
        }
        Ok(Self { funnels, by_type })
    }

    /// One bit per rule (all funnels) whose matcher matches `e`; the stage machine replays these
    /// bits, so a lead's history needs no other event field to be replayed.
    pub fn match_mask(&self, e: &NormalizedEvent) -> u64 {
        let candidates = self.by_type[e.event_type as usize];
        let mut mask = 0u64;
        for f in &self.funnels {
            let mut bits = candidates.checked_shr(f.first_bit).unwrap_or(0);
            while bits != 0 {
                let i = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                match f.rules.get(i) {
                    Some(r) if r.matcher.matches(e) => mask |= 1 << (f.first_bit + i as u32),
                    Some(_) => {}
                    // Bits past this funnel's rules are the next funnels'.
                    None => break,
                }
            }
        }
        mask
    }

    /// A funnel by name.
    pub fn get(&self, name: &str) -> Option<&Funnel> {
        self.funnels.iter().find(|f| f.name == name)
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn compile_funnel(
    name: &str,
    spec: &FunnelSpec,
    first_bit: u32,
) -> Result<Funnel, FunnelConfigError> {
    let at = format!("funnels.{name}");
    if !valid_name(name) {
        return Err(err(
            &at,
            "funnel names use lowercase letters, digits and `_` (at most 64)",
        ));
    }
    if spec.stages.is_empty() {
        return Err(err(format!("{at}.stages"), "declare at least one stage"));
    }
    if spec.stages.len() + spec.special_stages.len() > MAX_STAGES {
        return Err(err(
            format!("{at}.stages"),
            format!("at most {MAX_STAGES} stages, special ones included"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (key, s) in spec
        .stages
        .iter()
        .map(|s| ("stages", s))
        .chain(spec.special_stages.iter().map(|s| ("special_stages", s)))
    {
        if !valid_name(s) || s == "lost" {
            return Err(err(
                format!("{at}.{key}"),
                format!("`{s}`: stage names use lowercase letters, digits and `_`; `lost` is the built-in outcome"),
            ));
        }
        if !seen.insert(s.as_str()) {
            return Err(err(
                format!("{at}.{key}"),
                format!("stage `{s}` is declared twice"),
            ));
        }
    }
    if spec.rules.is_empty() {
        return Err(err(format!("{at}.rules"), "declare at least one rule"));
    }
    let main = |key: &str, s: &str| -> Result<u8, FunnelConfigError> {
        spec.stages
            .iter()
            .position(|x| x == s)
            .map(|i| i as u8)
            .ok_or_else(|| err(key, format!("`{s}` is not a main stage of {name}")))
    };
    let mut rules = Vec::new();
    for (i, r) in spec.rules.iter().enumerate() {
        let rat = format!("{at}.rules[{i}]");
        let mut types = Vec::new();
        for t in r.on.to_vec() {
            types.push(EventType::parse(&t).ok_or_else(|| {
                err(
                    format!("{rat}.on"),
                    format!("`{t}` is not a normalized event type (exposure, click, signup, trial_started, trial_activated, trial_expired, call, contract_signed, contract_lost, contract_cancelled, order)"),
                )
            })?);
        }
        if types.is_empty() {
            return Err(err(format!("{rat}.on"), "name at least one event type"));
        }
        let mut when = Vec::new();
        for (k, v) in &r.when {
            let field = Field::parse(k).ok_or_else(|| {
                err(
                    format!("{rat}.when.{k}"),
                    "unknown field (call_outcome, call_direction, channel, platform, plan, reason, variant, currency, utm_source, utm_medium, utm_campaign, campaign_id, agent_id, extra.<key>)",
                )
            })?;
            let vals = v.to_vec();
            if vals.is_empty() {
                return Err(err(format!("{rat}.when.{k}"), "list at least one value"));
            }
            when.push((field, vals));
        }
        let occurrence = match r.occurrence.as_deref().map(str::trim) {
            None => Occurrence::Any,
            Some(s) => {
                let (n, at_least) = match s.strip_suffix('+') {
                    Some(n) => (n, true),
                    None => (s, false),
                };
                let n: u32 = n.trim().parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    err(
                        format!("{rat}.occurrence"),
                        format!("`{s}`: write N or N+ with N ≥ 1"),
                    )
                })?;
                if at_least {
                    Occurrence::AtLeast(n)
                } else {
                    Occurrence::Exactly(n)
                }
            }
        };
        let actions = [r.enter.is_some(), r.backflow.is_some(), r.lose.is_some()];
        if actions.iter().filter(|a| **a).count() != 1 {
            return Err(err(&rat, "give exactly one of `enter`, `backflow`, `lose`"));
        }
        let action = if let Some(s) = &r.enter {
            let target = match spec.stages.iter().position(|x| x == s) {
                Some(i) => Target::Main(i as u8),
                None => match spec.special_stages.iter().position(|x| x == s) {
                    Some(i) => Target::Special(i as u8),
                    None => {
                        return Err(err(
                            format!("{rat}.enter"),
                            format!("`{s}` is not a stage of {name}"),
                        ))
                    }
                },
            };
            Action::Enter(target)
        } else if let Some(b) = &r.backflow {
            let to = main(&format!("{rat}.backflow.to"), &b.to)?;
            if b.from.is_empty() {
                return Err(err(
                    format!("{rat}.backflow.from"),
                    "list the stages it flows back from",
                ));
            }
            let mut from = Vec::new();
            for s in &b.from {
                let f = main(&format!("{rat}.backflow.from"), s)?;
                if f <= to {
                    return Err(err(
                        format!("{rat}.backflow.from"),
                        format!(
                            "`{s}` is not after `{}`: a backflow goes to an earlier stage",
                            b.to
                        ),
                    ));
                }
                from.push(f);
            }
            if b.reason.trim().is_empty() {
                return Err(err(format!("{rat}.backflow.reason"), "must not be empty"));
            }
            Action::Backflow {
                to,
                from,
                reason: b.reason.clone(),
            }
        } else {
            let l = r.lose.clone().unwrap_or_default();
            if l.default_reason.trim().is_empty() {
                return Err(err(
                    format!("{rat}.lose.default_reason"),
                    "must not be empty",
                ));
            }
            Action::Lose {
                default_reason: l.default_reason,
            }
        };
        rules.push(Rule {
            matcher: Matcher { types, when },
            occurrence,
            action,
        });
    }
    Ok(Funnel {
        name: name.into(),
        title: if spec.title.is_empty() {
            name.into()
        } else {
            spec.title.clone()
        },
        stages: spec.stages.clone(),
        special_stages: spec.special_stages.clone(),
        rules,
        first_bit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(yaml: &str) -> String {
        Funnels::from_yaml(yaml).expect_err("must be rejected").key
    }

    #[test]
    fn the_shipped_file_compiles() {
        let f = Funnels::load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../config/funnel.yaml"
        )))
        .expect("config/funnel.yaml");
        let names: Vec<&str> = f.funnels.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["b2c", "sales"]);
        assert_eq!(
            f.get("sales").unwrap().special_stages,
            ["urgent_opportunity"]
        );
    }

    #[test]
    fn errors_name_the_offending_key() {
        let base = "funnels:\n  f:\n    stages: [a, b]\n    rules:\n";
        assert_eq!(
            key_of(&format!("{base}      - {{on: nope, enter: a}}\n")),
            "funnels.f.rules[0].on"
        );
        assert_eq!(
            key_of(&format!("{base}      - {{on: order, enter: z}}\n")),
            "funnels.f.rules[0].enter"
        );
        assert_eq!(
            key_of(&format!("{base}      - {{on: order, enter: a}}\n      - {{on: order, occurrence: 0, enter: b}}\n")),
            "funnels.f.rules[1].occurrence"
        );
        assert_eq!(
            key_of(&format!(
                "{base}      - {{on: order, when: {{colour: red}}, enter: a}}\n"
            )),
            "funnels.f.rules[0].when.colour"
        );
        assert_eq!(
            key_of(&format!(
                "{base}      - {{on: order, backflow: {{to: b, from: [a], reason: x}}}}\n"
            )),
            "funnels.f.rules[0].backflow.from"
        );
        assert_eq!(
            key_of(&format!("{base}      - {{on: order}}\n")),
            "funnels.f.rules[0]"
        );
        assert_eq!(
            key_of("funnels:\n  f:\n    stages: [a, a]\n    rules: [{on: order, enter: a}]\n"),
            "funnels.f.stages"
        );
        assert_eq!(
            key_of("funnels:\n  F:\n    stages: [a]\n    rules: [{on: order, enter: a}]\n"),
            "funnels.F"
        );
        assert_eq!(
            key_of("funnels:\n  f:\n    stages: [a]\n    rulez: []\n"),
            "funnels"
        );
    }

    #[test]
    fn a_new_funnel_is_configuration_only() {
        let f = Funnels::from_yaml(
            "funnels:\n  webinar:\n    stages: [registered, attended]\n    rules:\n      - {on: signup, when: {utm_campaign: webinar}, enter: registered}\n      - {on: call, when: {extra.attended: 'true'}, enter: attended}\n",
        )
        .expect("valid");
        let w = f.get("webinar").unwrap();
        assert_eq!(w.rules.len(), 2);
        assert_eq!(w.first_bit, 0);
    }
}
