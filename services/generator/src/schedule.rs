//! The delivery schedule: leads arrive one after another (exponential gaps at the configured
//! rate), each lead's story is written in wire form, and every message gets a delivery time
//! (event time plus transport delay, much more for late ones; duplicates and malformed messages
//! in between). Deliveries come out in delivery-time order, holding only the stories still in
//! flight, so a run of any size streams in bounded memory.

use crate::config::{GeneratorConfig, PRODUCIBLE_POISON};
use crate::poison;
use crate::story::{lead_story, pick_weighted, PlannedEvent, StoryContext};
use crate::truth::{TruthEvent, LATE_MS};
use crate::wire;
use chrono_tz::Tz;
use leadstream_schemas::{event_id, ErrorCategory, EventType, SourceKind};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

/// A duplicate is delivered at most this long after the first copy.
pub const DUPLICATE_WITHIN_MS: i64 = 120_000;

/// What a delivered message is, for the truth.
#[derive(Debug, Clone, PartialEq)]
pub enum Label {
    /// The first delivery of a valid event.
    Valid(Box<TruthEvent>),
    /// A repeated delivery of a valid event (same bytes).
    Duplicate,
    /// Another copy of a valid event (same event id) that says something else: another event
    /// time, maybe another lead key. The earliest copy is the event.
    Copy(Box<TruthEvent>),
    /// A malformed message the collector must reject with this category.
    Poison(ErrorCategory),
}

/// One message to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Source topic contract (the topic is `<prefix><canonical topic>`).
    pub kind: SourceKind,
    /// Kafka key: the user id, else the device id; none for malformed messages.
    pub key: Option<String>,
    /// Message bytes.
    pub payload: Arc<[u8]>,
    /// When to deliver, epoch milliseconds (continuous mode waits for it).
    pub deliver_at_ms: i64,
    /// What it is.
    pub label: Label,
}

struct Queued {
    at: i64,
    seq: u64,
    delivery: Delivery,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// A random stream of the run: stream 0 draws arrival gaps, lead i's story uses 2i+2 and its
/// delivery noise 2i+3, so no lead's randomness depends on another's.
fn stream(seed: u64, n: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(n);
    r
}

/// The truth's view of a planned event.
pub fn truth_event(ev: &PlannedEvent) -> TruthEvent {
    let (call_outcome, reason) = match &ev.detail {
        crate::story::Detail::Call {
            outcome, reason, ..
        } => (Some(outcome.to_string()), reason.clone()),
        crate::story::Detail::Contract { reason, .. } => (None, reason.clone()),
        _ => (None, None),
    };
    TruthEvent {
        event_id: event_id(ev.kind, &ev.native_id, ev.event_type.id_discriminator()),
        kind: ev.kind,
        event_type: ev.event_type,
        time_ms: ev.time_ms,
        lead_id: ev.user_id.clone(),
        device_id: ev.device_id.clone(),
        channel: ev.channel.clone(),
        variant: ev.variant.clone(),
        call_outcome,
        reason,
        amount: match (&ev.detail, ev.event_type) {
            (crate::story::Detail::Order { amount }, _) => Some(*amount),
            (crate::story::Detail::Contract { amount, .. }, EventType::ContractSigned) => *amount,
            _ => None,
        },
    }
}

/// Deliveries in delivery-time order.
pub struct Schedule {
    cfg: GeneratorConfig,
    tag: String,
    tz: Tz,
    arrivals: ChaCha8Rng,
    next_lead: u64,
    next_arrival_ms: i64,
    heap: BinaryHeap<Reverse<Queued>>,
    seq: u64,
    poison_kinds: Vec<(ErrorCategory, f64)>,
}

impl Schedule {
    /// A schedule whose first lead arrives at `start_ms`. `cfg` must have passed `validate()`.
    pub fn new(cfg: GeneratorConfig, start_ms: i64) -> Self {
        let tz = cfg.time_zone().unwrap_or(chrono_tz::Asia::Shanghai);
        let poison_kinds = PRODUCIBLE_POISON
            .iter()
            .map(|c| {
                (
                    *c,
                    cfg.realism.poison_categories.get(c).copied().unwrap_or(0.0),
                )
            })
            .collect();
        Self {
            tag: format!("s{}", cfg.seed),
            tz,
            arrivals: stream(cfg.seed, 0),
            next_lead: 0,
            next_arrival_ms: start_ms,
            heap: BinaryHeap::new(),
            seq: 0,
            poison_kinds,
            cfg,
        }
    }

    /// Leads generated so far.
    pub fn leads_generated(&self) -> u64 {
        self.next_lead
    }

    fn more_leads(&self) -> bool {
        self.cfg.traffic.leads == 0 || self.next_lead < self.cfg.traffic.leads
    }

    fn push(&mut self, delivery: Delivery) {
        self.seq += 1;
        self.heap.push(Reverse(Queued {
            at: delivery.deliver_at_ms,
            seq: self.seq,
            delivery,
        }));
    }

    fn generate_lead(&mut self) {
        let i = self.next_lead;
        let arrival = self.next_arrival_ms;
        let mut story_rng = stream(self.cfg.seed, 2 * i + 2);
        let mut noise = stream(self.cfg.seed, 2 * i + 3);
        let events = {
            let ctx = StoryContext {
                cfg: &self.cfg,
                tag: &self.tag,
            };
            lead_story(&ctx, &mut story_rng, i, arrival)
        };
        let r = self.cfg.realism.clone();
        let lateness_ms = r.max_lateness.as_millis() as i64;
        for (n, ev) in events.iter().enumerate() {
            let payload: Arc<[u8]> = wire::encode(ev, &mut noise, self.tz).into();
            let key = ev.user_id.clone().or_else(|| ev.device_id.clone());
            let delay = if noise.random::<f64>() < r.late_share {
                noise.random_range(LATE_MS..=lateness_ms.max(LATE_MS))
            } else {
                noise.random_range(0..LATE_MS)
            };
            let at = ev.time_ms + delay;
            self.push(Delivery {
                kind: ev.kind,
                key: key.clone(),
                payload: payload.clone(),
                deliver_at_ms: at,
                label: Label::Valid(Box::new(truth_event(ev))),
            });
            if noise.random::<f64>() < r.duplicate_share {
                // Producer retries and small replays: soon after the first delivery.
                let again = at + noise.random_range(0..=DUPLICATE_WITHIN_MS);
                self.push(Delivery {
                    kind: ev.kind,
                    key,
                    payload,
                    deliver_at_ms: again,
                    label: Label::Duplicate,
                });
            }
            let window = (lateness_ms / 3).max(1000);
            for rekey in [false, true] {
                let share = if rekey { r.rekey_share } else { r.resend_share };
                if noise.random::<f64>() >= share {
                    continue;
                }
                let mut copy = ev.clone();
                // Even shifts for re-sends, odd ones for re-keys: no two copies of an event
                // share a time, so the earliest is always one copy (the truth needs no digest).
                let shift = noise.random_range(500..=window / 2) * 2 + i64::from(rekey);
                copy.time_ms += if noise.random::<bool>() {
                    shift
                } else {
                    -shift
                };
                if rekey {
                    match (&mut copy.user_id, &mut copy.device_id) {
                        (Some(u), _) => *u = format!("{u}-moved"),
                        (None, Some(d)) => *d = format!("{d}-moved"),
                        _ => {}
                    }
                }
                let payload: Arc<[u8]> = wire::encode(&copy, &mut noise, self.tz).into();
                let key = copy.user_id.clone().or_else(|| copy.device_id.clone());
                self.push(Delivery {
                    kind: copy.kind,
                    key,
                    payload,
                    deliver_at_ms: at.max(copy.time_ms)
                        + noise.random_range(0..=DUPLICATE_WITHIN_MS),
                    label: Label::Copy(Box::new(truth_event(&copy))),
                });
            }
            if noise.random::<f64>() < r.poison_share {
                let category = self.poison_kinds
                    [pick_weighted(&mut noise, self.poison_kinds.iter().map(|p| p.1))]
                .0;
                let kinds = poison::topics_for(category);
                let kind = kinds[noise.random_range(0..kinds.len())];
                let id = format!("bad-{}-{i}-{n}", self.tag);
                if let Some(bytes) = poison::malformed(
                    category,
                    kind,
                    &id,
                    ev.time_ms,
                    r.max_message_bytes,
                    &mut noise,
                    self.tz,
                ) {
                    self.push(Delivery {
                        kind,
                        key: None,
                        payload: bytes.into(),
                        deliver_at_ms: ev.time_ms + noise.random_range(0..1000),
                        label: Label::Poison(category),
                    });
                }
            }
        }
        let mean_gap_ms = 1000.0 / self.cfg.traffic.rate;
        let u: f64 = self.arrivals.random();
        self.next_arrival_ms += (-(1.0 - u).ln() * mean_gap_ms).round() as i64;
        self.next_lead += 1;
    }

    /// Generates leads until the earliest queued delivery can no longer be preceded by a future
    /// lead's message (every future message is delivered at or after its lead's arrival).
    fn fill(&mut self) {
        while self.more_leads() {
            match self.heap.peek() {
                Some(Reverse(q)) if q.at <= self.next_arrival_ms => return,
                _ => self.generate_lead(),
            }
        }
    }

    /// Delivery time of the next message, or `None` when a fixed-count run is complete.
    pub fn peek_time(&mut self) -> Option<i64> {
        self.fill();
        self.heap.peek().map(|Reverse(q)| q.at)
    }
}

impl Iterator for Schedule {
    type Item = Delivery;

    fn next(&mut self) -> Option<Delivery> {
        self.fill();
        self.heap.pop().map(|Reverse(q)| q.delivery)
    }
}
