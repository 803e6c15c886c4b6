//! Aggregator helpers shared by the end-to-end tests: the binary, and every API view compared
//! with the generator's truth.

use crate::{eventually, free_addr, http_get_json, output_dir, spawn_collector, World};
use leadstream_generator::truth::{Cell, FunnelTruth, Truth};
use leadstream_generator::{run, Destination, RunOptions};
use serde_json::Value;
use std::collections::BTreeMap;

pub use crate::process::{config_file, spawn_aggregator, Running};

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap_or_else(|| panic!("array expected: {v}"))
        .iter()
        .map(|x| x.as_u64().expect("count"))
        .collect()
}

/// Truth cells summed per value of one attribution dimension.
/// The truth's cells summed by one breakdown dimension (first_touch, last_touch or variant).
pub fn truth_by(ft: &FunnelTruth, dim: &str) -> BTreeMap<String, Cell> {
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
pub async fn api_matches_truth(addr: &str, truth: &Truth) -> Result<(), String> {
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

/// Generates `leads` leads with `seed` into the world's topics, with late, duplicate and
/// poison shares; the truth also goes to `<name>.truth.json` in the output folder.
pub async fn generate(
    w: &World,
    name: &str,
    seed: u64,
    leads: u64,
    (late, duplicate, poison): (f64, f64, f64),
) -> Truth {
    let mut g = w.generator_config(seed, leads);
    g.realism.late_share = late;
    g.realism.duplicate_share = duplicate;
    g.realism.poison_share = poison;
    run(
        g,
        RunOptions {
            destination: Destination::Kafka,
            truth_file: Some(output_dir().join(format!("{name}.truth.json"))),
            progress: false,
        },
        Default::default(),
    )
    .await
    .expect("generator run")
    .truth
}

/// An aggregator binary and an in-process collector working on one world.
pub struct Pipeline {
    /// The aggregator's API address.
    pub addr: String,
    /// The aggregator (killed when dropped).
    pub aggregator: Running,
    /// The collector's stop token and task.
    pub collector: (
        tokio_util::sync::CancellationToken,
        tokio::task::JoinHandle<()>,
    ),
}

/// Starts an aggregator and a collector on `w` and waits until every API view equals `truth`
/// (panics with the first difference after two minutes).
pub async fn pipeline_until(w: &World, name: &str, truth: &Truth) -> Pipeline {
    let addr = free_addr();
    let cfg = w.aggregator_config(&addr);
    let aggregator = spawn_aggregator(&config_file(&cfg, name));
    let collector = spawn_collector(w.collector_config());
    let answers = eventually(
        std::time::Duration::from_secs(120),
        || async { Some(api_matches_truth(&addr, truth).await) },
        |r| r.is_ok(),
    )
    .await
    .expect("answers");
    assert_eq!(answers, Ok(()), "the aggregator caught up with the truth");
    Pipeline {
        addr,
        aggregator,
        collector,
    }
}
