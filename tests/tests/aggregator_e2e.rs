//! The aggregator against the real broker, collector and ClickHouse: the generator's seeded run
//! (late events, duplicates, malformed messages) answered by the HTTP API exactly as the truth
//! says, with the aggregator killed (-9) mid-stream and restarted on the way.
#![allow(missing_docs)]

use leadstream_generator::truth::{Cell, FunnelTruth, Truth};
use leadstream_generator::{run, Destination, RunOptions};
use leadstream_tests::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn spawn_aggregator(cfg_file: &std::path::Path) -> Child {
    Command::new(workspace_binary("leadstream-aggregator"))
        .args(["--config", cfg_file.to_str().expect("utf-8")])
        .env_remove("LEADSTREAM_KAFKA__BROKERS")
        .env_remove("LEADSTREAM_CLICKHOUSE__URL")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn aggregator")
}

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap_or_else(|| panic!("array expected: {v}"))
        .iter()
        .map(|x| x.as_u64().expect("count"))
        .collect()
}

/// Truth cells summed per value of one attribution dimension.
fn truth_by(ft: &FunnelTruth, dim: &str) -> BTreeMap<String, Cell> {
    let mut out: BTreeMap<String, Cell> = BTreeMap::new();
    for c in &ft.cells {
        let key = match dim {
            "first_touch" => &c.first_touch,
            "last_touch" => &c.last_touch,
            _ => &c.variant,
        };
        let e = out.entry(key.clone()).or_insert_with(|| Cell {
            reached: vec![0; ft.stages.len()],
            occupancy: vec![0; ft.stages.len()],
            ..Cell::default()
        });
        e.leads += c.leads;
        e.lost += c.lost;
        for (a, b) in e.reached.iter_mut().zip(&c.reached) {
            *a += b;
        }
    }
    out
}

type Nested = BTreeMap<String, BTreeMap<String, u64>>;

fn nested(v: &Value) -> Nested {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v}"))
}

/// Compares every API view of every funnel with the truth; `Err` names the first difference.
async fn api_matches_truth(addr: &str, truth: &Truth) -> Result<(), String> {
    let get = |path: String| async move {
        http_get_json(addr, &path)
            .await
            .ok_or_else(|| format!("GET {path} failed"))
    };
    for (name, ft) in &truth.funnels {
        let n = ft.stages.len();
        let t = &ft.totals;
        let cohort = get(format!("/api/v1/funnels/{name}/cohort")).await?;
        let total = &cohort["total"];
        let got = (
            total["leads"].as_u64(),
            u64s(&total["reached"]),
            total["lost"].as_u64(),
        );
        if got != (Some(t.leads), t.reached.clone(), Some(t.lost)) {
            return Err(format!("{name} cohort total {got:?} vs truth {t:?}"));
        }
        for dim in ["first_touch", "last_touch", "variant"] {
            let want = truth_by(ft, dim);
            let v = get(format!("/api/v1/funnels/{name}/cohort?breakdown={dim}")).await?;
            let got: BTreeMap<String, (u64, Vec<u64>, u64)> = v["groups"]
                .as_array()
                .expect("groups")
                .iter()
                .map(|g| {
                    (
                        g["key"].as_str().expect("key").to_string(),
                        (
                            g["leads"].as_u64().expect("leads"),
                            u64s(&g["reached"]),
                            g["lost"].as_u64().expect("lost"),
                        ),
                    )
                })
                .collect();
            let want: BTreeMap<String, (u64, Vec<u64>, u64)> = want
                .into_iter()
                .map(|(k, c)| (k, (c.leads, c.reached, c.lost)))
                .collect();
            if got != want {
                return Err(format!("{name} cohort by {dim}: {got:?} vs truth {want:?}"));
            }
        }
        let occ = get(format!("/api/v1/funnels/{name}/occupancy")).await?;
        let got = u64s(&occ["total"]["occupancy"]);
        if got[..n] != t.occupancy[..] || occ["total"]["lost"].as_u64() != Some(t.lost) {
            return Err(format!("{name} occupancy {occ} vs truth {:?}", t.occupancy));
        }
        let losses = get(format!("/api/v1/funnels/{name}/losses")).await?;
        let (gl, gb) = (
            nested(&losses["total"]["losses"]),
            nested(&losses["total"]["backflows"]),
        );
        if gl != t.losses || gb != t.backflows {
            return Err(format!(
                "{name} losses {gl:?} / backflows {gb:?} vs truth {:?} / {:?}",
                t.losses, t.backflows
            ));
        }
        let kinds = get(format!("/api/v1/funnels/{name}/transitions")).await?;
        let got: BTreeMap<String, u64> =
            serde_json::from_value(kinds["total"]["transitions"].clone()).expect("kinds");
        if got != t.transitions {
            return Err(format!(
                "{name} transitions {got:?} vs truth {:?}",
                t.transitions
            ));
        }
        let mix = get(format!("/api/v1/funnels/{name}/channels")).await?;
        if mix["leads"].as_u64() != Some(t.leads) {
            return Err(format!("{name} channel mix {mix}"));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_run_answers_equal_the_truth_across_a_kill_9() {
    let w = World::new("aggregator", 3).await;
    // 6000 leads (~25k events): bigger runs slow the local tansu (sqlite storage) down for every
    // test after this one; the engine's 20k-lead truth equality runs broker-free in the
    // aggregator's own tests.
    let mut g = w.generator_config(2027, 6000);
    g.realism.late_share = 0.1;
    g.realism.duplicate_share = 0.05;
    g.realism.poison_share = 0.03;
    let report = run(
        g,
        RunOptions {
            destination: Destination::Kafka,
            truth_file: Some(output_dir().join("aggregator_e2e.truth.json")),
            progress: false,
        },
        Default::default(),
    )
    .await
    .expect("generator run");
    let truth = report.truth;
    let m = &truth.messages;
    assert!(
        m.valid > 20_000 && m.late > 1000 && m.duplicates > 500 && m.poison > 300,
        "{m:?}"
    );
    let url = clickhouse_url();
    let addr = free_addr();
    let cfg = w.aggregator_config("main", &addr);
    let group = cfg.kafka.group_id.clone();
    let dir = std::env::temp_dir().join(unique("aggregator"));
    std::fs::create_dir_all(&dir).expect("dir");
    let cfg_file = dir.join("aggregator.yaml");
    std::fs::write(&cfg_file, serde_json::to_string(&cfg).expect("json")).expect("config");

    // First instance: consuming live while the collector works; killed with SIGKILL mid-stream.
    let mut first = spawn_aggregator(&cfg_file);
    let collector = spawn_collector(w.collector_config("main"));
    let rows = "SELECT count() FROM stage_transitions FINAL WHERE is_deleted = 0";
    eventually(
        Duration::from_secs(120),
        || async { query_u64(&url, &w.database, rows).await },
        |n| *n > 0,
    )
    .await
    .expect("the first aggregator published rows");
    first.kill().expect("kill -9");
    first.wait().expect("reap");
    let partial = query_u64(&url, &w.database, rows).await.unwrap_or(0);
    let total: u64 = truth
        .funnels
        .values()
        .flat_map(|f| f.totals.transitions.values())
        .sum();
    assert!(
        partial < total,
        "the kill should land mid-stream ({partial} of {total} transition rows)"
    );
    let in_ch = wait_for_count(
        &url,
        &w.database,
        "SELECT count() FROM lead_events_unique",
        m.valid,
    )
    .await;
    assert_eq!(in_ch, Some(m.valid));
    stop_collector(collector).await;

    // Second instance, same group: rebuilds from ClickHouse, resumes from the committed offsets.
    let mut second = spawn_aggregator(&cfg_file);
    let normalized = [w.normalized_topic()];
    let caught_up = eventually(
        Duration::from_secs(120),
        || async {
            Some(
                committed_vs_end(&group, &normalized, w.partitions)
                    .iter()
                    .all(|(_, _, committed, end)| committed.max(&0) == end),
            )
        },
        |done| *done,
    )
    .await;
    assert_eq!(
        caught_up,
        Some(true),
        "the aggregator committed the whole normalized topic: {:?}",
        committed_vs_end(&group, &normalized, w.partitions)
    );
    let verdict = eventually(
        Duration::from_secs(60),
        || async { Some(api_matches_truth(&addr, &truth).await) },
        |r| r.is_ok(),
    )
    .await
    .expect("answers");
    assert_eq!(verdict, Ok(()));

    // The status endpoint reports freshness from the newest event in the answers.
    let status = http_get_json(&addr, "/api/v1/status")
        .await
        .expect("status");
    assert_eq!(status["ready"], Value::Bool(true));
    assert!(
        status["newest_event_ms"].as_i64().unwrap_or(0) > 0,
        "{status}"
    );

    Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .expect("kill -TERM");
    let code = second.wait().expect("wait");
    assert!(
        code.success(),
        "SIGTERM ends the aggregator cleanly: {code:?}"
    );
}
