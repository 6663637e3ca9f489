//! Each component's API document and docs page, through the real host: a valid OpenAPI 3.1
//! document (by a real validator) served under the prefix the request came through, a contract
//! every real response honours, a property-based run of schemathesis against it, and the
//! Swagger UI page rendered by a real browser.
//!
//! The validator, schemathesis and the browser are installed by `./test.sh`
//! (`scripts/ensure.sh`): Python tools in `target/tools/venv`, Debian's `chromium`.

mod browser;
mod cases;
mod contract;

use std::path::PathBuf;
use std::process::Command;

use host::config::Config;
use serde_json::Value;

use crate::helpers::{self, TestBroker, TestDatabase, TestHost};

/// Orders, Invoices and the misbehave component (which has no document) in one host that trusts
/// a gateway's `X-Forwarded-Prefix`, each on a database of its own.
pub struct Documented {
    pub host: TestHost,
    /// Its exchange and queues, removed when dropped.
    _broker: TestBroker,
    _databases: Vec<TestDatabase>,
}

impl Documented {
    pub async fn start() -> Self {
        let orders = TestDatabase::create().await;
        let invoices = TestDatabase::create().await;
        let misbehave = TestDatabase::create().await;
        let broker = TestBroker::new();
        let manifest = format!(
            "{}\n[[components]]\nname = \"misbehave\"\nwasm = \"{}\"\nroute = \"/misbehave\"\n\
             database_url = \"{}\"\n",
            helpers::manifest(
                &broker,
                &helpers::amqp_base(),
                &[("orders", &orders.url()), ("invoices", &invoices.url())]
            ),
            helpers::component_wasm("misbehave").display(),
            misbehave.url(),
        );
        // Set as a container would: by environment.
        let env = [("HOST_HTTP__TRUST_FORWARDED_PREFIX", "true")];
        let config =
            Config::from_toml(&manifest, &helpers::workspace(), &env).expect("valid manifest");
        let host = TestHost::start_with(config).await;
        broker.wait_for_consumer("invoices").await;
        broker.wait_for_consumer("orders").await;
        Self {
            host,
            _broker: broker,
            _databases: vec![orders, invoices, misbehave],
        }
    }

    /// The component's document, as served at `<route>/openapi.json`.
    pub async fn document(&self, route: &str, forwarded_prefix: Option<&str>) -> Value {
        let mut request = self
            .host
            .client
            .get(self.host.url(&format!("{route}/openapi.json")));
        if let Some(prefix) = forwarded_prefix {
            request = request.header("x-forwarded-prefix", prefix);
        }
        let response = request.send().await.expect("sent");
        assert_eq!(response.status(), 200, "{route}/openapi.json");
        assert_eq!(response.headers()["content-type"], "application/json");
        response.json().await.expect("JSON")
    }
}

/// The manifest of a host running only the component `name` at `/<name>` on `db`, its entry
/// ending with `extra` settings; no broker.
fn alone(name: &str, db: &TestDatabase, extra: &str) -> String {
    format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\nwatch = false\n\
         [cache]\ndir = \"{cache}\"\n[[components]]\nname = \"{name}\"\nwasm = \"{wasm}\"\n\
         route = \"/{name}\"\ndatabase_url = \"{url}\"\n{extra}\n",
        cache = helpers::compile_cache().display(),
        wasm = helpers::component_wasm(name).display(),
        url = db.url(),
    )
}

/// A tool `./test.sh` installs into `target/tools/venv`.
pub fn python_tool(name: &str) -> Command {
    let path: PathBuf = helpers::workspace()
        .join("target/tools/venv/bin")
        .join(name);
    assert!(
        path.is_file(),
        "{} is missing: ./test.sh installs it (scripts/ensure.sh, ensure_python_tools)",
        path.display()
    );
    Command::new(path)
}

/// Runs `command`, failing the test with its output when it fails.
pub fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{command:?} failed:\n{text}");
    text
}

#[tokio::test]
async fn each_document_is_valid_openapi_3_1_and_names_the_prefix_the_request_came_through() {
    let app = Documented::start().await;
    let dir = helpers::TempDir::new();
    for route in ["/orders", "/invoices"] {
        let document = app.document(route, None).await;
        assert_eq!(document["openapi"], "3.1.0", "{route}");
        assert_eq!(
            document["servers"][0]["url"], route,
            "straight at the host: its route"
        );
        let file = dir.0.join(format!("{}.json", &route[1..]));
        std::fs::write(&file, serde_json::to_vec_pretty(&document).expect("JSON"))
            .expect("written");
        let said = run(python_tool("openapi-spec-validator").arg(&file));
        assert!(said.contains("OK"), "{said}");

        let behind = app.document(route, Some(&format!("/api{route}"))).await;
        assert_eq!(
            behind["servers"][0]["url"],
            format!("/api{route}"),
            "through a gateway: its prefix"
        );
        for forged in ["//evil.example", "/a\"b", "relative", "/a/../../b c"] {
            let document = app.document(route, Some(forged)).await;
            assert_eq!(
                document["servers"][0]["url"], route,
                "a prefix that is not a plain path is not passed on: {forged:?}"
            );
        }
    }
    // The document describes what the API does: its operations and their errors' shape.
    let orders = app.document("/orders", None).await;
    let post = &orders["paths"]["/orders"]["post"];
    assert_eq!(
        post["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/NewOrder"
    );
    assert!(post["responses"]["201"]["headers"]["Location"].is_object());
    assert!(
        post["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header")
    );
    for status in ["400", "409", "413", "415", "500", "503", "504"] {
        assert!(
            post["responses"][status]["content"]["application/problem+json"].is_object(),
            "POST /orders documents {status}"
        );
    }
    let order = &orders["components"]["schemas"]["NewOrder"];
    assert_eq!(order["additionalProperties"], false);
    assert_eq!(
        order["required"],
        serde_json::json!(["customerId", "amount"])
    );
    app.host.stop().await.expect("stops");
}

#[tokio::test]
async fn a_location_carries_the_gateways_prefix_only_when_the_host_trusts_it() {
    let app = Documented::start().await;
    let post = |prefix: &'static str| {
        app.host
            .client
            .post(app.host.url("/orders/orders"))
            .header("x-forwarded-prefix", prefix)
            .json(&serde_json::json!({ "customerId": crate::system::CUSTOMER, "amount": 5 }))
            .send()
    };
    let response = post("/api/orders").await.expect("sent");
    assert_eq!(response.status(), 201);
    assert!(
        response.headers()["location"]
            .to_str()
            .expect("ascii")
            .starts_with("/api/orders/orders/")
    );
    app.host.stop().await.expect("stops");

    // A host that does not trust the header tells the component its route, whatever the client
    // says.
    let untrusting = helpers::OrdersApp::spawn().await;
    let response = untrusting
        .host
        .client
        .post(untrusting.host.url("/orders/orders"))
        .header("x-forwarded-prefix", "/api/orders")
        .json(&serde_json::json!({ "customerId": crate::system::CUSTOMER, "amount": 5 }))
        .send()
        .await
        .expect("sent");
    assert!(
        response.headers()["location"]
            .to_str()
            .expect("ascii")
            .starts_with("/orders/orders/")
    );
    let document: Value = untrusting
        .get("/orders/openapi.json")
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(document["servers"][0]["url"], "/orders");
}

#[tokio::test]
async fn a_component_without_a_document_has_no_docs_page() {
    let app = Documented::start().await;
    let response = app
        .host
        .client
        .get(app.host.url("/misbehave/docs/"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.expect("JSON");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("no /openapi.json")),
        "{problem}"
    );
    // Those that have one get the page, its assets, and a redirect from the bare path.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let moved = client
        .get(app.host.url("/orders/docs"))
        .send()
        .await
        .expect("sent");
    assert_eq!(moved.status(), 308);
    assert_eq!(moved.headers()["location"], "docs/");
    let page = client
        .get(app.host.url("/orders/docs/"))
        .send()
        .await
        .expect("sent");
    assert_eq!(page.status(), 200);
    assert!(page.text().await.expect("text").contains("swagger-ui"));
    let script = client
        .get(app.host.url("/invoices/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .expect("sent");
    assert_eq!(script.status(), 200);
    assert!(
        script.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .contains("javascript")
    );
    app.host.stop().await.expect("stops");
}

/// The template a new service starts from works as docs/adding-a-service.md says: it keeps notes
/// in its own database, answers as its document says, and gets a docs page.
#[tokio::test]
async fn the_template_service_serves_its_resource_its_document_and_its_docs_page() {
    let db = TestDatabase::create().await;
    let migrations = helpers::workspace().join("components/template/migrations");
    let manifest = alone(
        "template",
        &db,
        &format!("migrations = \"{}\"", migrations.display()),
    );
    let host = TestHost::start(&manifest).await;
    let document: Value = host
        .client
        .get(host.url("/template/openapi.json"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");
    let mut contract = contract::Contract::new(document);
    let post = |body: Value| {
        host.client
            .post(host.url("/template/notes"))
            .json(&body)
            .send()
    };
    let created = contract::Received::of(
        post(serde_json::json!({ "text": "hello" }))
            .await
            .expect("sent"),
    )
    .await;
    contract.check("POST", "/notes", &created);
    assert_eq!(created.status, 201);
    let location = created.headers["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(location.starts_with("/template/notes/"), "{location}");
    let found = contract::Received::of(
        host.client
            .get(host.url(&location))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    contract.check("GET", "/notes/{id}", &found);
    assert_eq!(
        (found.status, found.json()["text"].as_str()),
        (200, Some("hello"))
    );
    for body in [
        serde_json::json!({ "text": "" }),
        serde_json::json!({ "txt": "x" }),
    ] {
        let refused = contract::Received::of(post(body).await.expect("sent")).await;
        contract.check("POST", "/notes", &refused);
        assert_eq!(refused.status, 400);
    }
    for (path, status) in [
        (format!("/notes/{}", uuid::Uuid::new_v4()), 404),
        ("/notes/1".into(), 400),
    ] {
        let answer = contract::Received::of(
            host.client
                .get(host.url(&format!("/template{path}")))
                .send()
                .await
                .expect("sent"),
        )
        .await;
        contract.check("GET", "/notes/{id}", &answer);
        assert_eq!(answer.status, status);
    }
    let health = contract::Received::of(
        host.client
            .get(host.url("/template/health"))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    contract.check("GET", "/health", &health);
    contract.assert_every_operation_exercised();
    assert_eq!(
        host.client
            .get(host.url("/template/docs/"))
            .send()
            .await
            .expect("sent")
            .status(),
        200
    );
    host.stop().await.expect("stops");
}

/// The docs page asks the component whether it has a document; a component too busy to answer
/// gets its own answer passed on (503, retry later), not a 404 saying it has no docs. The page's
/// static assets need no answer from it.
#[tokio::test]
async fn a_component_too_busy_to_say_has_its_docs_page_answer_503_not_404() {
    let db = TestDatabase::create().await;
    let manifest = alone("misbehave", &db, "max_concurrency = 1\nmax_queued = 0");
    let host = TestHost::start(&manifest).await;
    let slow = tokio::spawn(
        host.client
            .get(host.url("/misbehave/slow-sql?seconds=3"))
            .send(),
    );
    let started = std::time::Instant::now();
    while host.admin_get("/components/misbehave").await["in_flight"] != 1 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the slow request never ran"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let busy = host
        .client
        .get(host.url("/misbehave/docs/"))
        .send()
        .await
        .expect("sent");
    assert_eq!(busy.status(), 503);
    assert!(busy.headers().contains_key("retry-after"));
    let asset = host
        .client
        .get(host.url("/misbehave/docs/swagger-ui.css"))
        .send()
        .await
        .expect("sent");
    assert_eq!(asset.status(), 200, "an asset costs the component nothing");

    assert_eq!(slow.await.expect("joined").expect("sent").status(), 200);
    let page = host
        .client
        .get(host.url("/misbehave/docs/"))
        .send()
        .await
        .expect("sent");
    assert_eq!(page.status(), 404, "free again, it says it has no document");
    host.stop().await.expect("stops");
}
