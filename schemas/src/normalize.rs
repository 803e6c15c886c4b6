//! Raw source payload bytes → [`NormalizedEvent`], or a categorized [`NormalizeError`].

use crate::channel::{ChannelInput, ChannelRules};
use crate::error::{excerpt, ErrorCategory as C, NormalizeError};
use crate::event::NormalizedEvent;
use crate::money::{from_cents, json_type, parse_amount};
use crate::pii::{hash_pii, normalize_email, normalize_phone};
use crate::screening::{nests_deeper_than, Screening, EMAIL_KEY, MAX_NESTING, PHONE_KEY};
use crate::secret::Secret;
use crate::source::{EventType, SourceKind};
use crate::timestamp::{parse_timestamp, TimestampError};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Default message size limit (SPEC §4): 64 KiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Ids are non-empty strings of at most this many bytes (SPEC §1).
pub const MAX_ID_BYTES: usize = 128;
/// Free-text fields (reasons, platform, UTM values, URLs) are capped at this many bytes.
pub const MAX_TEXT_BYTES: usize = 2048;

/// Everything normalization depends on besides the message.
#[derive(Debug, Clone)]
pub struct NormalizerConfig {
    /// Channel rules (`config/channels.yaml`).
    pub channel_rules: ChannelRules,
    /// Zone for timestamps written without an offset.
    pub time_zone: Tz,
    /// Salt for phone and email hashes.
    pub pii_salt: Secret<String>,
    /// Messages larger than this are rejected before parsing.
    pub max_message_bytes: usize,
    /// Personal-data keys and placeholder ids.
    pub screening: Screening,
}

/// Where a message came from.
#[derive(Debug, Clone, Copy)]
pub struct SourceMeta {
    /// Which contract applies.
    pub kind: SourceKind,
    /// Kafka partition.
    pub partition: i32,
    /// Kafka offset.
    pub offset: i64,
    /// When the collector read it.
    pub received_at: DateTime<Utc>,
}

/// Normalizes raw messages. Pure and cheap to share across tasks.
#[derive(Debug, Clone)]
pub struct Normalizer {
    config: NormalizerConfig,
}

type Result<T> = std::result::Result<T, NormalizeError>;

impl Normalizer {
    /// Builds a normalizer.
    pub fn new(config: NormalizerConfig) -> Self {
        Self { config }
    }

    /// The configuration in use.
    pub fn config(&self) -> &NormalizerConfig {
        &self.config
    }

    /// Validates and normalizes one message.
    pub fn normalize(&self, meta: &SourceMeta, payload: &[u8]) -> Result<NormalizedEvent> {
        if payload.len() > self.config.max_message_bytes {
            return Err(NormalizeError::whole(
                C::Oversized,
                format!(
                    "message is {} bytes, the limit is {}",
                    payload.len(),
                    self.config.max_message_bytes
                ),
            ));
        }
        let text = std::str::from_utf8(payload).map_err(|e| {
            NormalizeError::whole(
                C::InvalidUtf8,
                format!("invalid utf-8 at byte {}", e.valid_up_to()),
            )
        })?;
        if nests_deeper_than(payload, MAX_NESTING) {
            return Err(NormalizeError::whole(
                C::InvalidJson,
                format!("objects and arrays nest deeper than {MAX_NESTING} levels"),
            ));
        }
        let value: Value = serde_json::from_str(text)
            .map_err(|e| NormalizeError::whole(C::InvalidJson, format!("not valid json: {e}")))?;
        let Value::Object(map) = value else {
            return Err(NormalizeError::whole(
                C::NotAnObject,
                format!("expected a json object, got {}", json_type(&value)),
            ));
        };
        let mut f = Fields {
            map,
            prefix: "",
            tz: self.config.time_zone,
            screening: &self.config.screening,
        };
        let mut ev = match meta.kind {
            SourceKind::Exposure => self.exposure(&mut f)?,
            SourceKind::AdClick => self.click(&mut f)?,
            SourceKind::Signup => self.signup(&mut f)?,
            SourceKind::Trial => trial(&mut f)?,
            SourceKind::Call => call(&mut f)?,
            SourceKind::Contract => contract(&mut f)?,
            SourceKind::Order => order(&mut f)?,
        };
        ev.event_id = event_id(meta.kind, &ev.native_id, ev.event_type.id_discriminator());
        ev.source_topic = meta.kind.canonical_topic().to_string();
        ev.source_partition = meta.partition;
        ev.source_offset = meta.offset;
        ev.received_at = meta
            .received_at
            .duration_trunc(TimeDelta::milliseconds(1))
            .unwrap_or(meta.received_at);
        if matches!(
            meta.kind,
            SourceKind::Exposure | SourceKind::AdClick | SourceKind::Signup
        ) {
            ev.channel = Some(self.channel(&ev));
        }
        self.screen_personal_data(&mut ev, &mut f.map);
        ev.extra = f.map;
        Ok(ev)
    }

    /// Personal data never leaves in clear, whatever the topic (SPEC §4): a `phone` or `email`
    /// the contract does not name is kept as its salted hash when it parses and dropped when
    /// not; every other personal-data key is dropped wherever it sits.
    fn screen_personal_data(&self, ev: &mut NormalizedEvent, extra: &mut Map<String, Value>) {
        let salt = &self.config.pii_salt;
        if let Some(Value::String(p)) = extra.remove(PHONE_KEY) {
            if ev.phone_hash.is_none() {
                ev.phone_hash = normalize_phone(&p)
                    .ok()
                    .map(|n| hash_pii(salt, PHONE_KEY, &n));
            }
        }
        if let Some(Value::String(e)) = extra.remove(EMAIL_KEY) {
            if ev.email_hash.is_none() {
                ev.email_hash = normalize_email(&e)
                    .ok()
                    .map(|n| hash_pii(salt, EMAIL_KEY, &n));
            }
        }
        self.config.screening.scrub(extra);
    }

    fn channel(&self, ev: &NormalizedEvent) -> String {
        self.config
            .channel_rules
            .classify(&ChannelInput {
                platform: ev.platform.as_deref(),
                utm_source: ev.utm_source.as_deref(),
                utm_medium: ev.utm_medium.as_deref(),
                utm_campaign: ev.utm_campaign.as_deref(),
            })
            .to_string()
    }

    fn exposure(&self, f: &mut Fields<'_>) -> Result<NormalizedEvent> {
        let mut ev = blank(
            EventType::Exposure,
            f.identity(SourceKind::Exposure.id_field())?,
            f.ts(SourceKind::Exposure.time_field())?,
        );
        ev.platform = Some(f.text("platform")?.to_lowercase());
        ev.campaign_id = Some(f.id("campaign_id")?);
        ev.device_id = Some(f.identity("device_id")?);
        ev.adgroup_id = f.opt_id("adgroup_id")?;
        ev.creative_id = f.opt_id("creative_id")?;
        ev.cost_micros = f.opt_count("cost_micros")?;
        Ok(ev)
    }

    fn click(&self, f: &mut Fields<'_>) -> Result<NormalizedEvent> {
        let mut ev = blank(
            EventType::Click,
            f.identity(SourceKind::AdClick.id_field())?,
            f.ts(SourceKind::AdClick.time_field())?,
        );
        ev.platform = Some(f.text("platform")?.to_lowercase());
        ev.device_id = Some(f.identity("device_id")?);
        let raw_url = f.text("landing_url")?;
        let url = url::Url::parse(&raw_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| {
                NormalizeError::field(
                    C::InvalidValue,
                    "landing_url",
                    format!("{} is not an absolute http(s) url", excerpt(&raw_url)),
                )
            })?;
        for (k, v) in url.query_pairs() {
            let v = v.trim();
            if v.is_empty() {
                continue;
            }
            let slot = match k.as_ref() {
                "utm_source" => &mut ev.utm_source,
                "utm_medium" => &mut ev.utm_medium,
                "utm_campaign" => &mut ev.utm_campaign,
                "utm_content" => &mut ev.utm_content,
                "ab" => &mut ev.variant,
                _ => continue,
            };
            // The first occurrence wins, as in most analytics tools.
            slot.get_or_insert_with(|| v.to_string());
        }
        let mut page = url.clone();
        page.set_query(None);
        page.set_fragment(None);
        ev.landing_page = Some(page.to_string());
        ev.campaign_id = f.opt_id("campaign_id")?;
        ev.cost_micros = f.opt_count("cost_micros")?;
        Ok(ev)
    }

    fn signup(&self, f: &mut Fields<'_>) -> Result<NormalizedEvent> {
        let mut ev = blank(
            EventType::Signup,
            f.identity(SourceKind::Signup.id_field())?,
            f.ts(SourceKind::Signup.time_field())?,
        );
        ev.lead_id = Some(f.identity("user_id")?);
        ev.device_id = f.opt_identity("device_id")?;
        let salt = &self.config.pii_salt;
        if let Some(p) = f.opt_text("phone")? {
            let n = normalize_phone(&p).map_err(|why| {
                NormalizeError::field(C::InvalidValue, "phone", format!("phone number {why}"))
            })?;
            ev.phone_hash = Some(hash_pii(salt, "phone", &n));
        }
        if let Some(e) = f.opt_text("email")? {
            let n = normalize_email(&e).map_err(|why| {
                NormalizeError::field(C::InvalidValue, "email", format!("email address {why}"))
            })?;
            ev.email_hash = Some(hash_pii(salt, "email", &n));
        }
        // Personal data that is never stored (SPEC §4), whatever its shape.
        f.map.remove("name");
        if let Some(mut utm) = f.opt_object("utm")? {
            ev.utm_source = utm.opt_text("source")?;
            ev.utm_medium = utm.opt_text("medium")?;
            ev.utm_campaign = utm.opt_text("campaign")?;
            utm.keep_rest_in(&mut f.map, "utm");
        }
        if let Some(mut exp) = f.opt_object("experiment")? {
            ev.experiment_id = exp.opt_id("id")?;
            ev.variant = exp.opt_text("variant")?;
            exp.keep_rest_in(&mut f.map, "experiment");
        }
        Ok(ev)
    }
}

fn trial(f: &mut Fields<'_>) -> Result<NormalizedEvent> {
    let id = f.identity(SourceKind::Trial.id_field())?;
    let event_type = match f.one_of(
        "event",
        &["trial_started", "trial_activated", "trial_expired"],
    )? {
        "trial_started" => EventType::TrialStarted,
        "trial_activated" => EventType::TrialActivated,
        _ => EventType::TrialExpired,
    };
    let mut ev = blank(event_type, id, f.ts(SourceKind::Trial.time_field())?);
    ev.lead_id = Some(f.identity("user_id")?);
    ev.plan = f.opt_text("plan")?;
    Ok(ev)
}

fn call(f: &mut Fields<'_>) -> Result<NormalizedEvent> {
    let mut ev = blank(
        EventType::Call,
        f.identity(SourceKind::Call.id_field())?,
        f.ts(SourceKind::Call.time_field())?,
    );
    ev.lead_id = Some(f.identity("lead_id")?);
    ev.call_direction = Some(f.one_of("direction", &["inbound", "outbound"])?.to_string());
    let duration = f.count("duration_sec")?;
    ev.call_duration_sec = Some(u32::try_from(duration).map_err(|_| {
        NormalizeError::field(
            C::InvalidValue,
            "duration_sec",
            format!("{duration} seconds is longer than any call"),
        )
    })?);
    let outcome = f.one_of(
        "outcome",
        &[
            "connected",
            "no_answer",
            "callback",
            "qualified",
            "disqualified",
        ],
    )?;
    ev.call_outcome = Some(outcome.to_string());
    let reason = f.opt_text("disqualify_reason")?;
    if outcome == "disqualified" && reason.is_none() {
        return Err(f.missing("disqualify_reason", "required when outcome is disqualified"));
    }
    ev.reason = reason;
    ev.agent_id = f.opt_id("agent_id")?;
    Ok(ev)
}

fn contract(f: &mut Fields<'_>) -> Result<NormalizedEvent> {
    let id = f.identity(SourceKind::Contract.id_field())?;
    let lead = f.identity("lead_id")?;
    let status = f.one_of("status", &["signed", "lost", "cancelled"])?;
    let event_type = match status {
        "signed" => EventType::ContractSigned,
        "lost" => EventType::ContractLost,
        _ => EventType::ContractCancelled,
    };
    let mut ev = blank(event_type, id, f.ts(SourceKind::Contract.time_field())?);
    ev.lead_id = Some(lead);
    // A signed contract must say what it is worth; lost and cancelled ones may omit it.
    let (amount, currency) = if status == "signed" {
        (Some(f.money("amount")?), Some(f.currency("currency")?))
    } else {
        (f.opt_money("amount")?, f.opt_currency("currency")?)
    };
    if amount.is_some() && currency.is_none() {
        return Err(f.missing("currency", "required when amount is given"));
    }
    ev.amount = amount;
    ev.currency = currency;
    let reason = f.opt_text("lost_reason")?;
    if status == "lost" && reason.is_none() {
        return Err(f.missing("lost_reason", "required when status is lost"));
    }
    ev.reason = reason;
    Ok(ev)
}

fn order(f: &mut Fields<'_>) -> Result<NormalizedEvent> {
    let mut ev = blank(
        EventType::Order,
        f.identity(SourceKind::Order.id_field())?,
        f.ts(SourceKind::Order.time_field())?,
    );
    ev.lead_id = Some(f.identity("user_id")?);
    let cents = f.opt_count("amount_cents")?;
    let decimal = f.opt_money("amount")?;
    let amount = match (cents, decimal) {
        (None, None) => {
            return Err(f.missing("amount_cents", "an order needs amount_cents or amount"))
        }
        (Some(c), d) => {
            let from_c = from_cents(c)
                .map_err(|why| NormalizeError::field(C::InvalidMoney, "amount_cents", why))?;
            if d.is_some_and(|d| d != from_c) {
                return Err(NormalizeError::field(
                    C::InvalidMoney,
                    "amount",
                    format!("amount disagrees with amount_cents ({from_c})"),
                ));
            }
            from_c
        }
        (None, Some(d)) => d,
    };
    ev.amount = Some(amount);
    ev.currency = Some(f.currency("currency")?);
    Ok(ev)
}

/// A NormalizedEvent with only the type, native id and event time set; the rest filled by callers.
fn blank(event_type: EventType, native_id: String, event_time: DateTime<Utc>) -> NormalizedEvent {
    NormalizedEvent {
        event_id: String::new(),
        event_type,
        source_topic: String::new(),
        source_partition: 0,
        source_offset: 0,
        native_id,
        lead_id: None,
        device_id: None,
        channel: None,
        platform: None,
        campaign_id: None,
        adgroup_id: None,
        creative_id: None,
        landing_page: None,
        utm_source: None,
        utm_medium: None,
        utm_campaign: None,
        utm_content: None,
        experiment_id: None,
        variant: None,
        amount: None,
        currency: None,
        cost_micros: None,
        reason: None,
        call_direction: None,
        call_outcome: None,
        call_duration_sec: None,
        agent_id: None,
        plan: None,
        phone_hash: None,
        email_hash: None,
        event_time,
        received_at: event_time,
        extra: Map::new(),
    }
}

/// The deterministic event id: the first 128 bits of SHA-256(topic \n native id [\n discriminator]), hex.
pub fn event_id(kind: SourceKind, native_id: &str, discriminator: Option<&str>) -> String {
    let mut h = Sha256::new();
    h.update(kind.canonical_topic().as_bytes());
    h.update(b"\n");
    h.update(native_id.as_bytes());
    if let Some(d) = discriminator {
        h.update(b"\n");
        h.update(d.as_bytes());
    }
    crate::pii::lower_hex(&h.finalize()[..16])
}

/// A JSON object whose known keys are taken out one by one; what remains is kept as extra attributes.
struct Fields<'a> {
    map: Map<String, Value>,
    prefix: &'static str,
    tz: Tz,
    screening: &'a Screening,
}

impl<'a> Fields<'a> {
    fn path(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    fn missing(&self, key: &str, why: &str) -> NormalizeError {
        NormalizeError::field(C::MissingField, self.path(key), why)
    }

    fn wrong_type(&self, key: &str, expected: &str, got: &Value) -> NormalizeError {
        NormalizeError::field(
            C::InvalidType,
            self.path(key),
            format!("expected {expected}, got {}", json_type(got)),
        )
    }

    /// Removes a key; JSON null counts as absent.
    fn take(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key).filter(|v| !v.is_null())
    }

    fn required(&mut self, key: &str) -> Result<Value> {
        self.take(key)
            .ok_or_else(|| self.missing(key, "required field is missing"))
    }

    fn string(&self, key: &str, v: Value) -> Result<String> {
        match v {
            Value::String(s) => Ok(s),
            other => Err(self.wrong_type(key, "a string", &other)),
        }
    }

    fn check_id(&self, key: &str, s: String) -> Result<String> {
        if s.trim().is_empty() {
            return Err(NormalizeError::field(
                C::InvalidId,
                self.path(key),
                "id is empty",
            ));
        }
        if s.len() > MAX_ID_BYTES {
            return Err(NormalizeError::field(
                C::InvalidId,
                self.path(key),
                format!("id is {} bytes, the limit is {MAX_ID_BYTES}", s.len()),
            ));
        }
        Ok(s)
    }

    fn id(&mut self, key: &str) -> Result<String> {
        let v = self.required(key)?;
        let s = self.string(key, v)?;
        self.check_id(key, s)
    }

    fn opt_id(&mut self, key: &str) -> Result<Option<String>> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => {
                let s = self.string(key, v)?;
                self.check_id(key, s).map(Some)
            }
        }
    }

    /// An id that identifies someone or something: a placeholder (`unknown`, an all-zero
    /// IDFA) would pile unrelated events onto one identity.
    fn check_identity(&self, key: &str, s: String) -> Result<String> {
        let s = self.check_id(key, s)?;
        if self.screening.is_placeholder(&s) {
            return Err(NormalizeError::field(
                C::InvalidId,
                self.path(key),
                format!(
                    "{} is a placeholder, not an id (normalize.placeholder_ids)",
                    excerpt(&s)
                ),
            ));
        }
        Ok(s)
    }

    fn identity(&mut self, key: &str) -> Result<String> {
        let v = self.required(key)?;
        let s = self.string(key, v)?;
        self.check_identity(key, s)
    }

    fn opt_identity(&mut self, key: &str) -> Result<Option<String>> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => {
                let s = self.string(key, v)?;
                self.check_identity(key, s).map(Some)
            }
        }
    }

    fn check_text(&self, key: &str, s: String) -> Result<Option<String>> {
        if s.len() > MAX_TEXT_BYTES {
            return Err(NormalizeError::field(
                C::InvalidValue,
                self.path(key),
                format!("text is {} bytes, the limit is {MAX_TEXT_BYTES}", s.len()),
            ));
        }
        let t = s.trim();
        Ok((!t.is_empty()).then(|| t.to_string()))
    }

    fn text(&mut self, key: &str) -> Result<String> {
        let v = self.required(key)?;
        let s = self.string(key, v)?;
        self.check_text(key, s)?
            .ok_or_else(|| self.missing(key, "required field is empty"))
    }

    /// An optional string; empty or blank counts as absent.
    fn opt_text(&mut self, key: &str) -> Result<Option<String>> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => {
                let s = self.string(key, v)?;
                self.check_text(key, s)
            }
        }
    }

    fn one_of(&mut self, key: &str, allowed: &[&'static str]) -> Result<&'static str> {
        let v = self.required(key)?;
        let s = self.string(key, v)?;
        allowed
            .iter()
            .copied()
            .find(|a| *a == s.trim())
            .ok_or_else(|| {
                NormalizeError::field(
                    C::InvalidEnum,
                    self.path(key),
                    format!("{} is not one of {}", excerpt(&s), allowed.join(", ")),
                )
            })
    }

    fn ts(&mut self, key: &str) -> Result<DateTime<Utc>> {
        let v = self.required(key)?;
        parse_timestamp(&v, self.tz).map_err(|e| match e {
            TimestampError::WrongType => self.wrong_type(key, "a number or a string timestamp", &v),
            TimestampError::Unparseable(s) => NormalizeError::field(
                C::InvalidTimestamp,
                self.path(key),
                format!(
                    "{} is not epoch seconds/milliseconds, rfc 3339, or yyyy-mm-dd hh:mm:ss[.fff]",
                    excerpt(&s)
                ),
            ),
            TimestampError::OutOfRange(s) => NormalizeError::field(
                C::InvalidTimestamp,
                self.path(key),
                format!("{} is outside 2000-01-01..2100-01-01", excerpt(&s)),
            ),
        })
    }

    /// A non-negative integer, as a JSON integer or an integer string.
    fn count_value(&self, key: &str, v: Value) -> Result<i64> {
        let parsed = match &v {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse::<i64>().ok(),
            _ => return Err(self.wrong_type(key, "an integer", &v)),
        };
        match parsed {
            Some(i) if i >= 0 => Ok(i),
            _ => Err(NormalizeError::field(
                C::InvalidValue,
                self.path(key),
                format!("{} is not a non-negative integer", excerpt(&v.to_string())),
            )),
        }
    }

    fn count(&mut self, key: &str) -> Result<i64> {
        let v = self.required(key)?;
        self.count_value(key, v)
    }

    fn opt_count(&mut self, key: &str) -> Result<Option<i64>> {
        self.take(key).map(|v| self.count_value(key, v)).transpose()
    }

    fn money_value(&self, key: &str, v: &Value) -> Result<Decimal> {
        parse_amount(v).map_err(|why| NormalizeError::field(C::InvalidMoney, self.path(key), why))
    }

    fn money(&mut self, key: &str) -> Result<Decimal> {
        let v = self.required(key)?;
        self.money_value(key, &v)
    }

    fn opt_money(&mut self, key: &str) -> Result<Option<Decimal>> {
        self.take(key)
            .map(|v| self.money_value(key, &v))
            .transpose()
    }

    fn currency_value(&self, key: &str, v: Value) -> Result<String> {
        let s = self.string(key, v)?;
        let t = s.trim();
        if t.len() == 3 && t.bytes().all(|b| b.is_ascii_alphabetic()) {
            Ok(t.to_ascii_uppercase())
        } else {
            Err(NormalizeError::field(
                C::InvalidValue,
                self.path(key),
                format!("{} is not an iso 4217 currency code", excerpt(&s)),
            ))
        }
    }

    fn currency(&mut self, key: &str) -> Result<String> {
        let v = self.required(key)?;
        self.currency_value(key, v)
    }

    fn opt_currency(&mut self, key: &str) -> Result<Option<String>> {
        self.take(key)
            .map(|v| self.currency_value(key, v))
            .transpose()
    }

    fn opt_object(&mut self, key: &'static str) -> Result<Option<Fields<'a>>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Fields {
                map,
                prefix: key,
                tz: self.tz,
                screening: self.screening,
            })),
            Some(other) => Err(self.wrong_type(key, "an object", &other)),
        }
    }

    /// Keeps a nested object's unlisted keys as an extra attribute of the parent.
    fn keep_rest_in(self, parent: &mut Map<String, Value>, key: &str) {
        if !self.map.is_empty() {
            parent.insert(key.to_string(), Value::Object(self.map));
        }
    }
}
