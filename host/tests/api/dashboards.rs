//! The Grafana dashboard and the Prometheus configuration in `observability/`, checked for real:
//! a real Prometheus (Debian's `prometheus` package; `./test.sh` installs it) scrapes a real host
//! that has served orders, retried, dead-lettered, trapped and swapped code; then every panel's
//! query runs through `promtool query instant` and must answer with data, and every alert rule
//! must evaluate cleanly. The shipped scrape configuration and rules pass `promtool check`, and
//! the rules' own unit tests pass `promtool test rules`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{self, TempDir, TestBroker, TestDatabase, TestHost};
use crate::system;

/// What the dashboard's Grafana variables stand for when a query runs outside Grafana.
const VARIABLES: [(&str, &str); 2] = [("$__rate_interval", "20s"), ("$component", ".+")];

fn observability() -> PathBuf {
    helpers::workspace().join("observability")
}

fn tool(name: &str) -> Command {
    let found = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        found.is_ok_and(|status| status.success()),
        "`{name}` is missing: install Debian's `prometheus` package (the README's test command \
         does)"
    );
    Command::new(name)
}

fn run(command: &mut Command) -> String {
    let output = command.output().expect("runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{command:?} failed:\n{text}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_shipped_prometheus_configuration_and_rules_pass_promtool() {
    let dir = TempDir::new();
    for file in ["prometheus.yml", "rules.yml", "rules.test.yml"] {
        std::fs::copy(
            observability().join("prometheus").join(file),
            dir.0.join(file),
        )
        .expect("copied");
    }
    // The token compose mounts beside the configuration.
    std::fs::write(dir.0.join("admin-token"), "token").expect("written");
    run(tool("promtool")
        .args(["check", "config"])
        .arg(dir.0.join("prometheus.yml")));
    run(tool("promtool")
        .args(["check", "rules"])
        .arg(dir.0.join("rules.yml")));
    run(tool("promtool")
        .args(["test", "rules", "rules.test.yml"])
        .current_dir(&dir.0));
}

/// A Prometheus of the test's own, scraping `target` every second, with the shipped rules.
struct Prometheus {
    child: Child,
    url: String,
    _dir: TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Self {
        let dir = TempDir::new();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("address")
            .port();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: host\n    static_configs:\n      - targets: \
             [\"{target}\"]\n",
            rules = observability().join("prometheus/rules.yml").display(),
        );
        std::fs::write(dir.0.join("prometheus.yml"), config).expect("written");
        let child = tool("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.0.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts");
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    async fn api(&self, path: &str) -> Option<Value> {
        let response = reqwest::get(format!("{}{path}", self.url)).await.ok()?;
        response.json().await.ok()
    }

    /// Waits until `query` has a result.
    async fn wait_for(&self, query: &str) {
        let started = Instant::now();
        loop {
            let path = format!("/api/v1/query?query={}", urlencode(query));
            if let Some(answer) = self.api(&path).await
                && answer["data"]["result"]
                    .as_array()
                    .is_some_and(|result| !result.is_empty())
            {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "Prometheus never had {query}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// Every query of the dashboard: (panel title, expression).
fn panel_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    let mut panels: Vec<&Value> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .collect();
    while let Some(panel) = panels.pop() {
        panels.extend(panel["panels"].as_array().into_iter().flatten());
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a Prometheus expression");
            queries.push((
                panel["title"].as_str().unwrap_or_default().to_owned(),
                expr.to_owned(),
            ));
        }
    }
    queries
}

fn substituted(expr: &str) -> String {
    VARIABLES
        .iter()
        .fold(expr.to_owned(), |expr, (name, value)| {
            expr.replace(name, value)
        })
}

/// Orders, Invoices and the misbehave component in one host.
async fn start_host(
    broker: &TestBroker,
    orders: &TestDatabase,
    invoices: &TestDatabase,
    misbehave: &TestDatabase,
) -> TestHost {
    let manifest = format!(
        "{}\n[[components]]\nname = \"misbehave\"\nwasm = \"{}\"\nroute = \"/misbehave\"\n\
         database_url = \"{}\"\n",
        helpers::manifest(
            broker,
            &helpers::amqp_base(),
            &[("orders", &orders.url()), ("invoices", &invoices.url())]
        ),
        helpers::component_wasm("misbehave").display(),
        misbehave.url(),
    );
    let host = TestHost::start(&manifest).await;
    system::make_invoices_flaky(invoices, 1).await;
    broker.wait_for_consumer("invoices").await;
    broker.wait_for_consumer("orders").await;
    host
}

/// Traffic that makes every metric the dashboard shows: orders invoiced (with the one posted
/// before), a retry, a dead letter, a 404, a trap, a swap and a failed load.
async fn traffic(host: &TestHost, broker: &TestBroker, orders: &TestDatabase) {
    for amount in [100, 200, 300] {
        post_order(host, amount).await;
    }
    let invoiced = "SELECT count(*) FROM orders WHERE status = 'invoiced'";
    system::System::wait_for_count(orders, invoiced, 4, Duration::from_secs(30)).await;
    broker.publish("orders.created", b"{ not an event").await;
    system::wait_for_dead_letter(&broker.dead_letters("invoices")).await;
    let get = |path: &str| host.client.get(host.url(path)).send();
    assert_eq!(
        get(&format!("/orders/orders/{}", uuid::Uuid::new_v4()))
            .await
            .expect("sent")
            .status(),
        404
    );
    assert_eq!(get("/misbehave/panic").await.expect("sent").status(), 500);
    let marked =
        std::fs::read(helpers::component_wasm("orders-marked")).expect("orders-marked.wasm");
    let put = |name: &str, body: Vec<u8>| {
        host.client
            .put(host.admin_url(&format!("/components/{name}/wasm")))
            .body(body)
            .send()
    };
    assert_eq!(put("orders", marked).await.expect("sent").status(), 200);
    assert!(
        put("misbehave", b"not wasm".to_vec())
            .await
            .expect("sent")
            .status()
            .is_client_error()
    );
}

async fn post_order(host: &TestHost, amount: i64) {
    let response = host
        .client
        .post(host.url("/orders/orders"))
        .json(&serde_json::json!({ "customerId": system::CUSTOMER, "amount": amount }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn every_dashboard_panel_and_alert_rule_works_against_a_real_prometheus_scraping_a_real_host()
{
    let (orders, invoices, misbehave) = (
        TestDatabase::create().await,
        TestDatabase::create().await,
        TestDatabase::create().await,
    );
    let broker = TestBroker::new();
    let host = start_host(&broker, &orders, &invoices, &misbehave).await;
    let prometheus = Prometheus::start(&host.admin.to_string());
    // A first order, scraped before the rest of the traffic, so rates over it are more than
    // zero (a counter's first sample is where its rate starts).
    post_order(&host, 50).await;
    prometheus
        .wait_for("http_server_request_duration_seconds_count")
        .await;
    traffic(&host, &broker, &orders).await;
    prometheus
        .wait_for("messaging_deliveries_total{outcome=\"dead_lettered\"}")
        .await;
    // Enough scrapes after the traffic for every rate window to hold two samples.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let dashboard: Value = serde_json::from_slice(
        &std::fs::read(observability().join("grafana/dashboards/platform.json"))
            .expect("dashboard"),
    )
    .expect("the dashboard is JSON");
    let queries = panel_queries(&dashboard);
    assert!(queries.len() >= 20, "{queries:?}");
    // The rates saw the traffic (checked first, while it is well inside the rate window).
    let requests = substituted(
        &queries
            .iter()
            .find(|(title, _)| title == "Requests per second by route")
            .expect("the panel")
            .1,
    );
    let positive = run(tool("promtool").args([
        "query",
        "instant",
        &prometheus.url,
        &format!("({requests}) > 0"),
    ]));
    assert!(positive.contains("/orders/orders"), "{positive}");
    let mut empty = Vec::new();
    for (title, expr) in &queries {
        let expr = substituted(expr);
        // A gauge read from the database at the scrape is left out of a scrape whose read ran
        // past its deadline (a busy machine): such a panel gets a few more scrapes' time.
        let started = Instant::now();
        loop {
            let answer = run(tool("promtool").args(["query", "instant", &prometheus.url, &expr]));
            if !answer.trim().is_empty() {
                break;
            }
            if started.elapsed() > Duration::from_secs(10) {
                empty.push(format!("{title}: {expr}"));
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    assert!(
        empty.is_empty(),
        "panels whose query found nothing:\n{}",
        empty.join("\n")
    );

    // The component variable's query finds the components.
    let series = run(tool("promtool").args([
        "query",
        "series",
        "--match=units_of_work_total",
        &prometheus.url,
    ]));
    for component in ["orders", "invoices"] {
        assert!(
            series.contains(&format!("component=\"{component}\"")),
            "{series}"
        );
    }

    // Every alert rule evaluates against the real series without error.
    let rules = prometheus.api("/api/v1/rules").await.expect("rules");
    let rules: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().expect("rules"))
        .collect();
    assert_eq!(rules.len(), 10, "{rules:?}");
    for rule in rules {
        assert_eq!(rule["health"], "ok", "{rule}");
    }
    drop(prometheus);
    host.stop().await.expect("stops");
}
