//! A hand-written story of twelve leads through the real broker, collector, aggregator and
//! ClickHouse; the API's answers are written out below, worked out by hand from the story.
#![allow(missing_docs)]

use leadstream_schemas::SourceKind;
use leadstream_tests::*;
use serde_json::{json, Value};
use std::time::Duration;

const T: i64 = 1_793_581_200; // 2026-11-02T01:00:00Z

fn story() -> Vec<(SourceKind, String)> {
    use SourceKind::*;
    let exposure = |id: &str, dev: &str, platform: &str, t: i64| {
        (
            Exposure,
            format!(
                r#"{{"impression_id":"{id}","ts":{},"platform":"{platform}","campaign_id":"c1","device_id":"{dev}"}}"#,
                T + t
            ),
        )
    };
    let click = |id: &str, dev: &str, platform: &str, query: &str, t: i64| {
        (
            AdClick,
            format!(
                r#"{{"click_id":"{id}","clicked_at":{},"platform":"{platform}","device_id":"{dev}","landing_url":"https://shop.example.com/lp{query}"}}"#,
                T + t
            ),
        )
    };
    let signup = |user: &str, extra: &str, t: i64| {
        (
            Signup,
            format!(
                r#"{{"signup_id":"su-{user}","created_at":{},"user_id":"{user}"{extra}}}"#,
                T + t
            ),
        )
    };
    let trial = |user: &str, ev: &str, t: i64| {
        (
            Trial,
            format!(
                r#"{{"trial_id":"tr-{user}","event":"{ev}","user_id":"{user}","at":{}}}"#,
                T + t
            ),
        )
    };
    let order = |id: &str, user: &str, t: i64| {
        (
            Order,
            format!(
                r#"{{"order_id":"{id}","user_id":"{user}","paid_at":{},"amount_cents":19900,"currency":"CNY"}}"#,
                T + t
            ),
        )
    };
    let call = |id: &str, lead: &str, outcome: &str, reason: &str, t: i64| {
        let reason = if reason.is_empty() {
            String::new()
        } else {
            format!(r#","disqualify_reason":"{reason}""#)
        };
        (
            Call,
            format!(
                r#"{{"call_id":"{id}","lead_id":"{lead}","started_at":{},"direction":"outbound","duration_sec":60,"outcome":"{outcome}"{reason}}}"#,
                T + t
            ),
        )
    };
    let contract = |lead: &str, status: &str, reason: &str, t: i64| {
        let reason = if reason.is_empty() {
            String::new()
        } else {
            format!(r#","lost_reason":"{reason}""#)
        };
        (
            Contract,
            format!(
                r#"{{"contract_id":"ct-{lead}","lead_id":"{lead}","status":"{status}","amount":"12800","currency":"CNY","updated_at":{}{reason}}}"#,
                T + t
            ),
        )
    };
    vec![
        // u1: douyin ad, click in variant B, signup, trial, purchase.
        exposure("imp-1", "d1", "douyin", 0),
        click("clk-1", "d1", "douyin", "?ab=B", 60),
        signup("u1", r#","device_id":"d1""#, 120),
        trial("u1", "trial_started", 300),
        order("o-1", "u1", 600),
        // u2: baidu click, signup in variant A.
        click("clk-2", "d2", "baidu", "", 10),
        signup(
            "u2",
            r#","device_id":"d2","experiment":{"id":"lp","variant":"A"}"#,
            100,
        ),
        // u3: the signup is sent before the (earlier) wechat exposure of its device.
        signup("u3", r#","device_id":"d3""#, 200),
        exposure("imp-3", "d3", "wechat", 50),
        // u4: organic; a trial that expires flows back to signup.
        signup("u4", "", 0),
        trial("u4", "trial_started", 100),
        trial("u4", "trial_expired", 200),
        // u5: organic; buys without a trial (skip), then again (repurchase).
        signup("u5", "", 0),
        order("o-5a", "u5", 100),
        order("o-5b", "u5", 200),
        // u6: referral; connected, qualified, signed: won.
        signup(
            "u6",
            r#","utm":{"source":"partner","medium":"referral"}"#,
            0,
        ),
        call("call-6a", "u6", "connected", "", 100),
        call("call-6b", "u6", "qualified", "", 200),
        contract("u6", "signed", "", 300),
        // u7: disqualified.
        signup("u7", "", 0),
        call("call-7", "u7", "disqualified", "no_budget", 100),
        // u8: signed straight away (skip), then cancelled: back to qualified.
        signup("u8", "", 0),
        contract("u8", "signed", "", 100),
        contract("u8", "cancelled", "", 200),
        // u9: disqualified, then a connected call reactivates.
        signup("u9", "", 0),
        call("call-9a", "u9", "disqualified", "price", 100),
        call("call-9b", "u9", "connected", "", 200),
        // d10: an anonymous exposure nobody claims: a lead of its own.
        exposure("imp-10", "d10", "douyin", 0),
        // u11: its signup is delivered twice.
        signup("u11", "", 0),
        signup("u11", "", 0),
        // u12: lost to a competitor.
        signup("u12", "", 0),
        contract("u12", "lost", "competitor", 100),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dozen_leads_give_the_answers_worked_out_by_hand() {
    let w = World::new("story", 3).await;
    let p = producer();
    for (kind, msg) in story() {
        produce(&p, &w.topic(kind), None, msg.as_bytes()).await;
    }
    let collector = spawn_collector(w.collector_config());
    let addr = free_addr();
    let mut cfg = w.aggregator_config(&addr);
    cfg.api.min_sample = 5;
    let token = tokio_util::sync::CancellationToken::new();
    let aggregator = {
        let t = token.clone();
        tokio::spawn(async move { leadstream_aggregator::run(cfg, t).await })
    };
    let get = |path: &'static str| {
        let addr = addr.clone();
        async move { http_get_json(&addr, path).await }
    };
    // Everything has arrived once both funnels count all their leads.
    let ready = eventually(
        Duration::from_secs(90),
        || async {
            let b = get("/api/v1/funnels/b2c/cohort").await?;
            let s = get("/api/v1/funnels/sales/cohort").await?;
            Some((b["total"]["leads"].as_u64()?, s["total"]["leads"].as_u64()?))
        },
        |n| *n == (12, 11),
    )
    .await;
    assert_eq!(ready, Some((12, 11)));

    let b2c = get("/api/v1/funnels/b2c/cohort").await.expect("cohort");
    assert_eq!(b2c["total"]["reached"], json!([12, 11, 11, 3, 2, 1]));
    assert_eq!(b2c["total"]["lost"], json!(0));
    let occ = get("/api/v1/funnels/b2c/occupancy")
        .await
        .expect("occupancy");
    assert_eq!(occ["total"]["occupancy"], json!([1, 0, 9, 0, 1, 1]));
    let losses = get("/api/v1/funnels/b2c/losses").await.expect("losses");
    assert_eq!(losses["total"]["losses"], json!({}));
    assert_eq!(
        losses["total"]["backflows"],
        json!({"trial": {"trial_expired": 1}})
    );
    // 1 backflow out of trial / 3 leads that reached it.
    let rate = losses["total"]["backflow_rate"]["trial"]
        .as_f64()
        .expect("rate");
    assert!((rate - 1.0 / 3.0).abs() < 1e-9, "{rate}");
    let kinds = get("/api/v1/funnels/b2c/transitions").await.expect("kinds");
    assert_eq!(
        kinds["total"]["transitions"],
        json!({"advance": 7, "backflow": 1, "enter": 12, "skip": 2})
    );
    let mix = get("/api/v1/funnels/b2c/channels").await.expect("mix");
    let shares: Vec<(String, u64)> = mix["mix"]
        .as_array()
        .expect("mix")
        .iter()
        .map(|m| {
            (
                m["key"].as_str().unwrap().to_string(),
                m["leads"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        shares,
        [
            ("organic", 7),
            ("douyin", 2),
            ("baidu", 1),
            ("referral", 1),
            ("wechat", 1)
        ]
        .map(|(k, n)| (k.to_string(), n))
    );
    let by_first = get("/api/v1/funnels/b2c/cohort?breakdown=first_touch")
        .await
        .expect("by first");
    let douyin = by_first["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["key"] == "douyin")
        .cloned()
        .expect("douyin group");
    assert_eq!(douyin["reached"], json!([2, 1, 1, 1, 1, 0]));
    // u1: exposure → click 60 s; the cohort timing is in milliseconds.
    assert_eq!(douyin["time_between_stages"][0]["median_ms"], json!(60_000));

    let sales = get("/api/v1/funnels/sales/cohort").await.expect("sales");
    assert_eq!(sales["total"]["reached"], json!([11, 3, 2, 2]));
    assert_eq!(sales["total"]["lost"], json!(2));
    // Won: u6 after 300 s, u8 after 100 s.
    assert_eq!(sales["total"]["cycle"]["leads"], json!(2));
    let occ = get("/api/v1/funnels/sales/occupancy")
        .await
        .expect("occupancy");
    // Main stages, then the special stage urgent_opportunity.
    assert_eq!(occ["total"]["occupancy"], json!([6, 1, 1, 1, 0]));
    assert_eq!(occ["total"]["lost"], json!(2));
    let losses = get("/api/v1/funnels/sales/losses").await.expect("losses");
    assert_eq!(
        losses["total"]["losses"],
        json!({"lead": {"competitor": 1, "no_budget": 1, "price": 1}})
    );
    assert_eq!(
        losses["total"]["backflows"],
        json!({"won": {"contract_cancelled": 1}})
    );
    let kinds = get("/api/v1/funnels/sales/transitions")
        .await
        .expect("kinds");
    assert_eq!(
        kinds["total"]["transitions"],
        json!({"advance": 3, "backflow": 1, "enter": 11, "lost": 3, "reactivated": 1, "skip": 1})
    );

    // A/B by variant on signup → purchase: one lead each, below the minimum sample of 5.
    let ab =
        get("/api/v1/funnels/b2c/compare?by=variant&a=A&b=B&from_stage=signup&to_stage=purchase")
            .await
            .expect("compare");
    let c = &ab["comparison"];
    assert_eq!(
        (c["a"]["entered"].clone(), c["a"]["converted"].clone()),
        (json!(1), json!(0))
    );
    assert_eq!(
        (c["b"]["entered"].clone(), c["b"]["converted"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(c["verdict"], json!("insufficient_data"));
    // Parameters are checked and named.
    let bad = http_get_json(&addr, "/api/v1/funnels/b2c/compare?by=colour&a=A&b=B").await;
    assert!(bad.is_none(), "an unknown dimension is a 400");

    // Unreadable messages on either topic go to the dead letters, bytes intact, reason named.
    let junk: [(String, &[u8]); 2] = [
        (w.normalized_topic(), b"{not json"),
        (w.stitch_topic(), b"{\"recheck\": 7}"),
    ];
    for (topic, bytes) in &junk {
        produce(&p, topic, Some("junk"), bytes).await;
    }
    let unreadable = |ms: &[rdkafka::message::OwnedMessage]| -> Vec<(String, Vec<u8>)> {
        use rdkafka::message::Message;
        ms.iter()
            .filter(|m| header(m, "ls.error_category") == "unreadable")
            .map(|m| {
                (
                    header(m, "ls.source_topic"),
                    m.payload().unwrap_or_default().to_vec(),
                )
            })
            .collect()
    };
    let all = read_topic_until(&w.dead_letter_topic(), Duration::from_secs(60), |ms| {
        let got = unreadable(ms);
        junk.iter()
            .all(|(t, b)| got.contains(&(t.clone(), b.to_vec())))
    })
    .await;
    let letters = unreadable(&all);
    for (topic, bytes) in &junk {
        assert!(
            letters.contains(&(topic.clone(), bytes.to_vec())),
            "{topic}: {letters:?}"
        );
    }

    token.cancel();
    aggregator.await.expect("join").expect("aggregator run");
    stop_collector(collector).await;
    let _: Value = json!(null);
}
