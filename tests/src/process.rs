//! The service binaries as an operator runs them: spawned with a config file, probed over
//! HTTP, stopped with SIGTERM or killed with SIGKILL.

use crate::{http_get_text, unique, workspace_binary};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A child process killed when dropped, so a failing test leaves no service behind to keep
/// polling the shared stack (or holding the test run's output pipes open).
pub struct Running(Child);

impl Running {
    /// Takes care of `child`.
    pub fn new(child: Child) -> Self {
        Self(child)
    }

    /// SIGKILL, and reap it.
    pub fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// SIGTERM, then waits up to `limit` for the exit (SIGKILL after it); `None` when it did
    /// not exit in time.
    pub fn terminate_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let status = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success(), "kill -TERM {}", self.0.id());
        let started = Instant::now();
        loop {
            if let Some(s) = self.0.try_wait().expect("wait") {
                return Some(s);
            }
            if started.elapsed() > limit {
                self.kill9();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.kill9();
        }
    }
}

/// Writes `cfg` to a fresh config file named `name`.
pub fn config_file<T: serde::Serialize>(cfg: &T, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(name));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("config.yaml");
    std::fs::write(&file, serde_json::to_string(cfg).expect("json")).expect("config");
    file
}

/// The salt the test collectors hash personal data with (given by environment, as in
/// production: secrets serialize redacted).
pub const PII_SALT: &str = "golden-salt";

fn spawn(binary: &str, cfg_file: &Path, log_var: &str) -> Running {
    let child = Command::new(workspace_binary(binary))
        .args(["--config", cfg_file.to_str().expect("utf-8")])
        .env_remove("LEADSTREAM_KAFKA__BROKERS")
        .env_remove("LEADSTREAM_CLICKHOUSE__URL")
        .env("LEADSTREAM_NORMALIZE__PII_SALT", PII_SALT)
        .env(
            "RUST_LOG",
            std::env::var(log_var).unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {binary}: {e}"));
    Running(child)
}

/// Starts the aggregator binary with a config file (the environment's stack overrides removed);
/// `LEADSTREAM_TEST_AGGREGATOR_LOG` sets its `RUST_LOG` (default `warn`).
pub fn spawn_aggregator(cfg_file: &Path) -> Running {
    spawn(
        "leadstream-aggregator",
        cfg_file,
        "LEADSTREAM_TEST_AGGREGATOR_LOG",
    )
}

/// Starts the collector binary with a config file; its salt comes from the environment.
/// `LEADSTREAM_TEST_COLLECTOR_LOG` sets its `RUST_LOG` (default `warn`).
pub fn spawn_collector_binary(cfg_file: &Path) -> Running {
    spawn(
        "leadstream-collector",
        cfg_file,
        "LEADSTREAM_TEST_COLLECTOR_LOG",
    )
}

/// `/readyz` of `addr`: `Some((ready, body))` while the endpoint answers.
pub async fn readyz(addr: &str) -> Option<(bool, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET /readyz HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((head.contains(" 200 "), body.trim().to_string()))
}

/// Whether `/readyz` of `addr` answers 200.
pub async fn is_ready(addr: &str) -> bool {
    readyz(addr).await.is_some_and(|(ready, _)| ready)
}

/// Whether `addr` serves anything at all (`/healthz`).
pub async fn is_alive(addr: &str) -> bool {
    http_get_text(addr, "/healthz").await.is_some()
}
