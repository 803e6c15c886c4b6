//! Same seed → byte-identical messages and truth; different seeds differ. Checked on the library
//! and on the binary's `--dry-run` / `--truth` files.

use leadstream_generator::{GeneratorConfig, Schedule};
use std::path::Path;
use std::process::Command;

fn deliveries(seed: u64) -> Vec<leadstream_generator::Delivery> {
    let mut cfg = GeneratorConfig {
        seed,
        ..Default::default()
    };
    cfg.traffic.leads = 500;
    let start = cfg
        .start_time(chrono::Utc::now())
        .unwrap()
        .timestamp_millis();
    Schedule::new(cfg, start).collect()
}

#[test]
fn same_seed_same_deliveries_and_different_seeds_differ() {
    let a = deliveries(42);
    let b = deliveries(42);
    assert!(a.len() > 1000);
    assert_eq!(a, b);
    let c = deliveries(43);
    assert_ne!(
        a.iter().map(|d| &d.payload).collect::<Vec<_>>(),
        c.iter().map(|d| &d.payload).collect::<Vec<_>>()
    );
}

fn run_binary(dir: &Path, name: &str, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let out = dir.join(format!("{name}.jsonl"));
    let truth = dir.join(format!("{name}.truth.json"));
    let status = Command::new(env!("CARGO_BIN_EXE_leadstream-generator"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .args([
            "--leads",
            "400",
            "--seed",
            &seed.to_string(),
            "--no-progress",
        ])
        .arg("--dry-run")
        .arg(&out)
        .arg("--truth")
        .arg(&truth)
        .env("RUST_LOG", "warn")
        .status()
        .expect("run the generator");
    assert!(status.success());
    (std::fs::read(out).unwrap(), std::fs::read(truth).unwrap())
}

#[test]
fn the_binary_is_byte_identical_for_a_seed() {
    let dir = std::env::temp_dir().join(format!("leadstream-determinism-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let first = run_binary(&dir, "a", 9);
    let second = run_binary(&dir, "b", 9);
    let other = run_binary(&dir, "c", 10);
    assert!(first.0.len() > 10_000);
    assert!(first.0 == second.0, "messages differ for one seed");
    assert!(first.1 == second.1, "truth differs for one seed");
    assert!(
        first.0 != other.0 && first.1 != other.1,
        "different seeds gave the same output"
    );
    let truth: serde_json::Value = serde_json::from_slice(&first.1).unwrap();
    let lines = first.0.iter().filter(|b| **b == b'\n').count() as u64;
    assert_eq!(truth["messages"]["sent"].as_u64(), Some(lines));
    std::fs::remove_dir_all(&dir).ok();
}
