//! Servers of a test's own, for tests that stop and start them (outages, restarts) while the
//! shared stack stays up for everyone else. Both keep their data across a restart.

use crate::{repo_root, unique};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A private ClickHouse server for tests that stop and start it (outage tests), so the shared
/// one stays up for everyone else.
pub struct PrivateClickHouse {
    /// Its URL.
    pub url: String,
    dir: PathBuf,
    http_port: u16,
    tcp_port: u16,
    child: Option<std::process::Child>,
}

impl PrivateClickHouse {
    /// Starts a server in a fresh directory and waits for `/ping`.
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(unique("ch"));
        let (http_port, tcp_port) = (free_port(), free_port());
        let mut s = Self {
            url: format!("http://127.0.0.1:{http_port}"),
            dir,
            http_port,
            tcp_port,
            child: None,
        };
        s.restart();
        s
    }

    /// Starts the server again on the same directory and ports.
    pub fn restart(&mut self) {
        let python = std::env::var("LEADSTREAM_STACK_PYTHON")
            .expect("LEADSTREAM_STACK_PYTHON is unset: run the tests with scripts/test.sh");
        std::fs::create_dir_all(&self.dir).expect("dir");
        let log = std::fs::File::create(self.dir.join("server.log")).expect("log");
        let child = std::process::Command::new(python)
            .arg(repo_root().join("scripts/clickhouse_server.py"))
            .args([
                "--dir",
                self.dir.to_str().expect("utf-8"),
                "--http-port",
                &self.http_port.to_string(),
                "--tcp-port",
                &self.tcp_port.to_string(),
            ])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn clickhouse");
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if std::net::TcpStream::connect(("127.0.0.1", self.http_port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "private clickhouse did not start; see {:?}",
            self.dir.join("server.log")
        );
    }

    /// Kills the server (as an outage would).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateClickHouse {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private tansu broker with sqlite storage (the stack's own kind), started and stopped
/// through `scripts/stack.sh`; its topics and committed offsets survive a restart.
pub struct PrivateBroker {
    /// `host:port`.
    pub brokers: String,
    dir: PathBuf,
    port: u16,
}

impl PrivateBroker {
    /// Starts a broker in a fresh directory and waits until it takes connections.
    pub fn start() -> Self {
        let port = free_port();
        let b = Self {
            brokers: format!("127.0.0.1:{port}"),
            dir: std::env::temp_dir().join(unique("broker")),
            port,
        };
        b.restart();
        b
    }

    fn stack(&self, cmd: &str) -> std::process::ExitStatus {
        std::process::Command::new(repo_root().join("scripts/stack.sh"))
            .arg(cmd)
            .env("STACK_DIR", &self.dir)
            .env("KAFKA_PORT", self.port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("scripts/stack.sh {cmd}: {e}"))
    }

    /// Starts the broker (again) on the same directory and port.
    pub fn restart(&self) {
        let started = Instant::now();
        while !self.stack("start-kafka").success() {
            // The port of a broker stopped a moment ago may still be closing.
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "private broker did not start; see {:?}",
                self.dir.join("kafka.log")
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Stops the broker (SIGTERM, as a restart would).
    pub fn stop(&self) {
        self.stack("stop-kafka");
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.stop();
        // A failing test takes the broker's directory with it: keep its log, and show where
        // it first went wrong.
        if std::thread::panicking() {
            let kept = std::env::temp_dir().join(format!("{}-kafka.log", unique("failed")));
            let log = std::fs::read_to_string(self.dir.join("kafka.log")).unwrap_or_default();
            let _ = std::fs::write(&kept, &log);
            eprintln!("--- private broker log kept at {kept:?}; its first errors: ---");
            for l in log
                .lines()
                .filter(|l| l.contains("ERROR") || l.contains("panic"))
                .take(20)
            {
                eprintln!("{l}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
