//! The `host` binary run as its own process, as an operator runs it: a manifest file, JSON logs,
//! and only environment variables for telemetry. Used where the process matters: the tracing
//! subscriber and the OTLP exporter are the process's, set up once in `main`.

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::TempDir;

pub struct HostProcess {
    child: Child,
    pub address: SocketAddr,
    pub admin: SocketAddr,
    /// Every line the host logged, one JSON object each.
    log: Arc<Mutex<Vec<serde_json::Value>>>,
    pub client: reqwest::Client,
    _dir: TempDir,
}

impl HostProcess {
    /// Starts `host --config <manifest> --log-json` with `env` added, and waits until it serves.
    pub async fn start(manifest: &str, env: &[(&str, String)]) -> Self {
        let dir = TempDir::new();
        let path = dir.0.join("host.toml");
        std::fs::write(&path, manifest).expect("manifest written");
        let mut child = Command::new(env!("CARGO_BIN_EXE_host"))
            .arg("--config")
            .arg(&path)
            .arg("--log-json")
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the host binary starts");
        let log: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let mut lines = BufReader::new(child.stderr.take().expect("stderr piped")).lines();
        let kept = log.clone();
        let echo = std::env::var_os("TEST_LOG").is_some();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if echo {
                    eprintln!("{line}");
                }
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({ "message": line }));
                kept.lock().expect("not poisoned").push(value);
            }
        });
        let started = Instant::now();
        let (address, admin) = loop {
            let found = |message: &str| {
                log.lock()
                    .expect("not poisoned")
                    .iter()
                    .find(|line| line["message"] == message)
                    .and_then(|line| {
                        line["address"]
                            .as_str()
                            .and_then(|address| address.parse::<SocketAddr>().ok())
                    })
            };
            if let (Some(address), Some(admin)) =
                (found("serving HTTP"), found("admin API listening"))
            {
                break (address, admin);
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the host exited with {status}: {:#?}",
                    log.lock().expect("not poisoned")
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the host never served: {:#?}",
                log.lock().expect("not poisoned")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Self {
            child,
            address,
            admin,
            log,
            client: reqwest::Client::new(),
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// The process's resident memory now and at its peak (`VmRSS`, `VmHWM`), in bytes.
    pub fn memory(&self) -> (u64, u64) {
        let pid = self.child.id().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| {
                    line.strip_prefix(name)?
                        .trim()
                        .strip_suffix("kB")?
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .expect("a memory field")
                * 1024
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// The process's id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// `GET` of an admin call that must answer 200, as JSON.
    pub async fn admin_get(&self, path: &str) -> serde_json::Value {
        let response = self
            .client
            .get(self.admin_url(path))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200, "{path}");
        response.json().await.expect("JSON")
    }

    /// The lines logged so far.
    pub fn log(&self) -> Vec<serde_json::Value> {
        self.log.lock().expect("not poisoned").clone()
    }

    /// `/metrics` of the admin listener.
    pub async fn metrics(&self) -> String {
        let response = self
            .client
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200);
        response.text().await.expect("text")
    }

    /// Waits until `/health` reports the broker `up`.
    pub async fn wait_until_broker_up(&self) {
        let started = Instant::now();
        loop {
            let health: serde_json::Value = self
                .client
                .get(self.url("/health"))
                .send()
                .await
                .expect("sent")
                .json()
                .await
                .expect("JSON");
            let brokers: Vec<&serde_json::Value> = health["checks"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(check, _)| check.ends_with(".broker"))
                .map(|(_, state)| state)
                .collect();
            if !brokers.is_empty() && brokers.iter().all(|state| *state == "up") {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the broker never came up: {health}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM and waits for the process to end.
    pub async fn stop(mut self) -> ExitStatus {
        if let Some(pid) = self
            .child
            .id()
            .and_then(|pid| rustix::process::Pid::from_raw(pid as i32))
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the host stops within 30 s")
            .expect("waited")
    }
}
