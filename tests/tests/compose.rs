//! `docker-compose.yml` checked without Docker: no service starts with a default or empty
//! secret (every password and salt is a required variable), ClickHouse has no password-less
//! user and is reachable from the host only on loopback, and every published port is one the
//! README documents.
#![allow(missing_docs)]

use leadstream_tests::repo_root;
use serde_yaml::Value;

fn compose() -> Value {
    serde_yaml::from_str(
        &std::fs::read_to_string(repo_root().join("docker-compose.yml")).expect("compose file"),
    )
    .expect("compose yaml")
}

#[test]
fn every_secret_is_required_from_the_environment() {
    let c = compose();
    let services = c["services"].as_mapping().expect("services");
    let mut secrets = 0;
    for (name, s) in services {
        let Some(env) = s["environment"].as_mapping() else {
            continue;
        };
        for (k, v) in env {
            let k = k.as_str().expect("key");
            assert_ne!(
                k, "CLICKHOUSE_SKIP_USER_SETUP",
                "{name:?} leaves a password-less default user"
            );
            if ["PASSWORD", "SALT", "SECRET"].iter().any(|w| k.contains(w)) {
                secrets += 1;
                let v = v.as_str().unwrap_or_default();
                assert!(
                    v.starts_with("${") && v.contains(":?"),
                    "{name:?}.{k} must come from a required variable, not {v:?}"
                );
            }
        }
    }
    assert!(
        secrets >= 7,
        "ClickHouse, collector, aggregator and Grafana secrets: {secrets}"
    );
    let grafana = &c["services"]["grafana"]["environment"];
    assert!(
        grafana["GF_SECURITY_ADMIN_PASSWORD"].as_str().is_some(),
        "Grafana's admin password is set"
    );
    let ch = &c["services"]["clickhouse"];
    assert_eq!(
        ch["environment"]["CLICKHOUSE_USER"].as_str(),
        Some("leadstream")
    );
    for mount in ch["volumes"].as_sequence().expect("init script mounted") {
        let host = mount
            .as_str()
            .expect("mount")
            .split(':')
            .next()
            .expect("path");
        assert!(repo_root().join(host).exists(), "{host} exists");
    }
}

#[test]
fn published_ports_are_the_documented_ones_and_clickhouse_is_local() {
    let c = compose();
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README");
    for (name, s) in c["services"].as_mapping().expect("services") {
        for p in s["ports"].as_sequence().into_iter().flatten() {
            let p = p.as_str().expect("port mapping");
            let parts: Vec<&str> = p.split(':').collect();
            assert!(
                parts.len() >= 2,
                "{name:?}: {p} publishes a random host port"
            );
            let host_port = parts[parts.len() - 2];
            assert!(
                readme.contains(host_port),
                "{name:?}: host port {host_port} is not in the README"
            );
            if name.as_str() == Some("clickhouse") {
                assert!(
                    p.starts_with("127.0.0.1:"),
                    "ClickHouse is published on loopback only: {p}"
                );
            }
        }
    }
}
