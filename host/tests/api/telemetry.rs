//! Traces and metrics of the real host process: one trace from the client's request to the
//! invoice and back across the outbox and the broker, exported over OTLP to a real receiver;
//! a collector that is away or never answers; and what `/metrics` shows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{self, TcpProxy, TestBroker, TestDatabase};
use crate::otlp::{self, Received, Receiver};
use crate::process::HostProcess;
use crate::system::CUSTOMER;

/// OTLP span kinds.
const SERVER: i32 = 2;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;

pub(crate) struct Traced {
    pub host: HostProcess,
    pub orders: Arc<TestDatabase>,
    pub broker: TestBroker,
    pub invoices: Arc<TestDatabase>,
}

/// Orders and Invoices in one host process, on `amqp_url`, exporting to `endpoint`.
pub(crate) async fn start(
    amqp: impl FnOnce(&TestBroker) -> String,
    otel: &[(&str, String)],
) -> Traced {
    let orders = Arc::new(TestDatabase::create().await);
    let invoices = Arc::new(TestDatabase::create().await);
    let broker = TestBroker::new();
    let manifest = helpers::manifest(
        &broker,
        &amqp(&broker),
        &[("orders", &orders.url()), ("invoices", &invoices.url())],
    );
    let host = HostProcess::start(&manifest, otel).await;
    Traced {
        host,
        orders,
        broker,
        invoices,
    }
}

pub(crate) fn exporting_to(endpoint: String) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
    ]
}

/// A client's trace context: a fresh trace id, and the client's own span id.
pub(crate) fn client_context() -> (String, String, String) {
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let span_id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    let traceparent = format!("00-{trace_id}-{span_id}-01");
    (trace_id, span_id, traceparent)
}

impl Traced {
    pub(crate) async fn post_order(&self, traceparent: &str) -> String {
        let response = self
            .host
            .client
            .post(self.host.url("/orders/orders"))
            .header("traceparent", traceparent)
            .json(&json!({ "customerId": CUSTOMER, "amount": 4200 }))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 201);
        let order: serde_json::Value = response.json().await.expect("JSON");
        order["id"].as_str().expect("id").to_owned()
    }

    async fn wait_until_invoiced(&self, id: &str) {
        let statement =
            format!("SELECT count(*) FROM orders WHERE id = '{id}' AND status = 'invoiced'");
        crate::system::System::wait_for_count(&self.orders, &statement, 1, Duration::from_secs(30))
            .await;
    }
}

pub(crate) fn one<'a>(spans: &'a [Received], name: &str) -> &'a Received {
    let found: Vec<&Received> = spans.iter().filter(|span| span.name == name).collect();
    assert_eq!(
        found.len(),
        1,
        "one span named {name:?} expected:\n{}",
        otlp::tree(spans)
    );
    found[0]
}

fn children<'a>(spans: &'a [Received], parent: &Received) -> Vec<&'a Received> {
    spans
        .iter()
        .filter(|span| span.parent_span_id == parent.span_id)
        .collect()
}

/// Whether `span` descends from `ancestor`.
fn descends(spans: &[Received], span: &Received, ancestor: &Received) -> bool {
    let mut parent = span.parent_span_id.clone();
    while let Some(up) = spans.iter().find(|candidate| candidate.span_id == parent) {
        if up.span_id == ancestor.span_id {
            return true;
        }
        parent = up.parent_span_id.clone();
    }
    false
}

/// Whether every span of the flow has arrived, down to Orders' handling of the invoice with its
/// statements. (Each service's spans of a batch go in an export of their own, so they arrive
/// in any order.)
fn complete(spans: &[Received]) -> bool {
    let names = [
        "POST /orders/orders",
        "create orders.created",
        "publish orders.created",
        "process orders.created",
        "create invoices.issued",
        "publish invoices.issued",
        "process invoices.issued",
    ];
    let named = names
        .iter()
        .all(|name| spans.iter().any(|span| span.name == *name));
    let inserts = ["orders", "invoices"].iter().all(|service| {
        spans
            .iter()
            .any(|span| span.name == "INSERT" && span.service == *service)
    });
    let processed = spans
        .iter()
        .find(|span| span.name == "process invoices.issued");
    let updated = processed.is_some_and(|process| {
        spans
            .iter()
            .any(|span| span.name == "UPDATE" && descends(spans, span, process))
    });
    named && inserts && updated
}

/// Checks the relay's `publish` spans named `name` continue the outbox write `written` and one
/// of them is the parent of the delivery `processed`. There is more than one publish when the
/// first found no queue bound yet (the consumer had not declared it): each is a child of the
/// write.
fn relayed(spans: &[Received], name: &str, written: &Received, processed: &Received) {
    let tree = otlp::tree(spans);
    let publishes: Vec<&Received> = spans.iter().filter(|span| span.name == name).collect();
    assert!(!publishes.is_empty(), "{tree}");
    for publish in &publishes {
        assert_eq!(
            publish.parent_span_id, written.span_id,
            "the relay continues the writer's context:\n{tree}"
        );
        assert_eq!(
            (publish.service.as_str(), publish.kind),
            ("host", PRODUCER),
            "{tree}"
        );
    }
    assert!(
        publishes
            .iter()
            .any(|publish| processed.parent_span_id == publish.span_id),
        "the delivery's parent is the relay's publish:\n{tree}"
    );
}

/// Checks the whole flow is one trace: the client's request → Orders → the relay → the broker →
/// Invoices → the relay → Orders marking the order invoiced.
fn assert_one_connected_trace(spans: &[Received], client_span: &str) {
    let tree = otlp::tree(spans);
    let server = one(spans, "POST /orders/orders");
    assert_eq!(
        server.parent_span_id, client_span,
        "the request continues the client's trace:\n{tree}"
    );
    assert_eq!(
        (server.service.as_str(), server.kind),
        ("orders", SERVER),
        "{tree}"
    );
    assert_eq!(
        server.attribute("http.route"),
        Some("/orders/orders"),
        "{tree}"
    );
    assert_eq!(
        server.attribute("http.response.status_code"),
        Some("201"),
        "{tree}"
    );

    let created = one(spans, "create orders.created");
    assert!(
        descends(spans, created, server),
        "the outbox write is part of the request:\n{tree}"
    );
    let insert = spans.iter().find(|span| {
        span.name == "INSERT" && span.service == "orders" && descends(spans, span, server)
    });
    let insert = insert.unwrap_or_else(|| panic!("the order's INSERT is in the request:\n{tree}"));
    assert_eq!(insert.attribute("db.system.name"), Some("postgresql"));
    assert!(
        insert
            .attribute("db.query.text")
            .is_some_and(|text| text.contains("$1")),
        "statements, never values:\n{tree}"
    );

    let process_orders = one(spans, "process orders.created");
    relayed(spans, "publish orders.created", created, process_orders);
    assert_eq!(
        (process_orders.service.as_str(), process_orders.kind),
        ("invoices", CONSUMER),
        "{tree}"
    );
    assert!(
        spans.iter().any(|span| span.service == "invoices"
            && span.name == "INSERT"
            && descends(spans, span, process_orders)),
        "the invoice's INSERT is in the delivery:\n{tree}"
    );

    let issued = one(spans, "create invoices.issued");
    assert!(descends(spans, issued, process_orders), "{tree}");
    let process_invoices = one(spans, "process invoices.issued");
    relayed(spans, "publish invoices.issued", issued, process_invoices);
    assert_eq!(process_invoices.service, "orders", "{tree}");
    assert!(!children(spans, process_invoices).is_empty(), "{tree}");
}

#[tokio::test]
async fn one_order_is_one_trace_from_the_clients_request_to_the_invoice_and_back() {
    let receiver = Receiver::start().await;
    let traced = start(|_| helpers::amqp_base(), &exporting_to(receiver.endpoint())).await;
    traced.host.wait_until_broker_up().await;
    traced.broker.wait_for_consumer("invoices").await;
    traced.broker.wait_for_consumer("orders").await;
    let (trace_id, client_span, traceparent) = client_context();

    let id = traced.post_order(&traceparent).await;
    traced.wait_until_invoiced(&id).await;

    let spans = receiver
        .wait_for(&trace_id, Duration::from_secs(20), complete)
        .await;
    println!("the trace of one order:\n{}", otlp::tree(&spans));
    assert_one_connected_trace(&spans, &client_span);
    let services: std::collections::BTreeSet<&str> =
        spans.iter().map(|span| span.service.as_str()).collect();
    assert_eq!(
        services,
        ["host", "invoices", "orders"].into(),
        "{}",
        otlp::tree(&spans)
    );

    let status = traced.host.stop().await;
    assert!(status.success(), "the host stops cleanly: {status}");
}

#[tokio::test]
async fn a_retried_delivery_stays_in_the_orders_trace_with_the_reason_as_an_event() {
    let receiver = Receiver::start().await;
    let traced = start(|_| helpers::amqp_base(), &exporting_to(receiver.endpoint())).await;
    crate::system::make_invoices_flaky(&traced.invoices, 1).await;
    traced.host.wait_until_broker_up().await;
    traced.broker.wait_for_consumer("invoices").await;
    traced.broker.wait_for_consumer("orders").await;
    let (trace_id, client_span, traceparent) = client_context();

    let id = traced.post_order(&traceparent).await;
    traced.wait_until_invoiced(&id).await;

    let spans = receiver
        .wait_for(&trace_id, Duration::from_secs(20), complete)
        .await;
    let tree = otlp::tree(&spans);
    let publishes: Vec<&str> = spans
        .iter()
        .filter(|span| span.name == "publish orders.created")
        .map(|span| span.span_id.as_str())
        .collect();
    let deliveries: Vec<&Received> = spans
        .iter()
        .filter(|span| span.name == "process orders.created")
        .collect();
    assert_eq!(
        deliveries.len(),
        2,
        "the first attempt and the retry:\n{tree}"
    );
    assert_eq!(
        deliveries[0].parent_span_id, deliveries[1].parent_span_id,
        "the retry keeps the publisher's context:\n{tree}"
    );
    assert!(
        publishes.contains(&deliveries[0].parent_span_id.as_str()),
        "{tree}"
    );
    let attempts: Vec<&str> = deliveries
        .iter()
        .filter_map(|delivery| delivery.attribute("attempt"))
        .collect();
    assert!(
        attempts.contains(&"1") && attempts.contains(&"2"),
        "{attempts:?}"
    );
    let first = deliveries
        .iter()
        .find(|delivery| delivery.attribute("attempt") == Some("1"))
        .expect("attempt 1");
    assert_eq!(first.attribute("outcome"), Some("retried"), "{first:?}");
    assert!(
        first
            .events
            .iter()
            .any(|event| event.contains("retrying later")),
        "{first:?}"
    );
    let server = one(&spans, "POST /orders/orders");
    assert_eq!(server.parent_span_id, client_span);
}

#[tokio::test]
async fn spans_go_over_grpc_when_the_protocol_says_so() {
    let receiver = Receiver::start_grpc().await;
    let mut otel = exporting_to(receiver.endpoint());
    otel.push(("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".into()));
    otel.push(("OTEL_SERVICE_NAME", "edge-host".into()));
    let traced = start(|_| helpers::amqp_base(), &otel).await;
    let (trace_id, client_span, traceparent) = client_context();

    traced.post_order(&traceparent).await;

    let arrived = |spans: &[Received]| {
        ["POST /orders/orders", "publish orders.created"]
            .iter()
            .all(|name| spans.iter().any(|span| span.name == *name))
    };
    let spans = receiver
        .wait_for(&trace_id, Duration::from_secs(20), arrived)
        .await;
    let server = one(&spans, "POST /orders/orders");
    assert_eq!(
        (server.parent_span_id.as_str(), server.service.as_str()),
        (client_span.as_str(), "orders")
    );
    // (More than one publish when the first came before the consumer had bound its queue.)
    for publish in spans
        .iter()
        .filter(|span| span.name == "publish orders.created")
    {
        assert_eq!(
            publish.service, "edge-host",
            "OTEL_SERVICE_NAME names the host's own spans"
        );
    }
}

#[tokio::test]
async fn a_guests_log_lines_carry_its_trace_and_become_events_of_its_span() {
    let receiver = Receiver::start().await;
    let db = TestDatabase::create().await;
    let broker = TestBroker::new();
    let manifest = format!(
        "{}\n[[components]]\nname = \"misbehave\"\nwasm = \"{}\"\nroute = \"/misbehave\"\n\
         database_url = \"{}\"\n",
        helpers::manifest(&broker, &helpers::amqp_base(), &[]),
        helpers::component_wasm("misbehave").display(),
        db.url(),
    );
    let host = HostProcess::start(&manifest, &exporting_to(receiver.endpoint())).await;
    let (trace_id, _, traceparent) = client_context();

    let response = host
        .client
        .get(host.url("/misbehave/log"))
        .header("traceparent", traceparent)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);

    let spans = receiver
        .wait_for(&trace_id, Duration::from_secs(20), |spans| {
            spans.iter().any(|s| s.name == "component.call")
        })
        .await;
    let call = one(&spans, "component.call");
    assert!(
        call.events.iter().any(|event| event == "a line on stdout"),
        "{call:?}"
    );
    assert!(
        call.events.iter().any(|event| event == "a line on stderr"),
        "{call:?}"
    );
    let lines: Vec<serde_json::Value> = host
        .log()
        .into_iter()
        .filter(|line| line["target"] == "component")
        .collect();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    for line in &lines {
        assert_eq!(line["component"], "misbehave", "{line}");
        assert_eq!(line["trace_id"], trace_id.as_str(), "{line}");
        assert_eq!(
            line["span_id"],
            call.span_id.as_str(),
            "the span the guest was running in: {line}"
        );
        assert!(
            line["timestamp"].is_string() && line["level"].is_string(),
            "{line}"
        );
    }
}

#[tokio::test]
async fn with_the_broker_away_the_event_waits_in_the_outbox_and_its_trace_still_connects() {
    let receiver = Receiver::start().await;
    let proxy = TcpProxy::start("127.0.0.1:5672").await;
    proxy.set_up(false);
    let traced = start(|_| proxy.amqp_url(), &exporting_to(receiver.endpoint())).await;
    let (trace_id, client_span, traceparent) = client_context();

    let id = traced.post_order(&traceparent).await;
    let metrics = wait_for_metric(
        &traced.host,
        "outbox_backlog_events{component=\"orders\"}",
        1.0,
    )
    .await;
    assert_eq!(
        metric(&metrics, "messaging_broker_connected{component=\"orders\"}"),
        Some(0.0),
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "outbox_oldest_unsent_age_seconds{component=\"orders\"}"
        )
        .is_some_and(|age| age >= 0.0),
        "{metrics}"
    );

    proxy.set_up(true);
    traced.wait_until_invoiced(&id).await;
    let spans = receiver
        .wait_for(&trace_id, Duration::from_secs(30), complete)
        .await;
    assert_one_connected_trace(&spans, &client_span);
    let metrics = wait_for_metric(
        &traced.host,
        "outbox_backlog_events{component=\"orders\"}",
        0.0,
    )
    .await;
    assert_eq!(
        metric(&metrics, "messaging_broker_connected{component=\"orders\"}"),
        Some(1.0),
        "{metrics}"
    );
}

/// The value of the sample named exactly `series` (name and labels as exposed), if present.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .split(' ')
            .next()?
            .parse()
            .ok()
    })
}

async fn wait_for_metric(host: &HostProcess, series: &str, value: f64) -> String {
    let started = Instant::now();
    loop {
        let text = host.metrics().await;
        if metric(&text, series) == Some(value) {
            return text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{series} never became {value}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) async fn wait_for_metric_above(host: &HostProcess, series: &str, floor: f64) -> String {
    let started = Instant::now();
    loop {
        let text = host.metrics().await;
        if metric(&text, series).is_some_and(|value| value > floor) {
            return text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{series} never rose above {floor}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn metrics_count_requests_units_of_work_and_every_fate_of_an_event() {
    let system = crate::system::System::start().await;
    crate::system::make_invoices_flaky(&system.invoices, 1).await;
    system.wait_for_health("up").await;

    let order = system.post_order(300).await;
    let id = order["id"].as_str().expect("id");
    let invoiced = format!("SELECT count(*) FROM orders WHERE id = '{id}' AND status = 'invoiced'");
    crate::system::System::wait_for_count(&system.orders, &invoiced, 1, Duration::from_secs(20))
        .await;
    system
        .broker
        .publish("orders.created", b"{ not an event")
        .await;
    crate::system::wait_for_dead_letter(&system.broker.dead_letters("invoices")).await;
    let missing = system
        .host
        .client
        .get(
            system
                .host
                .url(&format!("/orders/orders/{}", uuid::Uuid::new_v4())),
        )
        .send()
        .await;
    assert_eq!(missing.expect("sent").status(), 404);

    // Each count is made when its work is done (after the ack, the commit, the next scrape):
    // wait until all are in.
    let expected = [
        (
            "http_server_request_duration_seconds_count{component=\"orders\",\
             http_route=\"/orders/orders\",http_request_method=\"POST\",\
             http_response_status_class=\"2xx\"}",
            1.0,
        ),
        (
            "http_server_request_duration_seconds_count{component=\"orders\",\
             http_route=\"/orders/orders/{id}\",http_request_method=\"GET\",\
             http_response_status_class=\"4xx\"}",
            1.0,
        ),
        (
            "units_of_work_total{component=\"orders\",trigger=\"http\",outcome=\"committed\"}",
            2.0,
        ),
        (
            "units_of_work_total{component=\"invoices\",trigger=\"message\",\
             outcome=\"rolled_back\"}",
            1.0,
        ),
        (
            "units_of_work_total{component=\"invoices\",trigger=\"message\",outcome=\"committed\"}",
            1.0,
        ),
        (
            "messaging_events_published_total{component=\"orders\",topic=\"orders.created\"}",
            1.0,
        ),
        (
            "messaging_events_relayed_total{component=\"orders\",topic=\"orders.created\"}",
            1.0,
        ),
        (
            "messaging_events_relayed_total{component=\"invoices\",topic=\"invoices.issued\"}",
            1.0,
        ),
        (
            "messaging_deliveries_total{component=\"invoices\",topic=\"orders.created\",\
             outcome=\"retried\"}",
            1.0,
        ),
        (
            "messaging_deliveries_total{component=\"invoices\",topic=\"orders.created\",\
             outcome=\"handled\"}",
            1.0,
        ),
        (
            "messaging_deliveries_total{component=\"invoices\",topic=\"orders.created\",\
             outcome=\"dead_lettered\"}",
            1.0,
        ),
        (
            "messaging_deliveries_total{component=\"orders\",topic=\"invoices.issued\",\
             outcome=\"handled\"}",
            1.0,
        ),
        (
            "messaging_event_lag_seconds_count{component=\"invoices\",topic=\"orders.created\"}",
            1.0,
        ),
        ("messaging_broker_connected{component=\"orders\"}", 1.0),
        ("messaging_broker_connected{component=\"invoices\"}", 1.0),
        ("outbox_backlog_events{component=\"orders\"}", 0.0),
        ("outbox_backlog_events{component=\"invoices\"}", 0.0),
        ("wasm_instances_running{component=\"orders\"}", 0.0),
        ("db_client_connection_max{component=\"orders\"}", 8.0),
    ];
    let started = Instant::now();
    let text = loop {
        let text = system
            .host
            .client
            .get(system.host.admin_url("/metrics"))
            .send()
            .await
            .expect("sent")
            .text()
            .await
            .expect("text");
        let wrong: Vec<String> = expected
            .iter()
            .filter(|(series, value)| metric(&text, series) != Some(*value))
            .map(|(series, value)| format!("{series} is {:?}, not {value}", metric(&text, series)))
            .collect();
        if wrong.is_empty() {
            break text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{}\n{text}",
            wrong.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        metric(
            &text,
            "db_client_connection_count{component=\"orders\",state=\"idle\"}"
        )
        .is_some(),
        "{text}"
    );
    assert!(
        metric(
            &text,
            "db_client_operation_duration_seconds_count{component=\"orders\",\
             db_operation_name=\"INSERT\"}",
        )
        .is_some_and(|count| count >= 1.0),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"));
}
