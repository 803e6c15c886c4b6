//! First touch, last touch and variant of a lead (SPEC §2).

use super::compact::{CompactEvent, Role};

/// (first-touch channel, last-touch channel, variant) symbols of a lead's sorted events, by
/// SPEC §2: first touch = earliest exposure/click, else the signup's channel; last touch = the
/// latest exposure/click not after the (earliest) signup, else the signup's; variant = the first
/// one any event carries. Touches more than `lookback_ms` before the signup do not attribute
/// (the ad platforms' lookback window); without a signup every touch does.
pub(super) fn attribute(events: &[CompactEvent], lookback_ms: i64) -> (u16, u16, u16) {
    let signup = events.iter().find(|e| e.role() == Role::Signup);
    let signup_channel = signup.map_or(0, |s| s.channel);
    let horizon = signup.map_or(i64::MIN, |s| s.time_ms().saturating_sub(lookback_ms));
    let attributes = |e: &&CompactEvent| e.role() == Role::Touch && e.time_ms() >= horizon;
    let first = events
        .iter()
        .find(attributes)
        .map_or(signup_channel, |e| e.channel);
    let last = events
        .iter()
        .rev()
        .filter(attributes)
        .find(|e| signup.is_none_or(|s| e.time_ms() <= s.time_ms()))
        .map_or(signup_channel, |e| e.channel);
    let variant = events
        .iter()
        .map(|e| e.variant)
        .find(|v| *v != 0)
        .unwrap_or(0);
    (first, last, variant)
}

/// Sets `needed` for the events of `settled` (a lead's earliest inputs, sorted; every later
/// input is later than all of them) that [`attribute`] may still read, whatever comes later:
/// the first signup; with it, the first touch inside its lookback and the last touch up to it;
/// without it, the first touch and the last touch of every run of touches with one channel (a
/// later signup's lookback may start anywhere, and the earliest of these at or after any
/// instant has the channel of the earliest touch at or after it); and the first event with a
/// variant.
pub(super) fn mark_needed(settled: &[CompactEvent], lookback_ms: i64, needed: &mut [bool]) {
    let touch = |e: &CompactEvent| e.role() == Role::Touch;
    if let Some(v) = settled.iter().position(|e| e.variant != 0) {
        needed[v] = true;
    }
    match settled.iter().position(|e| e.role() == Role::Signup) {
        Some(s) => {
            needed[s] = true;
            let signup = settled[s].time_ms();
            let horizon = signup.saturating_sub(lookback_ms);
            let inside = |e: &CompactEvent| touch(e) && e.time_ms() >= horizon;
            if let Some(f) = settled.iter().position(inside) {
                needed[f] = true;
            }
            if let Some(l) = settled
                .iter()
                .rposition(|e| inside(e) && e.time_ms() <= signup)
            {
                needed[l] = true;
            }
        }
        None => {
            let mut touches = settled
                .iter()
                .enumerate()
                .filter(|(_, e)| touch(e))
                .peekable();
            if let Some((first, _)) = touches.peek() {
                needed[*first] = true;
            }
            while let Some((i, e)) = touches.next() {
                if touches
                    .peek()
                    .is_none_or(|(_, next)| next.channel != e.channel)
                {
                    needed[i] = true;
                }
            }
        }
    }
}
