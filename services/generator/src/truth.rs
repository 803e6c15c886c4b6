//! The exact expected results of a run, computed from the events that were delivered by a plain
//! batch pass in event-time order. It shares no code with any streaming component on purpose: it
//! is the oracle the collector and the aggregator are checked against.
//!
//! The two default funnels of SPEC §3 are written out here by hand (not read from
//! `config/funnel.yaml`), so a mistake in the aggregator's configurable machine cannot hide in
//! the oracle too. The JSON format is documented in the README ("The truth file").

use leadstream_schemas::{ErrorCategory, EventType, SourceKind};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};

/// What the truth needs to know about one valid event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruthEvent {
    /// Deterministic event id (as the collector derives it).
    pub event_id: String,
    /// Source topic contract.
    pub kind: SourceKind,
    /// Normalized type.
    pub event_type: EventType,
    /// Event time, epoch milliseconds.
    pub time_ms: i64,
    /// User / lead id.
    pub lead_id: Option<String>,
    /// Device id.
    pub device_id: Option<String>,
    /// Channel of a touch event (exposure, click, signup).
    pub channel: Option<String>,
    /// Experiment variant carried by the event.
    pub variant: Option<String>,
    /// Call outcome.
    pub call_outcome: Option<String>,
    /// Disqualify or lost reason.
    pub reason: Option<String>,
    /// Money of an order or a signed contract (the generator's currency is always CNY).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<Decimal>,
}

/// Stages of the `b2c` funnel, in order.
pub const B2C_STAGES: [&str; 6] = [
    "exposure",
    "click",
    "signup",
    "trial",
    "purchase",
    "repurchase",
];
/// Stages of the `sales` funnel, in order.
pub const SALES_STAGES: [&str; 4] = ["lead", "contacted", "qualified", "won"];
/// Breakdown value for leads without a channel (no touch, no signup) or without a variant.
pub const NONE: &str = "none";

/// Touches more than this before a lead's signup do not attribute it (SPEC §2: the attribution
/// lookback, 30 days; the aggregator's `attribution.lookback` defaults to it).
pub const ATTRIBUTION_LOOKBACK_MS: i64 = 30 * 86_400_000;

/// The truth file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Truth {
    /// Format version of this file.
    pub format: u32,
    /// Seed of the run.
    pub seed: u64,
    /// Leads whose stories were generated (some may not have been delivered yet when a
    /// continuous run stopped; only delivered events count below).
    pub leads_generated: u64,
    /// Message counts.
    pub messages: MessageCounts,
    /// Identity stitching.
    pub identities: Identities,
    /// `b2c` and `sales`.
    pub funnels: BTreeMap<String, FunnelTruth>,
    /// Revenue per currency: the amounts of every distinct order and signed contract.
    #[serde(default)]
    pub revenue: BTreeMap<String, Decimal>,
}

/// What was delivered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageCounts {
    /// Every message produced.
    pub sent: u64,
    /// Distinct valid events (first deliveries).
    pub valid: u64,
    /// Extra deliveries of valid events: the same bytes again, or another copy of the event
    /// (another time or lead key; `copies` counts those).
    pub duplicates: u64,
    /// Extra deliveries that said something else than the first (another event time or lead
    /// key): the earliest copy is the event.
    #[serde(default)]
    pub copies: u64,
    /// Malformed messages.
    pub poison: u64,
    /// Malformed messages by the category the collector must give them.
    pub poison_by_category: BTreeMap<String, u64>,
    /// Distinct valid events by source topic (canonical name).
    pub valid_by_topic: BTreeMap<String, u64>,
    /// Distinct valid events by normalized event type.
    pub valid_by_event_type: BTreeMap<String, u64>,
    /// Valid events delivered after an event of the same topic that is newer in event time.
    pub out_of_order: u64,
    /// Valid events delivered a second or more after their event time (the late share).
    pub late: u64,
}

/// Identity stitching results.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identities {
    /// Distinct users (lead ids) seen.
    pub users: u64,
    /// Devices linked to a user by a signup.
    pub stitched_devices: u64,
    /// Devices never linked: each is an anonymous lead of its own.
    pub anonymous_devices: u64,
}

/// One funnel's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunnelTruth {
    /// Stage names in order; `reached` and `occupancy` arrays follow this order.
    pub stages: Vec<String>,
    /// All leads together.
    pub totals: Cell,
    /// One cell per (first-touch channel, last-touch channel, variant) that has leads, sorted.
    pub cells: Vec<Cell>,
}

/// Results for one breakdown cell (or the totals, where the three keys are `*`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cell {
    /// First-touch channel.
    pub first_touch: String,
    /// Last-touch channel.
    pub last_touch: String,
    /// Experiment variant.
    pub variant: String,
    /// Leads that entered the funnel.
    pub leads: u64,
    /// Leads whose furthest stage is at or beyond each stage.
    pub reached: Vec<u64>,
    /// Leads currently in each stage (not counting lost leads).
    pub occupancy: Vec<u64>,
    /// Leads currently lost.
    pub lost: u64,
    /// Transitions into `lost`, by the stage left and the reason.
    pub losses: BTreeMap<String, BTreeMap<String, u64>>,
    /// Backflow transitions, by the stage left and the reason.
    pub backflows: BTreeMap<String, BTreeMap<String, u64>>,
    /// Transitions by kind (`enter`, `advance`, `skip`, `backflow`, `lost`, `reactivated`).
    pub transitions: BTreeMap<String, u64>,
}

impl Cell {
    fn new(first: &str, last: &str, variant: &str, stages: usize) -> Self {
        Self {
            first_touch: first.into(),
            last_touch: last.into(),
            variant: variant.into(),
            reached: vec![0; stages],
            occupancy: vec![0; stages],
            ..Self::default()
        }
    }

    fn add(&mut self, lead: &LeadOutcome, stages: &[&str]) {
        self.leads += 1;
        if let Some(f) = lead.furthest {
            for r in &mut self.reached[..=f] {
                *r += 1;
            }
        }
        match (lead.lost, lead.current) {
            (true, _) => self.lost += 1,
            (false, Some(c)) => self.occupancy[c] += 1,
            (false, None) => {}
        }
        for t in &lead.transitions {
            *self.transitions.entry(t.kind.into()).or_default() += 1;
            let from = t.from.map_or(NONE, |f| stages[f]).to_string();
            let reason = t.reason.clone().unwrap_or_default();
            match t.kind {
                "lost" => {
                    *self
                        .losses
                        .entry(from)
                        .or_default()
                        .entry(reason)
                        .or_default() += 1
                }
                "backflow" => {
                    *self
                        .backflows
                        .entry(from)
                        .or_default()
                        .entry(reason)
                        .or_default() += 1
                }
                _ => {}
            }
        }
    }
}

/// One stage change of a lead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// `enter`, `advance`, `skip`, `backflow`, `lost` or `reactivated`.
    pub kind: &'static str,
    /// Stage left (None when entering, or when lost before entering).
    pub from: Option<usize>,
    /// Stage entered (None for `lost`).
    pub to: Option<usize>,
    /// Reason (backflow, lost).
    pub reason: Option<String>,
    /// Event time.
    pub time_ms: i64,
}

/// A lead's end state in one funnel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeadOutcome {
    /// Current stage (the stage a lost lead was lost from stays here).
    pub current: Option<usize>,
    /// Furthest stage reached.
    pub furthest: Option<usize>,
    /// Currently lost.
    pub lost: bool,
    /// Every stage change in event-time order.
    pub transitions: Vec<Transition>,
}

impl LeadOutcome {
    fn entered(&self) -> bool {
        !self.transitions.is_empty()
    }

    fn forward(&mut self, to: usize, time_ms: i64) {
        if self.lost {
            self.lost = false;
            self.push("reactivated", self.current, Some(to), None, time_ms);
            self.current = Some(to);
        } else {
            let kind = match self.current {
                None => "enter",
                Some(c) if to <= c => return,
                Some(c) if to == c + 1 => "advance",
                Some(_) => "skip",
            };
            self.push(kind, self.current, Some(to), None, time_ms);
            self.current = Some(to);
        }
        self.furthest = self.furthest.max(Some(to));
    }

    fn backflow(&mut self, to: usize, reason: &str, time_ms: i64) {
        self.push(
            "backflow",
            self.current,
            Some(to),
            Some(reason.into()),
            time_ms,
        );
        self.current = Some(to);
    }

    fn lose(&mut self, reason: &str, time_ms: i64) {
        if !self.lost {
            self.lost = true;
            self.push("lost", self.current, None, Some(reason.into()), time_ms);
        }
    }

    fn push(
        &mut self,
        kind: &'static str,
        from: Option<usize>,
        to: Option<usize>,
        reason: Option<String>,
        time_ms: i64,
    ) {
        self.transitions.push(Transition {
            kind,
            from,
            to,
            reason,
            time_ms,
        });
    }
}

/// The `b2c` funnel over one lead's events (sorted by event time).
pub fn b2c(events: &[&TruthEvent]) -> LeadOutcome {
    let mut o = LeadOutcome::default();
    let mut orders = 0;
    for e in events {
        let t = e.time_ms;
        match e.event_type {
            EventType::Exposure => o.forward(0, t),
            EventType::Click => o.forward(1, t),
            EventType::Signup => o.forward(2, t),
            EventType::TrialStarted | EventType::TrialActivated => o.forward(3, t),
            EventType::Order => {
                orders += 1;
                o.forward(if orders == 1 { 4 } else { 5 }, t);
            }
            // Backflow only from `trial`, and only while nothing was bought.
            EventType::TrialExpired if o.current == Some(3) && orders == 0 => {
                o.backflow(2, "trial_expired", t)
            }
            _ => {}
        }
    }
    o
}

/// The `sales` funnel over one lead's events (sorted by event time).
pub fn sales(events: &[&TruthEvent]) -> LeadOutcome {
    let mut o = LeadOutcome::default();
    for e in events {
        let t = e.time_ms;
        let reason = e.reason.as_deref().unwrap_or_default();
        match (e.event_type, e.call_outcome.as_deref()) {
            (EventType::Signup, _) => o.forward(0, t),
            (EventType::Call, Some("connected" | "callback")) => o.forward(1, t),
            (EventType::Call, Some("qualified")) => o.forward(2, t),
            (EventType::Call, Some("disqualified")) => o.lose(reason, t),
            (EventType::ContractSigned, _) => o.forward(3, t),
            (EventType::ContractLost, _) => o.lose(reason, t),
            (EventType::ContractCancelled, _) if o.current == Some(3) && !o.lost => {
                o.backflow(2, "contract_cancelled", t)
            }
            _ => {}
        }
    }
    o
}

/// Attribution of one lead: first-touch channel, last-touch channel, variant. Touches more
/// than [`ATTRIBUTION_LOOKBACK_MS`] before the signup do not count.
pub fn attribution(events: &[&TruthEvent]) -> (String, String, String) {
    let signup = events.iter().find(|e| e.event_type == EventType::Signup);
    let horizon = signup.map_or(i64::MIN, |s| s.time_ms - ATTRIBUTION_LOOKBACK_MS);
    let is_touch = |e: &&&TruthEvent| {
        matches!(e.event_type, EventType::Exposure | EventType::Click) && e.time_ms >= horizon
    };
    let signup_channel = signup.and_then(|s| s.channel.clone());
    let first = events
        .iter()
        .find(is_touch)
        .and_then(|e| e.channel.clone())
        .or_else(|| signup_channel.clone());
    let last = events
        .iter()
        .filter(is_touch)
        .rfind(|e| signup.is_none_or(|s| e.time_ms <= s.time_ms))
        .and_then(|e| e.channel.clone())
        .or(signup_channel);
    let variant = events.iter().find_map(|e| e.variant.clone());
    let or_none = |v: Option<String>| v.unwrap_or_else(|| NONE.to_string());
    (or_none(first), or_none(last), or_none(variant))
}

/// One winner per event id: the earliest copy (the first delivered of copies with one time).
pub fn winners(events: &[TruthEvent]) -> Vec<&TruthEvent> {
    let mut best: HashMap<&str, &TruthEvent> = HashMap::new();
    for e in events {
        best.entry(e.event_id.as_str())
            .and_modify(|b| {
                if e.time_ms < b.time_ms {
                    *b = e;
                }
            })
            .or_insert(e);
    }
    best.into_values().collect()
}

/// Funnel results and identities over the winning copies of valid events, in any order.
pub fn funnels(events: &[TruthEvent]) -> (BTreeMap<String, FunnelTruth>, Identities) {
    let mut sorted: Vec<&TruthEvent> = winners(events);
    sorted.sort_by(|a, b| (a.time_ms, &a.event_id).cmp(&(b.time_ms, &b.event_id)));

    // A device belongs to the user of the earliest signup that names it.
    let mut owner: HashMap<&str, &str> = HashMap::new();
    for e in &sorted {
        if let (EventType::Signup, Some(d), Some(l)) = (e.event_type, &e.device_id, &e.lead_id) {
            owner.entry(d.as_str()).or_insert(l.as_str());
        }
    }
    let mut leads: BTreeMap<String, Vec<&TruthEvent>> = BTreeMap::new();
    let mut devices = HashSet::new();
    let mut users = HashSet::new();
    for e in &sorted {
        if let Some(d) = &e.device_id {
            devices.insert(d.as_str());
        }
        if let Some(l) = &e.lead_id {
            users.insert(l.as_str());
        }
        let key = match (&e.lead_id, &e.device_id) {
            (Some(l), _) => l.clone(),
            (None, Some(d)) => match owner.get(d.as_str()) {
                Some(u) => u.to_string(),
                None => format!("device:{d}"),
            },
            (None, None) => format!("event:{}", e.event_id),
        };
        leads.entry(key).or_default().push(e);
    }
    let identities = Identities {
        users: users.len() as u64,
        stitched_devices: owner.len() as u64,
        anonymous_devices: devices.iter().filter(|d| !owner.contains_key(*d)).count() as u64,
    };

    type Machine = fn(&[&TruthEvent]) -> LeadOutcome;
    let machines: [(&str, &[&str], Machine); 2] =
        [("b2c", &B2C_STAGES, b2c), ("sales", &SALES_STAGES, sales)];
    let mut out = BTreeMap::new();
    for (name, stages, machine) in machines {
        let mut cells: BTreeMap<(String, String, String), Cell> = BTreeMap::new();
        let mut totals = Cell::new("*", "*", "*", stages.len());
        for events in leads.values() {
            let outcome = machine(events);
            if !outcome.entered() {
                continue;
            }
            let key = attribution(events);
            cells
                .entry(key.clone())
                .or_insert_with(|| Cell::new(&key.0, &key.1, &key.2, stages.len()))
                .add(&outcome, stages);
            totals.add(&outcome, stages);
        }
        out.insert(
            name.to_string(),
            FunnelTruth {
                stages: stages.iter().map(|s| s.to_string()).collect(),
                totals,
                cells: cells.into_values().collect(),
            },
        );
    }
    (out, identities)
}

/// A valid event delivered this long after its event time counts as late.
pub const LATE_MS: i64 = 1000;

/// Accumulates deliveries as they are sent and produces the [`Truth`].
#[derive(Debug, Default)]
pub struct TruthBuilder {
    events: Vec<TruthEvent>,
    copies: Vec<TruthEvent>,
    messages: MessageCounts,
    newest_by_topic: HashMap<SourceKind, i64>,
}

impl TruthBuilder {
    /// Records the first delivery of a valid event, delivered at `delivered_ms`.
    pub fn valid(&mut self, e: TruthEvent, delivered_ms: i64) {
        let m = &mut self.messages;
        if delivered_ms - e.time_ms >= LATE_MS {
            m.late += 1;
        }
        m.sent += 1;
        m.valid += 1;
        *m.valid_by_topic
            .entry(e.kind.canonical_topic().into())
            .or_default() += 1;
        *m.valid_by_event_type
            .entry(e.event_type.as_str().into())
            .or_default() += 1;
        let newest = self.newest_by_topic.entry(e.kind).or_insert(i64::MIN);
        if e.time_ms < *newest {
            m.out_of_order += 1;
        }
        *newest = (*newest).max(e.time_ms);
        self.events.push(e);
    }

    /// Records a repeated delivery of a valid event.
    pub fn duplicate(&mut self) {
        self.messages.sent += 1;
        self.messages.duplicates += 1;
    }

    /// Records another copy of a valid event (same id, other content): the earliest copy wins.
    pub fn copy(&mut self, e: TruthEvent) {
        self.messages.sent += 1;
        self.messages.duplicates += 1;
        self.messages.copies += 1;
        self.copies.push(e);
    }

    /// Records a malformed message.
    pub fn poison(&mut self, category: ErrorCategory) {
        self.messages.sent += 1;
        self.messages.poison += 1;
        *self
            .messages
            .poison_by_category
            .entry(category.as_str().into())
            .or_default() += 1;
    }

    /// Messages recorded so far.
    pub fn sent(&self) -> u64 {
        self.messages.sent
    }

    /// The distinct valid events recorded so far, in delivery order.
    pub fn events(&self) -> &[TruthEvent] {
        &self.events
    }

    /// Every copy recorded so far: first deliveries, then the other copies.
    pub fn all_copies(&self) -> Vec<TruthEvent> {
        self.events.iter().chain(&self.copies).cloned().collect()
    }

    /// Computes the truth over everything recorded.
    pub fn finish(&self, seed: u64, leads_generated: u64) -> Truth {
        let all = self.all_copies();
        let (funnels, identities) = funnels(&all);
        Truth {
            format: 1,
            seed,
            leads_generated,
            messages: self.messages.clone(),
            identities,
            funnels,
            revenue: revenue(&all),
        }
    }
}

/// Revenue per currency of the valid events (each winning copy once).
fn revenue(events: &[TruthEvent]) -> BTreeMap<String, Decimal> {
    let mut out = BTreeMap::new();
    for a in winners(events).iter().filter_map(|e| e.amount) {
        *out.entry(CURRENCY.to_string()).or_default() += a;
    }
    out
}

/// The generator's one currency.
pub const CURRENCY: &str = "CNY";
