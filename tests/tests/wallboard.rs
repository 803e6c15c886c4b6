//! The aggregator's `/wallboard` page in headless Chromium against the running stack: the tiles
//! show what the generator's truth predicts, and update without a reload when new events arrive.
//! Screenshots go to `tests/output/wallboard*.png`.
#![allow(missing_docs)]

use leadstream_generator::truth::Truth;
use leadstream_tests::aggregator::{generate, pipeline_until};
use leadstream_tests::browser::Browser;
use leadstream_tests::*;
use std::time::Duration;

/// What the tiles should show for the `b2c` funnel over everything generated so far.
fn expected(truths: &[&Truth]) -> Vec<(&'static str, f64)> {
    let sum = |f: &dyn Fn(&Truth) -> f64| truths.iter().map(|t| f(t)).sum::<f64>();
    let ty =
        |t: &Truth, k: &str| t.messages.valid_by_event_type.get(k).copied().unwrap_or(0) as f64;
    let leads = sum(&|t| t.funnels["b2c"].totals.leads as f64);
    let last = |t: &Truth| *t.funnels["b2c"].totals.reached.last().expect("stages") as f64;
    vec![
        ("new_leads", leads),
        ("signups", sum(&|t| ty(t, "signup"))),
        ("trials", sum(&|t| ty(t, "trial_started"))),
        ("purchases", sum(&|t| ty(t, "order"))),
        ("contracts", sum(&|t| ty(t, "contract_signed"))),
        (
            "revenue",
            sum(&|t| t.revenue["CNY"].to_string().parse::<f64>().expect("amount")),
        ),
        ("conversion", sum(&last) / leads),
    ]
}

async fn shown(b: &Browser) -> Vec<(&'static str, f64)> {
    let mut out = Vec::new();
    for id in [
        "new_leads",
        "signups",
        "trials",
        "purchases",
        "contracts",
        "revenue",
        "conversion",
    ] {
        let v = b
            .data_value(&format!("#tile-{id} .value"))
            .await
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN);
        out.push((id, v));
    }
    out
}

fn same(a: &[(&str, f64)], b: &[(&str, f64)]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((x, u), (y, v))| x == y && (u - v).abs() <= 0.01 + 1e-9 * v.abs())
}

async fn wait_for(b: &Browser, want: &[(&'static str, f64)]) -> Vec<(&'static str, f64)> {
    eventually(
        Duration::from_secs(90),
        || async { Some(shown(b).await) },
        |got| same(got, want),
    )
    .await
    .expect("tiles")
}

async fn screenshot(b: &Browser, name: &str) {
    let png = b.client.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(output_dir().join(name), png).expect("write screenshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallboard_tiles_show_the_truth_and_follow_new_events() {
    let w = World::new("wallboard", 2).await;
    let first = generate(&w, "wallboard_1", 6060, 800, (0.0, 0.02, 0.02)).await;
    let p = pipeline_until(&w, "wallboard", &first).await;
    let addr = p.addr.clone();

    let lo = query_json(
        &clickhouse_url(),
        &w.database,
        "SELECT toInt64(toUnixTimestamp64Milli(min(event_time))) AS lo FROM lead_events",
    )
    .await
    .expect("span")[0]["lo"]
        .as_i64()
        .expect("lo");
    let from = lo - 86_400_000;
    let b = Browser::start().await;
    b.client
        .goto(&format!(
            "http://{addr}/wallboard?from={from}&lang=en&refresh=1"
        ))
        .await
        .expect("open the wallboard");
    let want = expected(&[&first]);
    assert_eq!(wait_for(&b, &want).await, want, "tiles after the first run");
    assert_eq!(
        b.text("#tile-new_leads .label").await.as_deref(),
        Some("New leads")
    );
    let stages = b
        .client
        .find_all(fantoccini::Locator::Css("#stages .bar"))
        .await
        .expect("stage bars");
    assert_eq!(stages.len(), first.funnels["b2c"].stages.len());
    screenshot(&b, "wallboard.png").await;

    // New events while the page stays open: the tiles follow without a reload.
    let updated_at = b
        .client
        .execute("return document.body.dataset.updated", vec![])
        .await
        .expect("js");
    let second = generate(&w, "wallboard_2", 6061, 400, (0.0, 0.02, 0.02)).await;
    let want = expected(&[&first, &second]);
    assert_eq!(
        wait_for(&b, &want).await,
        want,
        "tiles after the second run"
    );
    let later = b
        .client
        .execute("return document.body.dataset.updated", vec![])
        .await
        .expect("js");
    assert_ne!(updated_at, later, "the page polled again");
    screenshot(&b, "wallboard-updated.png").await;
    stop_collector(p.collector).await;

    // Chinese labels on request.
    b.client
        .goto(&format!(
            "http://{addr}/wallboard?from={from}&lang=zh&refresh=1"
        ))
        .await
        .expect("open the wallboard in Chinese");
    assert_eq!(wait_for(&b, &want).await, want);
    assert_eq!(
        b.text("#tile-new_leads .label").await.as_deref(),
        Some("新线索")
    );
    screenshot(&b, "wallboard-zh.png").await;
    let _ = b.client.close().await;
}
