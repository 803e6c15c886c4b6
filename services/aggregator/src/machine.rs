//! The stage machine: one lead's path through one funnel, replayed from the lead's events in
//! event-time order. Pure and cheap (a lead has a handful of events), so the aggregator simply
//! replays a lead whenever any of its events arrives: a late event lands in its place and the
//! path comes out exactly as a batch pass over the sorted events would give it.

use crate::funnel::{Action, Funnel, Target, MAX_RULES};

/// How a transition changed the lead's stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// First stage of the lead in this funnel (may be past the first stage), or a special stage.
    Enter,
    /// To the next main stage.
    Advance,
    /// Forward past one or more main stages (listed as skipped).
    Skip,
    /// Back to an earlier main stage, with a reason.
    Backflow,
    /// Into the terminal `lost` outcome, with a reason.
    Lost,
    /// Out of `lost`, into the stage of the event that brought the lead back.
    Reactivated,
}

impl Kind {
    /// Every kind, in declaration order.
    pub const ALL: [Kind; 6] = [
        Kind::Enter,
        Kind::Advance,
        Kind::Skip,
        Kind::Backflow,
        Kind::Lost,
        Kind::Reactivated,
    ];

    /// The name stored in ClickHouse and shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enter => "enter",
            Self::Advance => "advance",
            Self::Skip => "skip",
            Self::Backflow => "backflow",
            Self::Lost => "lost",
            Self::Reactivated => "reactivated",
        }
    }
}

/// Where a transition's reason comes from (kept symbolic so replays allocate nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The text of the rule with this index (backflow reason, default loss reason).
    Rule(u8),
    /// The event's own `reason` (a symbol of the engine's table).
    Event(u16),
}

/// What the machine needs of one event.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// Event time, epoch ms.
    pub time_ms: i64,
    /// The shared rule match mask.
    pub rules: u64,
    /// The event's reason symbol, 0 when absent.
    pub reason: u16,
}

/// One stage change.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Transition {
    /// Kind.
    pub kind: Kind,
    /// Stage left (`None` when entering the funnel).
    pub from: Option<Target>,
    /// Stage entered (`None` for `lost`).
    pub to: Option<Target>,
    /// Reason for backflow and lost.
    pub reason: Option<Reason>,
    /// Index of the causing event in the replayed slice.
    pub event: u32,
    /// Event time, epoch ms.
    pub time_ms: i64,
    /// Time spent in the stage left, ms (`None` for the first transition).
    pub dwell_ms: Option<i64>,
    /// Main stages passed over by a skip (empty for other kinds).
    pub skipped: std::ops::Range<u8>,
}

/// A lead's path through one funnel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Path {
    /// Every stage change in event-time order; empty when the lead never entered the funnel.
    pub transitions: Vec<Transition>,
    /// Current main stage (a lost lead keeps the stage it was lost from).
    pub current: Option<u8>,
    /// Special stage the lead currently sits in.
    pub special: Option<u8>,
    /// Furthest main stage reached.
    pub furthest: Option<u8>,
    /// Currently lost.
    pub lost: bool,
    /// Time the lead first reached each main stage up to `furthest` (a skip reaches the stages
    /// it passes over at the skip's time: the CRM convention of SPEC §3).
    pub reached_at: Vec<i64>,
    /// Special stages ever entered, one bit each.
    pub specials_entered: u32,
}

impl Path {
    /// Whether the lead entered the funnel at all.
    pub fn entered(&self) -> bool {
        !self.transitions.is_empty()
    }

    fn shown(&self) -> Option<Target> {
        self.special
            .map(Target::Special)
            .or(self.current.map(Target::Main))
    }

    fn push(&mut self, kind: Kind, to: Option<Target>, reason: Option<Reason>, event: u32, t: i64) {
        let dwell_ms = self.transitions.last().map(|p| t - p.time_ms);
        self.transitions.push(Transition {
            kind,
            from: self.shown(),
            to,
            reason,
            event,
            time_ms: t,
            dwell_ms,
            skipped: 0..0,
        });
    }

    fn reach(&mut self, to: u8, t: i64) {
        while self.reached_at.len() <= to as usize {
            self.reached_at.push(t);
        }
        self.furthest = self.furthest.max(Some(to));
    }

    fn forward(&mut self, to: u8, event: u32, t: i64) {
        if self.lost {
            self.lost = false;
            self.push(Kind::Reactivated, Some(Target::Main(to)), None, event, t);
        } else {
            let kind = match self.current {
                None => Kind::Enter,
                Some(c) if to <= c => return,
                Some(c) if to == c + 1 => Kind::Advance,
                Some(_) => Kind::Skip,
            };
            self.push(kind, Some(Target::Main(to)), None, event, t);
            if let (Kind::Skip, Some(c), Some(last)) =
                (kind, self.current, self.transitions.last_mut())
            {
                last.skipped = c + 1..to;
            }
        }
        self.current = Some(to);
        self.special = None;
        self.reach(to, t);
    }

    fn enter_special(&mut self, s: u8, event: u32, t: i64) {
        if self.lost || self.special == Some(s) {
            return;
        }
        self.push(Kind::Enter, Some(Target::Special(s)), None, event, t);
        self.special = Some(s);
        self.specials_entered |= 1 << s;
    }

    fn backflow(&mut self, to: u8, from: &[u8], reason: Reason, event: u32, t: i64) {
        match self.current {
            Some(c) if !self.lost && from.contains(&c) => {
                self.push(
                    Kind::Backflow,
                    Some(Target::Main(to)),
                    Some(reason),
                    event,
                    t,
                );
                self.current = Some(to);
                self.special = None;
            }
            _ => {}
        }
    }

    fn lose(&mut self, reason: Reason, event: u32, t: i64) {
        if !self.lost {
            self.push(Kind::Lost, None, Some(reason), event, t);
            self.lost = true;
            self.special = None;
        }
    }
}

/// Replays `steps` (sorted by event time, distinct) through `funnel`.
///
/// Per event, every rule whose matcher matched counts the occurrence; the first of them whose
/// `occurrence` admits the event is the one that acts (its action may find nothing to do, e.g.
/// a backflow from a stage the lead is not in).
pub fn replay(funnel: &Funnel, steps: impl IntoIterator<Item = Step>) -> Path {
    let mut path = Path::default();
    replay_into(funnel, steps, &mut path);
    path
}

/// [`replay`] into `path`, reusing its allocations (the engine replays every changed lead twice
/// per flush).
pub fn replay_into(funnel: &Funnel, steps: impl IntoIterator<Item = Step>, path: &mut Path) {
    path.transitions.clear();
    path.reached_at.clear();
    path.current = None;
    path.special = None;
    path.furthest = None;
    path.lost = false;
    path.specials_entered = 0;
    let mut seen = [0u32; MAX_RULES];
    for (i, s) in steps.into_iter().enumerate() {
        apply::<false>(funnel, &mut seen, i as u32, s, path);
    }
}

/// Sets `needed[i]` for every event of `steps` (sorted, distinct) that a replay of this funnel
/// cannot do without: one that changes the path, or one counted by a rule whose count can
/// still change what a later match does (its `occurrence`). Every other event is a no-op here
/// and stays one whatever follows it, so dropping it leaves the path of every continuation
/// as it is (the engine's settled events, `engine/fold.rs`).
pub fn mark_needed(funnel: &Funnel, steps: impl IntoIterator<Item = Step>, needed: &mut [bool]) {
    let mut path = Path::default();
    let mut seen = [0u32; MAX_RULES];
    for (i, s) in steps.into_iter().enumerate() {
        let before = path.transitions.len();
        let saturated = apply::<true>(funnel, &mut seen, i as u32, s, &mut path);
        if !saturated || path.transitions.len() != before {
            needed[i] = true;
        }
    }
}

/// One event through the machine: every rule whose matcher matched counts the occurrence; the
/// first of them whose `occurrence` admits the event is the one that acts (its action may find
/// nothing to do, e.g. a backflow from a stage the lead is not in). With `SATURATION`, returns
/// whether every rule it matched had reached its [`crate::funnel::Occurrence::saturation`]
/// count (always `true` without).
#[inline(always)]
fn apply<const SATURATION: bool>(
    funnel: &Funnel,
    seen: &mut [u32; MAX_RULES],
    event: u32,
    s: Step,
    path: &mut Path,
) -> bool {
    let mut bits = funnel.rule_bits(s.rules);
    let mut chosen = None;
    let mut saturated = true;
    while bits != 0 {
        let r = bits.trailing_zeros() as usize;
        bits &= bits - 1;
        seen[r] += 1;
        let occurrence = funnel.rules[r].occurrence;
        if SATURATION && seen[r] < occurrence.saturation() {
            saturated = false;
        }
        if chosen.is_none() && occurrence.admits(seen[r]) {
            chosen = Some(r);
        }
    }
    let Some(r) = chosen else { return saturated };
    let t = s.time_ms;
    match &funnel.rules[r].action {
        Action::Enter(Target::Main(to)) => path.forward(*to, event, t),
        Action::Enter(Target::Special(sp)) => path.enter_special(*sp, event, t),
        Action::Backflow { to, from, .. } => {
            path.backflow(*to, from, Reason::Rule(r as u8), event, t)
        }
        Action::Lose { .. } => {
            let reason = if s.reason != 0 {
                Reason::Event(s.reason)
            } else {
                Reason::Rule(r as u8)
            };
            path.lose(reason, event, t)
        }
    }
    saturated
}

/// The text of a rule-sourced reason.
pub fn rule_reason(funnel: &Funnel, rule: u8) -> &str {
    match &funnel.rules[rule as usize].action {
        Action::Backflow { reason, .. } => reason,
        Action::Lose { default_reason } => default_reason,
        Action::Enter(_) => "",
    }
}
