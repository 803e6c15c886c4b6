//! ClickHouse rows from a lead's replay and from changed rollup buckets.

use super::compact::CompactEvent;
use super::{Engine, Output};
use crate::funnel::{Funnel, Target};
use crate::machine::{rule_reason, Kind, Path, Reason};
use crate::rollup::{
    minute_seconds, reason_of, stage_of, Attribution, Changed, CohortRollupRow, ReachRollupRow,
    TransitionRollupRow,
};
use crate::rows::{LeadFunnelRow, TransitionRow};
use smol_str::SmolStr;

impl Engine {
    /// Rows for the rollup buckets that changed since the last flush.
    pub(super) fn rollup_rows(&mut self, out: &mut Output, version: u64) {
        let (known, unknown) = self.rollups.take_changed();
        self.render_rollups(known, out, version);
        out.unresolved = self.unresolved_rows(unknown, version);
    }

    /// Rows for every rollup bucket held, with `version` (nothing is marked written).
    pub fn all_rollup_rows(&self, version: u64) -> Output {
        let mut out = Output::default();
        self.render_rollups(self.rollups.all(), &mut out, version);
        out
    }

    pub(super) fn render_rollups(&self, changed: Changed, out: &mut Output, version: u64) {
        let sym = &self.symbols;
        let funnels = &self.funnels.funnels;
        let attr = |(f, l, v): Attribution| {
            (
                SmolStr::new(sym.or_none(f)),
                SmolStr::new(sym.or_none(l)),
                SmolStr::new(sym.or_none(v)),
            )
        };
        let stage = |funnel: &Funnel, code: u8| {
            stage_of(code).map_or_else(SmolStr::default, |t| SmolStr::new(funnel.stage_name(t)))
        };
        out.cohort_rollup.reserve(changed.cohort.len());
        out.reach_rollup.reserve(changed.reach.len());
        out.transition_rollup.reserve(changed.transitions.len());
        for (k, n) in changed.cohort {
            let f = &funnels[k.scope.funnel as usize];
            let (first_touch, last_touch, variant) = attr(k.scope.attribution);
            out.cohort_rollup.push(CohortRollupRow {
                funnel: SmolStr::new(&f.name),
                minute: minute_seconds(k.minute),
                partition: k.scope.partition,
                first_touch,
                last_touch,
                variant,
                furthest_index: k.furthest,
                current_index: k.current_index,
                current_stage: stage(f, k.current),
                lost: k.lost as u8,
                leads: n,
                version,
                is_deleted: u8::from(n == 0),
            });
        }
        for (k, n) in changed.reach {
            let f = &funnels[k.scope.funnel as usize];
            let (first_touch, last_touch, variant) = attr(k.scope.attribution);
            out.reach_rollup.push(ReachRollupRow {
                funnel: SmolStr::new(&f.name),
                minute: minute_seconds(k.minute),
                partition: k.scope.partition,
                first_touch,
                last_touch,
                variant,
                stage_index: k.stage,
                stage: stage(f, k.stage + 1),
                leads: n,
                version,
                is_deleted: u8::from(n == 0),
            });
        }
        for (k, n) in changed.transitions {
            let f = &funnels[k.scope.funnel as usize];
            let (first_touch, last_touch, variant) = attr(k.scope.attribution);
            let kind = Kind::ALL[k.kind as usize];
            out.transition_rollup.push(TransitionRollupRow {
                funnel: SmolStr::new(&f.name),
                minute: minute_seconds(k.minute),
                partition: k.scope.partition,
                first_touch,
                last_touch,
                variant,
                kind: SmolStr::new_static(kind.as_str()),
                from_stage: stage(f, k.from),
                to_stage: if kind == Kind::Lost {
                    SmolStr::new_static("lost")
                } else {
                    stage(f, k.to)
                },
                reason: match reason_of(k.reason) {
                    Some(Reason::Rule(i)) => SmolStr::new(rule_reason(f, i)),
                    Some(Reason::Event(s)) => SmolStr::new(sym.name(s)),
                    None => SmolStr::default(),
                },
                transitions: n,
                version,
                is_deleted: u8::from(n == 0),
            });
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn emit(
        &self,
        out: &mut Output,
        funnel: &Funnel,
        key: &str,
        events: &[CompactEvent],
        path: &Path,
        (first, last, variant): (u16, u16, u16),
        old_transitions: u16,
        version: u64,
    ) {
        let sym = &self.symbols;
        let (first, last, variant) = (
            SmolStr::new(sym.or_none(first)),
            SmolStr::new(sym.or_none(last)),
            SmolStr::new(sym.or_none(variant)),
        );
        let stage = |t: Option<Target>| t.map(|t| SmolStr::new(funnel.stage_name(t)));
        let reason = |r: Option<Reason>| match r {
            Some(Reason::Rule(i)) => SmolStr::new(rule_reason(funnel, i)),
            Some(Reason::Event(s)) => SmolStr::new(sym.name(s)),
            None => SmolStr::default(),
        };
        // Cloned per row: a key longer than 23 bytes (a device lead's) is one shared allocation.
        let (lead, name) = (SmolStr::new(key), SmolStr::new(&funnel.name));
        let n = path.transitions.len().min(u16::MAX as usize);
        for (seq, t) in path.transitions.iter().take(n).enumerate() {
            let e = &events[t.event as usize];
            out.by_kind[t.kind as usize] += 1;
            out.transitions.push(TransitionRow {
                funnel: name.clone(),
                lead_id: lead.clone(),
                seq: seq as u16,
                at: t.time_ms,
                kind: t.kind.as_str(),
                from_stage: stage(t.from).unwrap_or_default(),
                to_stage: stage(t.to).unwrap_or_else(|| SmolStr::new_static("lost")),
                skipped: t
                    .skipped
                    .clone()
                    .map(|s| SmolStr::new(&funnel.stages[s as usize]))
                    .collect(),
                reason: reason(t.reason),
                dwell_ms: t.dwell_ms,
                first_touch: first.clone(),
                last_touch: last.clone(),
                variant: variant.clone(),
                event_id: e.event_id(),
                event_type: e.event_type().as_str(),
                version,
                is_deleted: 0,
            });
        }
        for seq in n..old_transitions as usize {
            out.transitions.push(TransitionRow {
                funnel: name.clone(),
                lead_id: lead.clone(),
                seq: seq as u16,
                at: 0,
                kind: "",
                from_stage: SmolStr::default(),
                to_stage: SmolStr::default(),
                skipped: Vec::new(),
                reason: SmolStr::default(),
                dwell_ms: None,
                first_touch: SmolStr::default(),
                last_touch: SmolStr::default(),
                variant: SmolStr::default(),
                event_id: String::new(),
                event_type: "",
                version,
                is_deleted: 1,
            });
        }
        let entered = path.entered();
        if !entered && old_transitions == 0 {
            return;
        }
        let lost_reason = match path.transitions.last() {
            Some(t) if path.lost && t.kind == Kind::Lost => reason(t.reason),
            _ => SmolStr::default(),
        };
        let index = |i: Option<u8>| i.map_or(-1, |i| i as i8);
        out.leads.push(LeadFunnelRow {
            funnel: name,
            lead_id: lead,
            started_at: path.transitions.first().map_or(0, |t| t.time_ms),
            current_stage: stage(
                path.special
                    .map(Target::Special)
                    .or(path.current.map(Target::Main)),
            )
            .unwrap_or_default(),
            current_index: index(path.current),
            furthest_stage: stage(path.furthest.map(Target::Main)).unwrap_or_default(),
            furthest_index: index(path.furthest),
            reached_at: path.reached_at.clone(),
            specials: (0..funnel.special_stages.len())
                .filter(|i| path.specials_entered & (1 << i) != 0)
                .map(|i| SmolStr::new(&funnel.special_stages[i]))
                .collect(),
            lost: path.lost as u8,
            lost_reason,
            first_touch: first.clone(),
            last_touch: last.clone(),
            variant: variant.clone(),
            transitions: n as u16,
            changed_at: path.transitions.last().map_or(0, |t| t.time_ms),
            version,
            is_deleted: u8::from(!entered),
        });
    }
}
