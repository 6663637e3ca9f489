//! `host probe`, the containers' health check, against the `host` binary serving: 0 when the
//! host of the same configuration answers `/health` with 200, 1 when it does not, or when the
//! configuration cannot be read.

use tokio::process::Command;

use crate::helpers::{self, TempDir, TestBroker, TestDatabase};
use crate::process::HostProcess;

async fn probe(manifest: &std::path::Path, env: &[(&str, String)]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_host"))
        .arg("--config")
        .arg(manifest)
        .arg("probe")
        .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
        .output()
        .await
        .expect("probe runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn probe_answers_whether_the_host_of_its_configuration_is_ready() {
    let db = TestDatabase::create().await;
    let broker = TestBroker::new();
    let manifest = helpers::orders_manifest(&broker, &db.url());
    let host = HostProcess::start(&manifest, &[]).await;
    let dir = TempDir::new();
    let path = dir.0.join("host.toml");
    std::fs::write(&path, &manifest).expect("written");
    // The manifest listens on port 0; the container's would name its port, as this does.
    let listen = [("HOST_HTTP__LISTEN", host.address.to_string())];

    assert_eq!(probe(&path, &listen).await, (0, String::new()));

    let stopped = host.address;
    host.stop().await;
    let (status, said) = probe(&path, &listen).await;
    assert_eq!(status, 1, "{said}");
    assert!(
        said.contains(&format!("http://127.0.0.1:{}/health", stopped.port()))
            && said.contains("not ready"),
        "{said}"
    );

    let (status, said) = probe(&dir.0.join("missing.toml"), &[]).await;
    assert_eq!(status, 1, "{said}");
    assert!(said.contains("cannot read the manifest"), "{said}");
}

/// `HOST_LOG_JSON=1`, as docs/observability.md writes it, is accepted: the host goes on to read its
/// manifest (and says that one is missing) rather than refuse the variable.
#[tokio::test]
async fn the_log_switch_takes_the_values_the_readme_gives() {
    for value in ["1", "true", "0", ""] {
        let output = Command::new(env!("CARGO_BIN_EXE_host"))
            .args(["--config", "/nonexistent/host.toml"])
            .env("HOST_LOG_JSON", value)
            .output()
            .await
            .expect("runs");
        let said = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "HOST_LOG_JSON={value:?}: {said}"
        );
        assert!(
            said.contains("cannot read the manifest"),
            "HOST_LOG_JSON={value:?}: {said}"
        );
    }
}
