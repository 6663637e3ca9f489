//! The control plane: the admin API, hot swap under load, the compile cache, dead-letter replay.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{self, OrdersApp, TempDir, TestBroker, TestDatabase, TestHost};
use crate::system::{CUSTOMER, System};

/// A host running Orders from a `.wasm` in a folder of the test's own, watched, with a compile
/// cache of its own.
struct Swappable {
    app: OrdersApp,
    folder: TempDir,
    _cache: TempDir,
}

impl Swappable {
    async fn start() -> Self {
        let (folder, cache) = (TempDir::new(), TempDir::new());
        std::fs::copy(
            helpers::component_wasm("orders"),
            folder.0.join("orders.wasm"),
        )
        .expect("copy");
        let db = Arc::new(TestDatabase::create().await);
        let broker = TestBroker::new();
        let manifest = helpers::orders_manifest(&broker, &db.url())
            .replace(
                &helpers::component_wasm("orders").display().to_string(),
                &folder.0.join("orders.wasm").display().to_string(),
            )
            .replace("watch = false", "watch = true")
            .replace(
                &helpers::compile_cache().display().to_string(),
                &cache.0.display().to_string(),
            )
            // Generous for a loaded two-core machine: 32 clients while Cranelift compiles.
            .replace("request_timeout_ms = 5000", "request_timeout_ms = 15000")
            .replace("max_connections = 8", "max_connections = 16");
        let host = TestHost::start(&manifest).await;
        Self {
            app: OrdersApp { host, db, broker },
            folder,
            _cache: cache,
        }
    }

    /// Replaces the watched file the way cargo does: a new file renamed over it.
    fn replace_file(&self, wasm: &[u8]) {
        let staged = self
            .folder
            .0
            .join(format!("staged-{}", uuid::Uuid::new_v4().simple()));
        std::fs::write(&staged, wasm).expect("write");
        std::fs::rename(&staged, self.folder.0.join("orders.wasm")).expect("rename");
    }

    async fn component(&self) -> Value {
        self.app.host.admin_get("/components/orders").await
    }

    /// Waits until the admin API shows the code at `version`; how long that took.
    async fn wait_for_version(&self, version: u64) -> Duration {
        let started = Instant::now();
        loop {
            let component = self.component().await;
            if component["code"]["version"] == version {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "version {version} never served: {component}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn sha256(bytes: &[u8]) -> String {
    host::cache::digest(bytes)
}

/// What the load saw: each request's status, latency, and whether the new build answered it.
#[derive(Default)]
struct Seen {
    statuses: Vec<u16>,
    latencies: Vec<(Instant, Duration)>,
    marked: usize,
}

/// 32 clients posting and reading orders until `running` is cleared.
fn load(app: &OrdersApp, running: &Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<Seen>> {
    (0..32)
        .map(|client| {
            let (http, base, running) = (
                app.host.client.clone(),
                app.host.url("/orders/orders"),
                running.clone(),
            );
            tokio::spawn(async move {
                let mut seen = Seen::default();
                let mut last: Option<String> = None;
                while running.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let response = match (&last, client % 2) {
                        (Some(id), 0) => http.get(format!("{base}/{id}")).send().await,
                        _ => {
                            http.post(&base)
                                .json(&json!({ "customerId": CUSTOMER, "amount": 3 }))
                                .send()
                                .await
                        }
                    };
                    let response = response.expect("answered");
                    seen.latencies.push((started, started.elapsed()));
                    seen.statuses.push(response.status().as_u16());
                    seen.marked += usize::from(
                        response
                            .headers()
                            .get("x-orders-build")
                            .is_some_and(|v| v == "marked"),
                    );
                    if response.status() == 201 {
                        let order: Value = response.json().await.expect("JSON");
                        last = order["id"].as_str().map(str::to_owned);
                    }
                }
                seen
            })
        })
        .collect()
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    sorted
        .get(((sorted.len().max(1) - 1) as f64 * fraction).round() as usize)
        .copied()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_swapped_under_load_fails_no_request_and_swapping_back_comes_from_the_cache() {
    let host = Swappable::start().await;
    let (plain, marked) = (
        std::fs::read(helpers::component_wasm("orders")).expect("orders.wasm"),
        std::fs::read(helpers::component_wasm("orders-marked")).expect("orders-marked.wasm"),
    );
    let first = host.component().await;
    assert_eq!(first["code"]["version"], 1);
    assert_eq!(first["code"]["sha256"], sha256(&plain));

    let running = Arc::new(AtomicBool::new(true));
    let clients = load(&host.app, &running);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let swap_started = Instant::now();
    host.replace_file(&marked);
    let to_marked = host.wait_for_version(2).await;
    let swapped_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    host.replace_file(&plain);
    let back = host.wait_for_version(3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.store(false, Ordering::Relaxed);

    let mut seen = Seen::default();
    for client in clients {
        let part = client.await.expect("client");
        seen.statuses.extend(part.statuses);
        seen.latencies.extend(part.latencies);
        seen.marked += part.marked;
    }
    let failed = seen
        .statuses
        .iter()
        .filter(|status| !matches!(status, 200 | 201))
        .count();
    let mut before: Vec<Duration> = seen
        .latencies
        .iter()
        .filter(|(at, _)| *at < swap_started)
        .map(|(_, d)| *d)
        .collect();
    let mut during: Vec<Duration> = seen
        .latencies
        .iter()
        .filter(|(at, _)| *at >= swap_started && *at <= swapped_at)
        .map(|(_, d)| *d)
        .collect();
    before.sort();
    during.sort();
    let component = host.component().await;
    println!(
        "hot swap under 32 clients: {} requests, {failed} failed, {} answered by the new build; \
         file replaced → new code serving in {to_marked:?} (compiled), and back in {back:?} \
         (from the cache: {}); \
         latency before the swap p50 {:?} p99 {:?}, during it p50 {:?} p99 {:?}",
        seen.statuses.len(),
        seen.marked,
        component["code"]["from_cache"],
        percentile(&before, 0.5),
        percentile(&before, 0.99),
        percentile(&during, 0.5),
        percentile(&during, 0.99),
    );
    assert_eq!(
        failed,
        0,
        "no request failed: {:?}",
        seen.statuses
            .iter()
            .filter(|s| !matches!(s, 200 | 201))
            .collect::<Vec<_>>()
    );
    assert!(seen.marked > 0, "the new build answered after the swap");
    assert_eq!(component["code"]["version"], 3);
    assert_eq!(component["code"]["sha256"], sha256(&plain));
    assert_eq!(
        component["code"]["from_cache"], true,
        "swapping back skips Cranelift"
    );
    assert_eq!(component["last_failed_load"], Value::Null);
    let response = host.app.get("/orders/health").await;
    assert!(
        response.headers().get("x-orders-build").is_none(),
        "the plain build serves again"
    );
}

#[tokio::test]
async fn a_truncated_foreign_or_wrong_world_file_changes_nothing() {
    let host = Swappable::start().await;
    let plain = std::fs::read(helpers::component_wasm("orders")).expect("orders.wasm");
    let bare = std::fs::read(helpers::component_wasm("bare")).expect("bare.wasm");
    let admin = &host.app.host;

    for (what, body, expected) in [
        (
            "truncated",
            plain[..plain.len() / 2].to_vec(),
            "not a valid WebAssembly component",
        ),
        (
            "not wasm",
            b"#!/bin/sh\necho hello\n".to_vec(),
            "not a valid WebAssembly component",
        ),
        (
            "the wrong world",
            bare.clone(),
            "does not export wasi:http/incoming-handler",
        ),
    ] {
        let response = admin
            .client
            .put(admin.admin_url("/components/orders/wasm"))
            .body(body)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 422, "{what}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.expect("JSON");
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains(expected)),
            "{what}: {problem}"
        );
        let component = host.component().await;
        assert_eq!(component["code"]["version"], 1, "{what}");
        assert!(
            component["last_failed_load"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains(expected)),
            "{component}"
        );
        let order = host
            .app
            .post_order(&json!({ "customerId": CUSTOMER, "amount": 4 }))
            .await;
        assert_eq!(
            order.status(),
            201,
            "the old code keeps serving after {what}"
        );
    }

    // Through the watched file as well: a truncated write changes nothing, the whole file swaps.
    host.replace_file(&plain[..plain.len() / 3]);
    let started = Instant::now();
    while host.component().await["last_failed_load"]["source"]
        .as_str()
        .is_none_or(|source| source == "upload")
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the truncated file was never tried"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(host.component().await["code"]["version"], 1);
    host.replace_file(&helpers::with_note(&plain, "rebuilt"));
    host.wait_for_version(2).await;
    assert_eq!(host.component().await["last_failed_load"], Value::Null);
}

#[tokio::test]
async fn an_upload_swaps_the_code_and_the_same_bytes_again_change_nothing() {
    let host = Swappable::start().await;
    let marked =
        std::fs::read(helpers::component_wasm("orders-marked")).expect("orders-marked.wasm");
    let admin = &host.app.host;
    let response = admin
        .client
        .put(admin.admin_url("/components/orders/wasm"))
        .body(marked.clone())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let component: Value = response.json().await.expect("JSON");
    assert_eq!(component["code"]["source"], "upload");
    assert_eq!(component["code"]["version"], 2);
    assert_eq!(component["code"]["sha256"], sha256(&marked));
    let answer = host.app.get("/orders/health").await;
    assert_eq!(
        answer.headers()["x-orders-build"],
        "marked",
        "the upload serves as soon as the call answers"
    );

    let again = admin
        .client
        .put(admin.admin_url("/components/orders/wasm"))
        .body(marked)
        .send()
        .await
        .expect("sent");
    assert_eq!(again.status(), 200);
    assert!(again.headers().contains_key("x-unchanged"));
    assert_eq!(host.component().await["code"]["version"], 2);

    let reload = admin
        .client
        .post(admin.admin_url("/components/orders/reload"))
        .send()
        .await
        .expect("sent");
    assert_eq!(
        reload.status(),
        200,
        "reload reads the configured file again"
    );
    assert_eq!(host.component().await["code"]["version"], 3);
    let missing = admin
        .client
        .post(admin.admin_url("/components/nobody/reload"))
        .send()
        .await
        .expect("sent");
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn admin_calls_need_the_token_when_one_is_set() {
    let db = TestDatabase::create().await;
    let manifest = helpers::orders_manifest(&TestBroker::new(), &db.url());
    let token = "a-long-enough-admin-token-for-tests";
    let config = host::config::Config::from_toml(
        &manifest,
        &helpers::workspace(),
        &[("HOST_ADMIN_TOKEN", token)],
    )
    .expect("manifest");
    let host = TestHost::start_with(config).await;

    let unauthorised = [
        (reqwest::Method::GET, "/components", None),
        (
            reqwest::Method::GET,
            "/components",
            Some("Bearer wrong-token-of-the-same-length-xx"),
        ),
        (
            reqwest::Method::GET,
            "/components",
            Some("Basic a-long-enough-admin-token-for-tests"),
        ),
        (reqwest::Method::GET, "/no-such-call", None),
        (reqwest::Method::DELETE, "/components/orders", None),
        (reqwest::Method::PUT, "/components/orders/wasm", None),
        (
            reqwest::Method::POST,
            "/components/orders/dead-letters/replay",
            None,
        ),
    ];
    for (method, path, offered) in unauthorised {
        let mut request = host
            .client
            .request(method.clone(), host.admin_url(path))
            .body(vec![0u8; 1024]);
        if let Some(value) = offered {
            request = request.header("authorization", value);
        }
        let response = request.send().await.expect("sent");
        assert_eq!(response.status(), 401, "{method} {path} {offered:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    let response = host
        .client
        .get(host.admin_url("/components"))
        .bearer_auth(token)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let wrong_method = host
        .client
        .delete(host.admin_url("/components/orders"))
        .bearer_auth(token)
        .send()
        .await
        .expect("sent");
    assert_eq!(wrong_method.status(), 405);
    assert_eq!(
        wrong_method.headers()["content-type"],
        "application/problem+json"
    );
    let bad_query = host
        .client
        .get(host.admin_url("/components/orders/dead-letters?limit=lots"))
        .bearer_auth(token)
        .send()
        .await
        .expect("sent");
    assert_eq!(bad_query.status(), 400);
    assert_eq!(
        bad_query.headers()["content-type"],
        "application/problem+json"
    );
    let live = host
        .client
        .get(host.admin_url("/livez"))
        .bearer_auth(token)
        .send()
        .await
        .expect("sent");
    assert_eq!(live.status(), 200);
    let ready = host
        .client
        .get(host.admin_url("/readyz"))
        .bearer_auth(token)
        .send()
        .await
        .expect("sent");
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn without_a_token_the_admin_api_answers_only_local_programs() {
    let app = OrdersApp::spawn().await;
    let host = &app.host;
    assert_eq!(
        host.client
            .get(host.admin_url("/components"))
            .send()
            .await
            .expect("sent")
            .status(),
        200
    );
    let from_a_page = host
        .client
        .post(host.admin_url("/components/orders/reload"))
        .header("origin", "http://evil.example")
        .send()
        .await
        .expect("sent");
    assert_eq!(from_a_page.status(), 403);
    let rebound = host
        .client
        .get(host.admin_url("/components"))
        .header("host", "evil.example:9000")
        .send()
        .await
        .expect("sent");
    assert_eq!(rebound.status(), 403);
    assert_eq!(
        host.admin_get("/components/orders").await["code"]["version"],
        1,
        "nothing was reloaded"
    );
}

#[tokio::test]
async fn a_restart_loads_components_from_the_compile_cache() {
    let cache = TempDir::new();
    let db = TestDatabase::create().await;
    let manifest = helpers::orders_manifest(&TestBroker::new(), &db.url()).replace(
        &helpers::compile_cache().display().to_string(),
        &cache.0.display().to_string(),
    );
    let mut loads = Vec::new();
    for _ in 0..2 {
        let host = TestHost::start(&manifest).await;
        let component = host.admin_get("/components/orders").await;
        loads.push((
            component["code"]["from_cache"].clone(),
            component["code"]["load_ms"].clone(),
        ));
        host.stop().await.expect("stops");
    }
    println!(
        "orders loaded cold in {} ms, from the cache in {} ms",
        loads[0].1, loads[1].1
    );
    assert_eq!(loads[0].0, false);
    assert_eq!(loads[1].0, true);
}

#[tokio::test]
async fn a_subscriber_swapped_while_events_flow_loses_no_event_and_handles_none_twice() {
    let system = Arc::new(System::start().await);
    system.wait_for_health("up").await;
    let invoices = std::fs::read(helpers::component_wasm("invoices")).expect("invoices.wasm");
    let running = Arc::new(AtomicBool::new(true));
    let posting = {
        let (system, running) = (system.clone(), running.clone());
        tokio::spawn(async move {
            let mut posted = 0;
            while running.load(Ordering::Relaxed) {
                system.post_order(6).await;
                posted += 1;
            }
            posted
        })
    };
    let host = &system.host;
    for round in 1..=3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let body = helpers::with_note(&invoices, &format!("round {round}"));
        let response = host
            .client
            .put(host.admin_url("/components/invoices/wasm"))
            .body(body)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200);
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    running.store(false, Ordering::Relaxed);
    let posted = posting.await.expect("posting");

    assert_eq!(
        host.admin_get("/components/invoices").await["code"]["version"],
        4
    );
    System::wait_for_count(
        &system.invoices,
        "SELECT count(*) FROM invoices",
        posted,
        Duration::from_secs(30),
    )
    .await;
    System::wait_for_count(
        &system.orders,
        "SELECT count(*) FROM orders WHERE status = 'invoiced'",
        posted,
        Duration::from_secs(30),
    )
    .await;
    // Handled once each: one inbox record and one `invoices.issued` per order (a handler run
    // twice for an event would have been stopped by the inbox, or would have published again),
    // and nothing dead-lettered on either side.
    assert_eq!(
        System::count(&system.invoices, "SELECT count(*) FROM platform_inbox").await,
        posted
    );
    assert_eq!(
        System::count(&system.invoices, "SELECT count(*) FROM platform_outbox").await,
        posted
    );
    assert_eq!(
        System::count(&system.orders, "SELECT count(*) FROM platform_inbox").await,
        posted
    );
    for component in ["orders", "invoices"] {
        assert!(
            crate::system::take(&system.broker.dead_letters(component))
                .await
                .is_none(),
            "{component}"
        );
    }
    println!("{posted} orders posted across three swaps of invoices: {posted} invoices, one each");
}
