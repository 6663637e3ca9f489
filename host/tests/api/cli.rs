//! The `host` command's subcommands against the real binary: `check` validates a manifest and
//! its components offline and says what to fix; `probe --live` answers while the database is
//! down (what restarts a container must not restart it then), and `probe` does not;
//! `admin` lists and swaps with the token from the environment.

use std::path::Path;

use tokio::process::Command;

use crate::helpers::{self, TcpProxy, TempDir, TestBroker, TestDatabase};
use crate::process::HostProcess;

/// Runs `host <args>` with `env`: its exit code, stdout and stderr.
async fn host(args: &[&str], env: &[(&str, String)]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_host"))
        .args(args)
        .env_remove("HOST_ADMIN_TOKEN")
        .env_remove("HOST_ADMIN_URL")
        .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
        .output()
        .await
        .expect("the host binary runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn check(dir: &TempDir, manifest: &str) -> (i32, String, String) {
    let path = dir.0.join("host.toml");
    std::fs::write(&path, manifest).expect("manifest written");
    host(&["check", "--config", &path.display().to_string()], &[]).await
}

/// A manifest of both services, as a CI job would check it: no database or broker needs to be
/// there (the URLs name servers that do not answer).
fn both(dir: &Path) -> String {
    let workspace = helpers::workspace();
    let entry = |name: &str, route: &str| {
        format!(
            r#"
[[components]]
name = "{name}"
wasm = "{wasm}"
route = "{route}"
database_url = "postgres://{name}@db.invalid:5432/{name}"
amqp_url = "amqp://{name}:secret@broker.invalid:5672/%2f"
migrations = "{migrations}"
publishes = ["{name}.done"]
"#,
            wasm = helpers::component_wasm(name).display(),
            migrations = workspace
                .join(format!("components/{name}/migrations"))
                .display(),
        )
    };
    format!(
        "[cache]\ndir = \"{}\"\n\n[messaging]\nexchange = \"platform.events\"\n{}{}",
        dir.join("cache").display(),
        entry("orders", "/orders"),
        entry("invoices", "/invoices"),
    )
}

#[tokio::test]
async fn check_accepts_a_good_manifest_offline_and_says_what_it_checked() {
    let dir = TempDir::new();
    let (code, out, err) = check(&dir, &both(&dir.0)).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("ok  orders at /orders")
            && out.contains("3 migration(s) up to V3__")
            && out.contains("ok  invoices at /invoices")
            && out.contains("a host would accept it"),
        "{out}"
    );
}

#[tokio::test]
async fn check_refuses_a_wrong_world_a_missing_migrations_folder_and_a_route_clash_with_the_fix() {
    let dir = TempDir::new();
    let good = both(&dir.0);

    // `bare` exports no HTTP handler: it was built against another world.
    let wrong_world = good.replace(
        &helpers::component_wasm("invoices").display().to_string(),
        &helpers::component_wasm("bare").display().to_string(),
    );
    let (code, _, err) = check(&dir, &wrong_world).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("component `invoices`")
            && err.contains("does not export wasi:http/incoming-handler"),
        "{err}"
    );

    let no_migrations = good.replace("components/invoices/migrations", "components/invoices/gone");
    let (code, _, err) = check(&dir, &no_migrations).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("migrations:") && err.contains("components/invoices/gone is not a folder"),
        "{err}"
    );

    let clash = good.replace("route = \"/invoices\"", "route = \"/orders/invoices\"");
    let (code, _, err) = check(&dir, &clash).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(
            "\"/orders/invoices\" and the route \"/orders\" of component `orders` overlap"
        ) && err.contains("such as \"/invoices\""),
        "{err}"
    );

    // A migration refinery would pass over without a word.
    let migrations = dir.0.join("migrations");
    std::fs::create_dir_all(&migrations).expect("folder");
    std::fs::write(
        migrations.join("V1__create.sql"),
        "CREATE TABLE t (id int);",
    )
    .expect("file");
    std::fs::write(migrations.join("v2-add-column.sql"), "SELECT 1;").expect("file");
    let misnamed = good.replace(
        &helpers::workspace()
            .join("components/invoices/migrations")
            .display()
            .to_string(),
        &migrations.display().to_string(),
    );
    let (code, _, err) = check(&dir, &misnamed).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("v2-add-column.sql is not named V<n>__<name>.sql"),
        "{err}"
    );
}

#[tokio::test]
async fn liveness_answers_while_the_database_is_down_and_readiness_does_not() {
    let db = TestDatabase::create().await;
    let proxy = TcpProxy::start("127.0.0.1:5432").await;
    let broker = TestBroker::new();
    let manifest = helpers::orders_manifest(&broker, &proxy.postgres_url(&db.name));
    let host_process = HostProcess::start(&manifest, &[]).await;
    let url = |path: &str| host_process.url(path);
    let probe =
        |path: String| async move { host(&["probe", "--url", &path, "--timeout", "5"], &[]).await };
    assert_eq!(probe(url("/health/live")).await.0, 0);
    assert_eq!(probe(url("/health")).await.0, 0);

    proxy.set_up(false);
    let (code, _, err) = probe(url("/health")).await;
    assert_eq!(code, 1, "readiness with the database down: {err}");
    assert!(
        err.contains("not ready") && err.contains("answered 503"),
        "{err}"
    );
    let (code, _, err) = probe(url("/health/live")).await;
    assert_eq!(code, 0, "liveness with the database down: {err}");

    // `--live` finds the port from the manifest, as a container's check does.
    let dir = TempDir::new();
    let path = dir.0.join("host.toml");
    std::fs::write(&path, &manifest).expect("written");
    let listen = [("HOST_HTTP__LISTEN", host_process.address.to_string())];
    let (code, _, err) = host(
        &["--config", &path.display().to_string(), "probe", "--live"],
        &listen,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    host_process.stop().await;
    let (code, _, err) = host(
        &["--config", &path.display().to_string(), "probe", "--live"],
        &listen,
    )
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("not alive") && err.contains("/health/live"),
        "{err}"
    );
}

#[tokio::test]
async fn admin_lists_and_swaps_with_the_token_from_the_environment() {
    let db = TestDatabase::create().await;
    let broker = TestBroker::new();
    let token = "a-token-of-at-least-sixteen-characters".to_owned();
    let host_process = HostProcess::start(
        &helpers::orders_manifest(&broker, &db.url()),
        &[("HOST_ADMIN_TOKEN", token.clone())],
    )
    .await;
    let env = [
        ("HOST_ADMIN_URL", format!("http://{}", host_process.admin)),
        ("HOST_ADMIN_TOKEN", token),
    ];

    let (code, out, err) = host(&["admin", "components"], &env).await;
    assert_eq!(code, 0, "{err}");
    let rows: Vec<&str> = out.lines().collect();
    assert!(rows[0].starts_with("NAME") && rows.len() == 2, "{out}");
    assert!(
        rows[1].starts_with("orders") && rows[1].contains("/orders"),
        "{out}"
    );

    let marked = helpers::component_wasm("orders-marked")
        .display()
        .to_string();
    let (code, out, err) = host(&["admin", "swap", "orders", &marked], &env).await;
    assert_eq!(code, 0, "{err}");
    let swapped: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(swapped["code"]["version"], 2, "{out}");
    assert_eq!(swapped["code"]["source"], "upload", "{out}");

    let (code, out, err) = host(&["admin", "components", "orders", "--json"], &env).await;
    assert_eq!(code, 0, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(listed["code"]["sha256"], swapped["code"]["sha256"]);

    // Without the token: refused, and told what to set.
    let (code, _, err) = host(&["admin", "components"], &env[..1]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("401") && err.contains("set HOST_ADMIN_TOKEN"),
        "{err}"
    );

    // A component that is not there: the API's problem, in a line.
    let (code, _, err) = host(&["admin", "reload", "nowhere"], &env).await;
    assert_eq!(code, 1);
    assert!(err.contains("404") && err.contains("nowhere"), "{err}");
}

#[tokio::test]
async fn completions_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = host(&["completions", shell], &[]).await;
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(
            out.contains("admin") && out.contains("check"),
            "{shell}: {out}"
        );
    }
}
