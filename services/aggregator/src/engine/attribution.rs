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
