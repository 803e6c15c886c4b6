//! The Grafana dashboards: every file is a valid dashboard wired to the provisioned datasource,
//! and every panel's SQL, expanded the way the ClickHouse plugin expands it, runs against the real
//! ClickHouse on seeded generator data, returns the columns its panel reads, and the key tiles
//! give the numbers the generator's truth predicts (the A/B panels: the API's comparison).
#![allow(missing_docs)]

use leadstream_tests::aggregator::{generate, pipeline_until, truth_by};
use leadstream_tests::grafana::{
    dashboards, expand, panels, provisioned_uid, references, variable_sql, variables, Reference,
    TimeRange, MACROS,
};
use leadstream_tests::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

#[test]
fn every_dashboard_is_valid_and_uses_the_provisioned_datasource() {
    let uid = provisioned_uid();
    let all = dashboards();
    let names: Vec<&str> = all.iter().map(|d| d.file.as_str()).collect();
    assert_eq!(
        names,
        ["channel-ab.json", "pipeline-health.json", "wallboard.json"]
    );
    let mut uids = BTreeSet::new();
    for d in &all {
        let j = &d.json;
        let f = &d.file;
        assert!(
            j["schemaVersion"].as_u64().unwrap_or(0) >= 39,
            "{f}: schemaVersion"
        );
        let duid = j["uid"].as_str().unwrap_or_default();
        assert!(
            !duid.is_empty() && uids.insert(duid.to_string()),
            "{f}: uid {duid}"
        );
        assert!(
            !j["title"].as_str().unwrap_or_default().is_empty(),
            "{f}: title"
        );
        assert!(
            j["time"]["from"].is_string() && j["refresh"].is_string(),
            "{f}: time, refresh"
        );
        let vars = variables(j);
        assert_eq!(
            vars.len(),
            j["templating"]["list"].as_array().map_or(0, Vec::len),
            "{f}: variable names are unique"
        );
        let mut used: Vec<(String, String)> = Vec::new();
        let mut check_refs = |text: &str, what: String| {
            for r in references(text).unwrap_or_else(|e| panic!("{what}: {e}")) {
                match r {
                    Reference::Macro(m, _) => {
                        assert!(MACROS.contains(&m.as_str()), "{what}: macro $__{m}")
                    }
                    Reference::Variable(v, _) => used.push((v, what.clone())),
                }
            }
        };
        for (name, v) in &vars {
            if let Some(sql) = variable_sql(v) {
                assert_eq!(v["datasource"]["uid"], uid.as_str(), "{f}: variable {name}");
                check_refs(sql, format!("{f} variable {name}"));
            }
        }
        let mut ids = BTreeSet::new();
        let ps = panels(j);
        assert!(!ps.is_empty(), "{f}: panels");
        for p in ps {
            let id = p["id"].as_u64().unwrap_or(0);
            assert!(id > 0 && ids.insert(id), "{f}: panel id {id} unique");
            assert_eq!(
                p["datasource"]["uid"],
                uid.as_str(),
                "{f} panel {id}: datasource"
            );
            assert!(
                p["gridPos"]["w"].as_u64().unwrap_or(0) > 0,
                "{f} panel {id}: gridPos"
            );
            check_refs(
                p["title"].as_str().unwrap_or_default(),
                format!("{f} panel {id} title"),
            );
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{f} panel {id}: a query");
            for t in targets {
                assert_eq!(
                    t["datasource"]["uid"],
                    uid.as_str(),
                    "{f} panel {id}: target datasource"
                );
                assert_eq!(t["editorType"], "sql", "{f} panel {id}");
                let sql = t["rawSql"].as_str().unwrap_or_default();
                assert!(!sql.is_empty(), "{f} panel {id}: rawSql");
                check_refs(sql, format!("{f} panel {id} query"));
            }
        }
        for (v, what) in used {
            assert!(
                vars.contains_key(&v),
                "{what} uses ${v}, which {f} does not define"
            );
        }
    }
    let wall = all
        .iter()
        .find(|d| d.file == "wallboard.json")
        .expect("wallboard");
    assert_eq!(
        wall.json["refresh"], "5s",
        "the wallboard refreshes every 5 s"
    );
    assert_eq!(
        wall.json["time"]["from"], "now/d",
        "the wallboard shows today"
    );
    assert!(variables(&wall.json).contains_key("lang"));
}

/// Runs `sql` and returns (column names, rows as objects).
async fn run(database: &str, sql: &str) -> Result<(Vec<String>, Vec<Value>), String> {
    let client = clickhouse::Client::default()
        .with_url(clickhouse_url())
        .with_database(database)
        .with_option("output_format_json_quote_64bit_integers", "0");
    let mut cursor = client
        .query(sql)
        .fetch_bytes("JSON")
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    while let Some(chunk) = cursor.next().await.map_err(|e| format!("{e}\n{sql}"))? {
        buf.extend_from_slice(&chunk);
    }
    let v: Value = serde_json::from_slice(&buf).map_err(|e| e.to_string())?;
    let cols = v["meta"]
        .as_array()
        .expect("meta")
        .iter()
        .map(|m| m["name"].as_str().expect("name").to_string())
        .collect();
    Ok((cols, v["data"].as_array().cloned().unwrap_or_default()))
}

fn num(v: &Value) -> f64 {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("number expected: {v}"))
}

/// name → value of a tile query (`name`, `value` rows).
fn tiles(rows: &[Value]) -> BTreeMap<String, f64> {
    rows.iter()
        .map(|r| {
            (
                r["name"].as_str().expect("name").to_string(),
                num(&r["value"]),
            )
        })
        .collect()
}

/// The columns each panel's query must return (what its visualisation reads).
fn expected_columns(dashboard: &str, panel: u64) -> Vec<&'static str> {
    match (dashboard, panel) {
        ("leadstream-wallboard", 1..=4) => vec!["name", "value"],
        ("leadstream-wallboard", 5) => vec!["stage", "leads"],
        ("leadstream-wallboard", 6) => vec!["channel", "conversion"],
        ("leadstream-wallboard", 7) => vec!["time", "channel", "events_per_minute"],
        ("leadstream-wallboard", 8) => vec!["reason", "lost"],
        ("leadstream-ab", 1) => vec![
            "arm",
            "value",
            "entered",
            "converted",
            "rate",
            "ci_low",
            "ci_high",
        ],
        ("leadstream-ab", 2) => vec!["absolute_lift", "relative_lift", "p_value", "verdict"],
        ("leadstream-ab", 3) => vec!["time", "arm", "conversion"],
        ("leadstream-pipeline", 1..=3) => vec!["name", "value"],
        ("leadstream-pipeline", 4) => vec!["time", "topic", "per_second"],
        ("leadstream-pipeline", 5) => vec!["time", "category", "rejections"],
        ("leadstream-pipeline", 6) => vec!["time", "consumer", "lag"],
        ("leadstream-pipeline", 7) => vec!["time", "p50_ms", "p99_ms"],
        _ => panic!("no expectation for {dashboard} panel {panel}: add one"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panel_queries_run_and_key_tiles_equal_the_truth() {
    let w = World::new("dashboards", 2).await;
    let truth = generate(&w, "dashboards", 5150, 3000, (0.05, 0.03, 0.02)).await;
    let p = pipeline_until(&w, "dashboards", &truth).await;
    let addr = p.addr.clone();
    stop_collector(p.collector).await;

    let url = clickhouse_url();
    let db = &w.database;
    let span = query_json(
        &url,
        db,
        "SELECT toInt64(toUnixTimestamp64Milli(min(event_time))) AS lo FROM lead_events",
    )
    .await
    .expect("span");
    let lo = span[0]["lo"].as_i64().expect("lo");
    let range = TimeRange {
        from_ms: lo - 3_600_000,
        to_ms: chrono::Utc::now().timestamp_millis() + 3_600_000,
        interval_s: 60,
    };

    // Two channels for the A/B dashboard: the two largest first-touch groups.
    let b2c = &truth.funnels["b2c"];
    let mut channels: Vec<(String, u64)> = truth_by(b2c, "first_touch")
        .into_iter()
        .map(|(k, c)| (k, c.leads))
        .collect();
    channels.sort_by_key(|c| std::cmp::Reverse(c.1));
    let (a, b) = (channels[0].0.clone(), channels[1].0.clone());
    let base: BTreeMap<String, String> = [
        ("funnel", "b2c"),
        ("breakdown", "first_touch"),
        ("dim", "first_touch"),
        ("a", a.as_str()),
        ("b", b.as_str()),
        ("from_stage", "click"),
        ("to_stage", "signup"),
        ("min_sample", "100"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();

    let mut results: BTreeMap<(String, u64, String), Vec<Value>> = BTreeMap::new();
    for lang in ["en", "zh"] {
        let mut vars = base.clone();
        vars.insert("lang".into(), lang.into());
        for d in dashboards() {
            let duid = d.json["uid"].as_str().expect("uid").to_string();
            // Query variables first (titles among them), so panels see their values.
            let mut vars = vars.clone();
            for (name, v) in variables(&d.json) {
                let Some(sql) = variable_sql(v) else { continue };
                let sql =
                    expand(sql, range, &vars).unwrap_or_else(|e| panic!("{duid} {name}: {e}"));
                let (_, rows) = run(db, &sql)
                    .await
                    .unwrap_or_else(|e| panic!("{duid} variable {name}: {e}"));
                assert!(!rows.is_empty(), "{duid} variable {name} has values");
                let first = rows[0].as_object().and_then(|o| o.values().next()).cloned();
                if !vars.contains_key(&name) {
                    let text = first
                        .and_then(|v| v.as_str().map(String::from))
                        .expect("text");
                    vars.insert(name.clone(), text);
                }
            }
            for p in panels(&d.json) {
                let id = p["id"].as_u64().expect("id");
                let title =
                    expand(p["title"].as_str().unwrap_or_default(), range, &vars).expect("title");
                assert!(!title.contains('$'), "{duid} panel {id} title {title}");
                for t in p["targets"].as_array().expect("targets") {
                    let sql = expand(t["rawSql"].as_str().expect("sql"), range, &vars)
                        .unwrap_or_else(|e| panic!("{duid} panel {id}: {e}"));
                    let (cols, rows) = run(db, &sql)
                        .await
                        .unwrap_or_else(|e| panic!("{duid} panel {id} ({lang}): {e}"));
                    assert_eq!(
                        cols,
                        expected_columns(&duid, id),
                        "{duid} panel {id} columns"
                    );
                    results.insert((duid.clone(), id, lang.into()), rows);
                }
            }
        }
    }
    let got = |d: &str, id: u64| &results[&(d.to_string(), id, "en".to_string())];
    let m = &truth.messages;
    let ty = |t: &str| m.valid_by_event_type.get(t).copied().unwrap_or(0) as f64;
    let last = b2c.stages.len() - 1;

    // Wallboard: the key tiles.
    let today = tiles(got("leadstream-wallboard", 1));
    let want: BTreeMap<String, f64> = [
        ("New leads", b2c.totals.leads as f64),
        ("Signups", ty("signup")),
        ("Trials", ty("trial_started")),
        ("Purchases", ty("order")),
        ("Contracts", ty("contract_signed")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(today, want, "today's tiles");
    let zh = tiles(&results[&("leadstream-wallboard".into(), 1, "zh".into())]);
    assert_eq!(
        zh.get("新线索"),
        Some(&(b2c.totals.leads as f64)),
        "Chinese labels: {zh:?}"
    );
    let revenue = tiles(got("leadstream-wallboard", 2));
    let want_cny: f64 = truth.revenue["CNY"].to_string().parse().expect("revenue");
    assert!(want_cny > 0.0);
    assert!(
        (revenue["Revenue CNY"] - want_cny).abs() < 0.01,
        "{revenue:?} vs {want_cny}"
    );
    let conversion = tiles(got("leadstream-wallboard", 3))["Overall conversion"];
    let want_conv = b2c.totals.reached[last] as f64 / b2c.totals.leads as f64;
    assert!(
        (conversion - want_conv).abs() < 1e-9,
        "{conversion} vs {want_conv}"
    );
    assert!(tiles(got("leadstream-wallboard", 4))["Seconds since the newest event"] >= 0.0);
    let stages: Vec<(String, u64)> = got("leadstream-wallboard", 5)
        .iter()
        .map(|r| {
            (
                r["stage"].as_str().expect("stage").to_string(),
                num(&r["leads"]) as u64,
            )
        })
        .collect();
    assert_eq!(stages.len(), b2c.stages.len());
    for (k, (label, n)) in stages.iter().enumerate() {
        assert!(label.starts_with(&b2c.stages[k]), "{label}");
        assert_eq!(*n, b2c.totals.reached[k], "stage {label}");
        if k > 0 {
            let pct =
                100.0 * b2c.totals.reached[k] as f64 / b2c.totals.reached[k - 1].max(1) as f64;
            assert!(
                label.ends_with(&format!("{}%", (pct * 10.0).round() / 10.0)),
                "{label} vs {pct}"
            );
        }
    }
    let by_channel: BTreeMap<String, f64> = got("leadstream-wallboard", 6)
        .iter()
        .map(|r| {
            (
                r["channel"].as_str().expect("channel").to_string(),
                num(&r["conversion"]),
            )
        })
        .collect();
    let want_channels = truth_by(b2c, "first_touch");
    assert_eq!(
        by_channel.keys().collect::<Vec<_>>(),
        want_channels
            .iter()
            .filter(|(_, c)| c.leads > 0)
            .map(|(k, _)| k)
            .collect::<Vec<_>>()
    );
    for (k, c) in &want_channels {
        let want = c.reached[last] as f64 / c.leads as f64;
        assert!((by_channel[k] - want).abs() < 1e-9, "channel {k}");
    }
    let per_minute: f64 = got("leadstream-wallboard", 7)
        .iter()
        .map(|r| num(&r["events_per_minute"]))
        .sum();
    assert!(
        (per_minute - m.valid as f64).abs() < 1e-6,
        "{per_minute} events vs {}",
        m.valid
    );
    let mut want_losses: BTreeMap<String, u64> = BTreeMap::new();
    for by_reason in b2c.totals.losses.values() {
        for (r, n) in by_reason {
            *want_losses.entry(r.clone()).or_default() += n;
        }
    }
    for r in got("leadstream-wallboard", 8) {
        let reason = r["reason"].as_str().expect("reason");
        assert_eq!(
            Some(num(&r["lost"]) as u64),
            want_losses.get(reason).copied(),
            "loss {reason}"
        );
    }

    // A/B: the same numbers as the API's comparison.
    let api = http_get_json(
        &addr,
        &format!(
            "/api/v1/funnels/b2c/compare?by=first_touch&a={a}&b={b}&from_stage=click&to_stage=signup&from={}&to={}",
            range.from_ms, range.to_ms
        ),
    )
    .await
    .expect("compare");
    let c = &api["comparison"];
    let arms = got("leadstream-ab", 1);
    assert_eq!(arms.len(), 2);
    for (row, arm) in arms.iter().zip([&c["a"], &c["b"]]) {
        assert_eq!(row["value"], arm["value"]);
        assert!(num(&row["entered"]) > 0.0, "arm {row}");
        assert_eq!(num(&row["entered"]), num(&arm["entered"]));
        assert_eq!(num(&row["converted"]), num(&arm["converted"]));
        assert!((num(&row["rate"]) - num(&arm["rate"])).abs() < 1e-9);
        assert!((num(&row["ci_low"]) - num(&arm["ci95"][0])).abs() < 1e-9);
        assert!((num(&row["ci_high"]) - num(&arm["ci95"][1])).abs() < 1e-9);
    }
    let v = &got("leadstream-ab", 2)[0];
    assert!((num(&v["absolute_lift"]) - num(&c["absolute_lift"])).abs() < 1e-9);
    match c["p_value"].as_f64() {
        // The API's erfc is a 1.2e-7 fit; ClickHouse's is exact.
        Some(p) => assert!((num(&v["p_value"]) - p).abs() < 1e-6, "{v} vs {c}"),
        None => assert!(v["p_value"].is_null()),
    }
    let verdict = v["verdict"].as_str().expect("verdict");
    match c["verdict"].as_str() {
        Some("insufficient_data") => assert_eq!(verdict, "not enough data"),
        Some("not_significant") => assert_eq!(verdict, "no significant difference"),
        _ => assert!(verdict.contains("converts"), "{verdict}"),
    }
    assert!(!got("leadstream-ab", 3).is_empty(), "cohorts over time");

    // Pipeline health.
    let dead = tiles(got("leadstream-pipeline", 2));
    assert_eq!(dead["Dead letters"], m.poison as f64);
    let mut by_category: BTreeMap<String, u64> = BTreeMap::new();
    for r in got("leadstream-pipeline", 5) {
        *by_category
            .entry(r["category"].as_str().expect("category").to_string())
            .or_default() += num(&r["rejections"]) as u64;
    }
    assert_eq!(by_category, m.poison_by_category, "rejections by category");
    assert_eq!(
        tiles(got("leadstream-pipeline", 3))["Events stored"],
        m.valid as f64
    );
    let deliveries: f64 = got("leadstream-pipeline", 4)
        .iter()
        .map(|r| num(&r["per_second"]) * 60.0)
        .sum();
    // Every valid event was inserted at least once; replays after a rebalance insert again
    // (at-least-once), which is what an ingest rate counts, so there is no upper bound.
    assert!(
        deliveries.round() as u64 >= m.valid,
        "deliveries {deliveries} at least the {} valid events",
        m.valid
    );
    assert!(!got("leadstream-pipeline", 7).is_empty(), "insert latency");

    // The running aggregator reports its consumer lag every few seconds; the lag panel shows it.
    let lag_sql = expand(
        panels(
            &dashboards()
                .into_iter()
                .find(|d| d.file == "pipeline-health.json")
                .expect("pipeline")
                .json,
        )
        .into_iter()
        .find(|p| p["id"] == 6)
        .expect("lag panel")["targets"][0]["rawSql"]
            .as_str()
            .expect("sql"),
        range,
        &base,
    )
    .expect("lag sql");
    let lag = eventually(
        Duration::from_secs(60),
        || async { run(db, &lag_sql).await.ok().map(|(_, rows)| rows) },
        |rows| {
            rows.iter().any(|r| {
                r["consumer"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("aggregator"))
            })
        },
    )
    .await
    .expect("lag rows");
    for r in &lag {
        assert!(num(&r["lag"]) >= 0.0, "{r}");
    }
}
