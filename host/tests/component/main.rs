//! Component tests: the built components under the real host, with an in-memory database that
//! answers each statement and records what the component asked. No services needed: HTTP
//! requests go through the host's listener, events through `Host::deliver` (what the AMQP
//! consumer calls).

mod invoices;
mod orders;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use host::Host;
use host::capabilities::sql::Database;
use host::capabilities::sql::fake::{Call, FakeDatabase};
use host::config::Config;
use host::startup::IncomingEvent;
use serde_json::Value as Json;

const CUSTOMER: &str = "0190b3b2-8c1a-7d2e-9f00-4a5b6c7d8e9f";
const ORDER: &str = "01a21143-e0bb-724a-bc08-9cf6be4f538a";
/// 2026-01-01T00:00:00Z in microseconds.
const NEW_YEAR: i64 = 1_767_225_600_000_000;

struct Served {
    base: String,
    client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A host running `component` (publishing `publishes`, consuming `consumes`) on `database`.
async fn host(component: &str, publishes: &str, consumes: &str, database: FakeDatabase) -> Host {
    let wasm = workspace().join(format!("target/wasm32-wasip2/component/{component}.wasm"));
    assert!(
        wasm.is_file(),
        "{} is missing: run the README's test command",
        wasm.display()
    );
    // No broker runs here: the host only ever tries to reach one, and events stay in the
    // (fake) outbox.
    let manifest = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[limits]\nmax_instances = 96\n\
         [admin]\nlisten = \"127.0.0.1:0\"\nwatch = false\n\
         [cache]\ndir = \"target/test-compile-cache\"\n\
         [messaging]\nurl = \"amqp://{component}:unused@127.0.0.1:1/%2f\"\n\
         publishers = {{ \"{consumes}\" = \"elsewhere\" }}\n\
         [[components]]\nname = \"{component}\"\nwasm = \"{}\"\nroute = \"/{component}\"\n\
         database_url = \"postgres://unused/{component}\"\n\
         publishes = [\"{publishes}\"]\nsubscriptions = [\"{consumes}\"]\n",
        wasm.display()
    );
    let config = Config::from_toml(&manifest, &workspace(), &[("UNUSED", "")]).expect("manifest");
    let databases = HashMap::from([(
        component.to_owned(),
        Arc::new(database) as Arc<dyn Database>,
    )]);
    Host::build_with(config, databases)
        .await
        .expect("host builds")
}

/// An event as the consumer hands it over.
fn event(topic: &str, schema: &str, data: Json) -> IncomingEvent {
    IncomingEvent {
        id: "0190b3b2-8c1a-7d2e-9f00-00000000e001".into(),
        topic: topic.into(),
        source: "test".into(),
        time: NEW_YEAR,
        content_type: "application/json".into(),
        data_schema: Some(schema.into()),
        data: serde_json::to_vec(&data).expect("JSON"),
        attempt: 1,
    }
}

/// Names of the calls, for asserting their order.
fn names(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .map(|call| match call {
            Call::Begin => "begin".to_owned(),
            Call::Query(statement, _) | Call::Execute(statement, _) => statement
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
            Call::Commit => "commit".to_owned(),
            Call::Rollback => "rollback".to_owned(),
        })
        .collect()
}

/// Serves orders.wasm on a free port with `database` as its database.
async fn serve(database: FakeDatabase) -> Served {
    let host = host("orders", "orders.created", "invoices.issued", database).await;
    let base = format!("http://{}", host.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(host.run_until_stopped(async {
        let _ = stopped.await;
    }));
    Served {
        base,
        client: reqwest::Client::new(),
        stop: Some(stop),
    }
}
