//! The `leadstream-collector` binary as an operator runs it: `--help`, config errors, SIGTERM.
#![allow(missing_docs)]

use leadstream_schemas::SourceKind;
use leadstream_tests::*;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The binary next to this test's deps directory (scripts/test.sh builds it first).
fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .join("leadstream-collector");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --bins` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// The binary with the shipped `config/collector.yaml`.
fn with_default_config() -> Command {
    let mut c = Command::new(binary());
    c.arg("--config")
        .arg(repo_root().join("config/collector.yaml"));
    c
}

#[test]
fn help_explains_configuration() {
    let out = Command::new(binary())
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--config",
        "LEADSTREAM_CLICKHOUSE__URL",
        "LEADSTREAM_NORMALIZE__PII_SALT",
        "SIGTERM",
    ] {
        assert!(
            text.contains(needle),
            "--help should mention {needle}:\n{text}"
        );
    }
}

#[test]
fn bad_configuration_names_the_key_and_exits_non_zero() {
    let out = with_default_config()
        .env("LEADSTREAM_NORMALIZE__PII_SALT", "long-enough-salt")
        .env("LEADSTREAM_BATCH__MAX_ROWS", "0")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`batch.max_rows`"), "{err}");

    let out = with_default_config()
        .env_remove("LEADSTREAM_NORMALIZE__PII_SALT")
        .env("LEADSTREAM_CLICKHOUSE__PASSWORD", "very-secret-password")
        .arg("--print-config")
        .output()
        .expect("run");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("normalize.pii_salt"), "{all}");
    assert!(
        !all.contains("very-secret-password"),
        "a secret was printed: {all}"
    );
}

#[test]
fn print_config_redacts_secrets() {
    let out = with_default_config()
        .arg("--print-config")
        .env("LEADSTREAM_NORMALIZE__PII_SALT", "salt-that-must-not-print")
        .env(
            "LEADSTREAM_CLICKHOUSE__PASSWORD",
            "password-that-must-not-print",
        )
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("[redacted]"), "{text}");
    assert!(!text.contains("must-not-print"), "{text}");
}

/// SIGTERM: stop consuming, flush, commit, exit 0 (the issue asks for within 10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_commits_and_exits_zero() {
    let w = World::new("sigterm", 1).await;
    let cfg = w.collector_config();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let dir = std::env::temp_dir().join(unique("sigterm"));
    std::fs::create_dir_all(&dir).expect("dir");
    let cfg_file = dir.join("collector.yaml");
    let mut yaml = serde_json::to_value(&cfg).expect("config json");
    yaml["http"]["listen"] = format!("127.0.0.1:{port}").into();
    // Secrets serialize redacted; the salt comes from the environment like in production.
    yaml["normalize"]
        .as_object_mut()
        .expect("obj")
        .remove("pii_salt");
    // A long flush interval: only the shutdown flush can write these rows in time.
    yaml["batch"]["flush_interval_ms"] = 60_000.into();
    std::fs::write(&cfg_file, serde_json::to_string(&yaml).expect("json")).expect("write config");
    let mut child = Command::new(binary())
        .args(["--config", cfg_file.to_str().expect("utf-8")])
        .env("LEADSTREAM_NORMALIZE__PII_SALT", "golden-salt")
        .env_remove("LEADSTREAM_KAFKA__BROKERS")
        .env_remove("LEADSTREAM_CLICKHOUSE__URL")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn collector");
    let p = producer();
    let topic = w.topic(SourceKind::Order);
    for i in 0..20 {
        let msg = format!(
            r#"{{"order_id":"o-{i}","user_id":"u-{i}","paid_at":1763870400,"amount_cents":{},"currency":"CNY"}}"#,
            (i + 1) * 100
        );
        produce(&p, &topic, None, msg.as_bytes()).await;
    }
    // Wait until the collector has read them (the received counter), then stop it.
    let metrics = format!("127.0.0.1:{port}");
    let read = eventually(
        Duration::from_secs(90),
        || async { Some(scrape_received(&metrics, "order").await) },
        |n| *n >= 20,
    )
    .await;
    assert_eq!(read, Some(20), "collector should have read the 20 orders");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let exit = exit.expect("collector must exit within 10 s of SIGTERM");
    assert!(exit.success(), "exit status {exit}");
    assert_eq!(
        query_u64(
            &clickhouse_url(),
            &w.database,
            "SELECT count() FROM lead_events_unique"
        )
        .await,
        Some(20)
    );
    assert_committed_to_end(
        &cfg.kafka.group_id,
        std::slice::from_ref(&topic),
        1,
        "offsets committed at shutdown",
    );
    let _ = std::fs::remove_dir_all(dir);
}

async fn scrape_received(addr: &str, source: &str) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return 0;
    };
    if s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.is_err() {
        return 0;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body).await;
    let prefix = format!("leadstream_collector_received_total{{source=\"{source}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
