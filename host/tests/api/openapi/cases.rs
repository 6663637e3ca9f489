//! Every documented operation of both services, exercised for success and for each error a
//! client can cause, each real response checked against the document (see [`super::contract`]).
//! Then schemathesis, generating requests from each document: no 5xx, no undocumented status,
//! no response outside its schema.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use super::Documented;
use super::contract::{Contract, Received};
use crate::system::CUSTOMER;

/// Sends `method path` (with `headers` and a JSON or raw `body`) and checks the response
/// against the operation `template` of `contract`.
async fn exchange(
    app: &Documented,
    contract: &mut Contract,
    route: &str,
    (method, template, path): (Method, &str, &str),
    headers: &[(&str, &str)],
    body: Option<(&str, Vec<u8>)>,
) -> Received {
    let mut request = app
        .host
        .client
        .request(method.clone(), app.host.url(&format!("{route}{path}")));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some((content_type, body)) = body {
        request = request.header("content-type", content_type).body(body);
    }
    let received = Received::of(request.send().await.expect("sent")).await;
    contract.check(method.as_str(), template, &received);
    received
}

fn json_body(value: Value) -> Option<(&'static str, Vec<u8>)> {
    Some((
        "application/json",
        serde_json::to_vec(&value).expect("JSON"),
    ))
}

#[tokio::test]
async fn every_operation_answers_as_its_document_says_in_success_and_in_error() {
    let app = Documented::start().await;

    let mut orders = Contract::new(app.document("/orders", None).await);
    let o = &mut orders;
    let post = || (Method::POST, "/orders", "/orders");
    let order = json!({ "customerId": CUSTOMER, "amount": 250 });
    let created = exchange(&app, o, "/orders", post(), &[], json_body(order.clone())).await;
    assert_eq!(created.status, 201);
    let id = created.json()["id"].as_str().expect("id").to_owned();
    let key = [("idempotency-key", "0190b3b2-0000-7000-8000-000000000001")];
    assert_eq!(
        exchange(&app, o, "/orders", post(), &key, json_body(order.clone()))
            .await
            .status,
        201
    );
    let replayed = exchange(&app, o, "/orders", post(), &key, json_body(order.clone())).await;
    assert_eq!(
        (
            replayed.status,
            replayed.headers["idempotent-replayed"].to_str().ok()
        ),
        (201, Some("true"))
    );
    let other = json!({ "customerId": CUSTOMER, "amount": 999 });
    assert_eq!(
        exchange(&app, o, "/orders", post(), &key, json_body(other))
            .await
            .status,
        409
    );
    for (body, status) in [
        (json!({ "customerId": CUSTOMER, "amount": 0 }), 400),
        (json!({ "customerId": "someone", "amount": 1 }), 400),
        (json!({ "customerId": CUSTOMER }), 400),
        (
            json!({ "customerId": CUSTOMER, "amount": 1, "note": "x" }),
            400,
        ),
        (json!([1, 2]), 400),
        (json!({ "customerId": CUSTOMER, "amount": 2.5 }), 400),
        // JSON Schema's integer: a number with no fraction, however it is written.
        (json!({ "customerId": CUSTOMER, "amount": 7.0 }), 201),
    ] {
        assert_eq!(
            exchange(&app, o, "/orders", post(), &[], json_body(body))
                .await
                .status,
            status
        );
    }
    let bad_key = [("idempotency-key", "has spaces")];
    assert_eq!(
        exchange(
            &app,
            o,
            "/orders",
            post(),
            &bad_key,
            json_body(order.clone())
        )
        .await
        .status,
        400
    );
    let text = Some(("text/plain", b"250".to_vec()));
    assert_eq!(
        exchange(&app, o, "/orders", post(), &[], text).await.status,
        415
    );
    let large = Some(("application/json", vec![b' '; 17 * 1024]));
    assert_eq!(
        exchange(&app, o, "/orders", post(), &[], large)
            .await
            .status,
        413
    );

    let get = |path: String| (Method::GET, "/orders/{id}", path);
    for (path, status) in [
        (format!("/orders/{id}"), 200),
        (format!("/orders/{}", uuid::Uuid::new_v4()), 404),
        ("/orders/42".into(), 400),
    ] {
        let (method, template, path) = get(path);
        assert_eq!(
            exchange(&app, o, "/orders", (method, template, &path), &[], None)
                .await
                .status,
            status,
            "{path}"
        );
    }
    for (query, status) in [
        (
            format!("?customerId={CUSTOMER}&status=pending&limit=2"),
            200,
        ),
        (String::new(), 200),
        ("?limit=101".into(), 400),
        ("?status=shipped".into(), 400),
        ("?colour=red".into(), 400),
        ("?cursor=nope".into(), 400),
    ] {
        let path = format!("/orders{query}");
        assert_eq!(
            exchange(
                &app,
                o,
                "/orders",
                (Method::GET, "/orders", &path),
                &[],
                None
            )
            .await
            .status,
            status,
            "{path}"
        );
    }
    assert_eq!(
        exchange(
            &app,
            o,
            "/orders",
            (Method::GET, "/health", "/health"),
            &[],
            None
        )
        .await
        .status,
        200
    );
    orders.assert_every_operation_exercised();

    let mut invoices = Contract::new(app.document("/invoices", None).await);
    let i = &mut invoices;
    let list = format!("/invoices?orderId={id}");
    let started = Instant::now();
    let invoice = loop {
        let page = exchange(
            &app,
            i,
            "/invoices",
            (Method::GET, "/invoices", &list),
            &[],
            None,
        )
        .await;
        if let Some(invoice) = page.json()["items"].get(0) {
            break invoice["id"].as_str().expect("id").to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "order {id} was never invoiced"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (path, status) in [
        (format!("/invoices/{invoice}"), 200),
        (format!("/invoices/{}", uuid::Uuid::new_v4()), 404),
        ("/invoices/x".into(), 400),
    ] {
        assert_eq!(
            exchange(
                &app,
                i,
                "/invoices",
                (Method::GET, "/invoices/{id}", &path),
                &[],
                None
            )
            .await
            .status,
            status
        );
    }
    for (query, status) in [
        (format!("?customerId={CUSTOMER}&limit=1"), 200),
        ("?orderId=1".into(), 400),
        ("?limit=0".into(), 400),
    ] {
        let path = format!("/invoices{query}");
        assert_eq!(
            exchange(
                &app,
                i,
                "/invoices",
                (Method::GET, "/invoices", &path),
                &[],
                None
            )
            .await
            .status,
            status
        );
    }
    assert_eq!(
        exchange(
            &app,
            i,
            "/invoices",
            (Method::GET, "/health", "/health"),
            &[],
            None
        )
        .await
        .status,
        200
    );
    invoices.assert_every_operation_exercised();
    app.host.stop().await.expect("stops");
}

/// The checks schemathesis runs: all of them. Beyond the response checks (no 5xx, every status,
/// media type, header and body as documented), requests the document allows must be accepted
/// and requests it forbids refused, and an undocumented method must get 405.
const CHECKS: &str = "all";

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_response_outside_either_document() {
    let app = Documented::start().await;
    let scratch = crate::helpers::TempDir::new();
    for route in ["/orders", "/invoices"] {
        let schema = app.host.url(&format!("{route}/openapi.json"));
        let base = app.host.url(route);
        // Generated requests, each response checked; fixed seed, so a failure reproduces.
        let mut schemathesis = super::python_tool("schemathesis");
        schemathesis
            .args(["run", &schema, "--url", &base, "--checks", CHECKS])
            .args([
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                "30",
                "--seed",
                "7",
            ])
            .args(["--no-color"])
            .env("SCHEMATHESIS_TELEMETRY", "false")
            // It keeps a folder of its own where it runs.
            .current_dir(&scratch.0);
        let said = tokio::task::spawn_blocking(move || super::run(&mut schemathesis))
            .await
            .expect("ran");
        assert!(!said.contains("FAILED"), "{route}: {said}");
    }
    app.host.stop().await.expect("stops");
}
