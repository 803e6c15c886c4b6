//! Hand-written events for the engine tests, and the random stories of the property tests.

use super::ReadModel;
use chrono::{TimeZone, Utc};
use leadstream_schemas::{EventType, NormalizedEvent};
use proptest::prelude::*;

/// 2025-11-02T01:00:00Z.
pub const T0: i64 = 1_762_045_200_000; // 2025-11-02T01:00:00Z

/// An event `secs` after T0. `who` is a user id, or `@dev` for an anonymous touch on device `dev`.
pub fn ev(secs: i64, ty: &str, who: &str) -> NormalizedEvent {
    let event_type = EventType::parse(ty).expect(ty);
    let (lead_id, device_id) = match who.strip_prefix('@') {
        Some(d) => (None, Some(d.to_string())),
        None => (Some(who.to_string()), None),
    };
    let id = format!(
        "{:032x}",
        (secs as u128) << 64 | u128::from(fxhash(ty, who))
    );
    NormalizedEvent {
        event_id: id.clone(),
        event_type,
        source_topic: "test".into(),
        source_partition: 0,
        source_offset: 0,
        native_id: id,
        lead_id,
        device_id,
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
        event_time: Utc.timestamp_millis_opt(T0 + secs * 1000).unwrap(),
        received_at: Utc::now(),
        extra: Default::default(),
    }
}

pub fn fxhash(a: &str, b: &str) -> u32 {
    a.bytes()
        .chain([0])
        .chain(b.bytes())
        .fold(2166136261u32, |h, c| {
            (h ^ u32::from(c)).wrapping_mul(16777619)
        })
}

pub fn with(mut e: NormalizedEvent, f: impl FnOnce(&mut NormalizedEvent)) -> NormalizedEvent {
    f(&mut e);
    e
}
pub fn call(secs: i64, lead: &str, outcome: &str) -> NormalizedEvent {
    with(ev(secs, "call", lead), |e| {
        e.call_outcome = Some(outcome.into())
    })
}
pub fn signup_on(secs: i64, lead: &str, device: &str) -> NormalizedEvent {
    with(ev(secs, "signup", lead), |e| {
        e.device_id = Some(device.into())
    })
}
pub fn touch(secs: i64, ty: &str, device: &str, channel: &str) -> NormalizedEvent {
    with(ev(secs, ty, &format!("@{device}")), |e| {
        e.channel = Some(channel.into())
    })
}

/// Up to 40 random events of users u0..u3 and devices d0..d2 within 500 s.
pub fn story() -> impl Strategy<Value = Vec<NormalizedEvent>> {
    let kinds = [
        "exposure",
        "click",
        "signup",
        "trial_started",
        "trial_activated",
        "trial_expired",
        "call",
        "contract_signed",
        "contract_lost",
        "contract_cancelled",
        "order",
    ];
    let one = (0..kinds.len(), 0i64..500, 0usize..4, 0usize..3, 0usize..5).prop_map(
        move |(k, secs, user, device, outcome)| {
            let ty = kinds[k];
            let dev = format!("d{device}");
            let user = format!("u{user}");
            // One event id means one event: the id covers every chosen field, as the collector's
            // ids cover the native id (copies of an id are byte-identical deliveries).
            let id = format!(
                "{:032x}",
                (secs as u128) << 64 | u128::from(fxhash(&format!("{ty}{device}{outcome}"), &user))
            );
            let e = match ty {
                "exposure" | "click" => {
                    touch(secs, ty, &dev, ["douyin", "baidu", "wechat"][device])
                }
                "signup" => with(signup_on(secs, &user, &dev), |e| {
                    e.variant = Some(["A", "B", "A", "B", "A"][outcome].into())
                }),
                // The contract requires a reason on disqualified calls and lost contracts.
                "call" => with(
                    call(
                        secs,
                        &user,
                        [
                            "connected",
                            "callback",
                            "qualified",
                            "disqualified",
                            "no_answer",
                        ][outcome],
                    ),
                    |e| {
                        if e.call_outcome.as_deref() == Some("disqualified") {
                            e.reason = Some("no_budget".into())
                        }
                    },
                ),
                "contract_lost" => with(ev(secs, ty, &user), |e| {
                    e.reason =
                        Some(["price", "competitor", "timing", "price", "other"][outcome].into())
                }),
                _ => ev(secs, ty, &user),
            };
            with(e, |e| {
                e.event_id = id.clone();
                e.native_id = id;
            })
        },
    );
    proptest::collection::vec(one, 1..40)
}

/// Final rows, sorted, as comparable strings.
pub fn snapshot(model: &ReadModel) -> Vec<String> {
    let mut v = Vec::new();
    for f in ["b2c", "sales"] {
        for l in model.leads(f) {
            v.push(format!(
                "{f} {} cur={} far={} lost={} {} {} {} {:?}",
                l.lead_id,
                l.current_stage,
                l.furthest_stage,
                l.lost,
                l.first_touch,
                l.last_touch,
                l.variant,
                l.reached_at
            ));
        }
        for t in model.transitions(f) {
            v.push(format!(
                "{f} {} {} {} {}>{} {:?} {} {:?} {}",
                t.lead_id,
                t.seq,
                t.kind,
                t.from_stage,
                t.to_stage,
                t.skipped,
                t.reason,
                t.dwell_ms,
                t.event_id
            ));
        }
    }
    v
}
