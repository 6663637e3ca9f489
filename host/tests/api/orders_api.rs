//! The Orders HTTP API through the host, case by case.

use serde_json::{Value, json};

use crate::helpers::OrdersApp;

const CUSTOMER: &str = "0190b3b2-8c1a-7d2e-9f00-4a5b6c7d8e9f";

async fn problem(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(content_type, "application/problem+json", "status {status}");
    (status, response.json().await.expect("problem JSON"))
}

#[tokio::test]
async fn a_valid_order_is_created_stored_and_found_at_its_location() {
    let app = OrdersApp::spawn().await;

    let response = app
        .post_order(&json!({ "customerId": CUSTOMER, "amount": 100 }))
        .await;

    assert_eq!(response.status(), 201);
    let location = response.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let order: Value = response.json().await.expect("order JSON");
    assert_eq!(order["customerId"], CUSTOMER);
    assert_eq!(order["amount"], 100);
    assert_eq!(order["status"], "pending");
    assert!(
        order["createdAt"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{order}"
    );
    let id = order["id"].as_str().expect("id");
    assert_eq!(location, format!("/orders/orders/{id}"));

    // The 201 means committed: a GET right after finds it, and so does the database.
    let found = app.get(&location).await;
    assert_eq!(found.status(), 200);
    assert_eq!(found.json::<Value>().await.expect("JSON"), order);
    assert_eq!(app.count_orders().await, 1);
}

#[tokio::test]
async fn bad_bodies_are_refused_with_the_field_named_and_nothing_written() {
    let app = OrdersApp::spawn().await;
    let cases = [
        (json!({ "amount": 100 }), "customerId", "is required"),
        (json!({ "customerId": CUSTOMER }), "amount", "is required"),
        (
            json!({ "customerId": "not-a-uuid", "amount": 100 }),
            "customerId",
            "must be a UUID",
        ),
        (
            json!({ "customerId": 42, "amount": 100 }),
            "customerId",
            "must be a string",
        ),
        (
            json!({ "customerId": CUSTOMER, "amount": "100" }),
            "amount",
            "must be a number",
        ),
        (
            json!({ "customerId": CUSTOMER, "amount": 0 }),
            "amount",
            "greater than 0",
        ),
        (
            json!({ "customerId": CUSTOMER, "amount": -3 }),
            "amount",
            "greater than 0",
        ),
        (
            json!({ "customerId": CUSTOMER, "amount": 2.5 }),
            "amount",
            "whole number",
        ),
        (
            json!({ "customerId": CUSTOMER, "amount": 100_000_000_001_i64 }),
            "amount",
            "at most",
        ),
        (
            json!({ "customerId": CUSTOMER, "amount": 5, "note": "x" }),
            "note",
            "not a known field",
        ),
    ];
    for (body, field, says) in cases {
        let (status, problem) = problem(app.post_order(&body).await).await;
        assert_eq!(status, 400, "{body} → {problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{body} → {problem}");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .contains(says),
            "{body} → {problem}"
        );
    }
    assert_eq!(app.count_orders().await, 0);
}

#[tokio::test]
async fn malformed_json_and_non_objects_are_400_problems() {
    let app = OrdersApp::spawn().await;
    for body in ["{\"customerId\":", "[1,2]", "null", ""] {
        let (status, problem) =
            problem(app.post_raw("application/json", body.to_owned()).await).await;
        assert_eq!(status, 400, "{body:?} → {problem}");
    }
    assert_eq!(app.count_orders().await, 0);
}

#[tokio::test]
async fn a_wrong_content_type_is_415_naming_the_header() {
    let app = OrdersApp::spawn().await;
    let response = app
        .post_raw(
            "text/plain",
            format!("{{\"customerId\":\"{CUSTOMER}\",\"amount\":1}}"),
        )
        .await;
    let (status, problem) = problem(response).await;
    assert_eq!(status, 415);
    assert_eq!(problem["errors"][0]["field"], "Content-Type");
    assert_eq!(app.count_orders().await, 0);
}

#[tokio::test]
async fn bodies_over_the_limits_are_413() {
    let app = OrdersApp::spawn().await;
    // Over the component's 16 KiB limit, under the host's 1 MiB one.
    let padded = format!(
        "{{\"customerId\":\"{CUSTOMER}\",\"amount\":1{}}}",
        " ".repeat(17 * 1024)
    );
    // Over the host's limit: refused before any component runs.
    let huge = "x".repeat(2 * 1024 * 1024);
    for body in [padded, huge] {
        assert_eq!(
            problem(app.post_raw("application/json", body).await)
                .await
                .0,
            413
        );
    }
    assert_eq!(app.count_orders().await, 0);
}

#[tokio::test]
async fn wrong_methods_are_405_with_allow() {
    let app = OrdersApp::spawn().await;
    let response = app
        .host
        .client
        .delete(app.host.url("/orders/orders"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.headers()["allow"], "GET, POST");
    assert_eq!(problem(response).await.0, 405);

    let id = "0190b3b2-8c1a-7d2e-9f00-4a5b6c7d8e9f";
    let response = app
        .host
        .client
        .put(app.host.url(&format!("/orders/orders/{id}")))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.headers()["allow"], "GET");
    assert_eq!(problem(response).await.0, 405);
}

#[tokio::test]
async fn a_malformed_id_is_400_and_an_unknown_one_404() {
    let app = OrdersApp::spawn().await;
    let (status, body) = problem(app.get("/orders/orders/12345").await).await;
    assert_eq!(status, 400);
    assert_eq!(body["errors"][0]["field"], "id");
    assert_eq!(body["errors"][0]["in"], "path");

    let (status, _) = problem(
        app.get("/orders/orders/0190b3b2-8c1a-7d2e-9f00-4a5b6c7d8e9f")
            .await,
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn unknown_paths_are_404_problems_from_the_host_and_the_component() {
    let app = OrdersApp::spawn().await;
    assert_eq!(problem(app.get("/nowhere").await).await.0, 404);
    assert_eq!(problem(app.get("/ordersx").await).await.0, 404);
    assert_eq!(problem(app.get("/orders/nothing-here").await).await.0, 404);
}

#[tokio::test]
async fn the_list_pages_newest_first_and_filters_by_customer() {
    let app = OrdersApp::spawn().await;
    let other = "0190b3b2-8c1a-7d2e-9f00-000000000001";
    let mut mine = Vec::new();
    for amount in 1..=5 {
        let order: Value = app
            .post_order(&json!({ "customerId": CUSTOMER, "amount": amount }))
            .await
            .json()
            .await
            .expect("JSON");
        mine.push(order["id"].as_str().expect("id").to_owned());
        app.post_order(&json!({ "customerId": other, "amount": amount }))
            .await;
    }
    mine.reverse();

    let mut seen = Vec::new();
    let mut path = format!("/orders/orders?customerId={CUSTOMER}&limit=2");
    loop {
        let page: Value = app.get(&path).await.json().await.expect("JSON");
        for item in page["items"].as_array().expect("items") {
            assert_eq!(item["customerId"], CUSTOMER);
            seen.push(item["id"].as_str().expect("id").to_owned());
        }
        match page["nextCursor"].as_str() {
            Some(cursor) => {
                path = format!("/orders/orders?customerId={CUSTOMER}&limit=2&cursor={cursor}")
            }
            None => break,
        }
    }
    assert_eq!(seen, mine);

    let all: Value = app
        .get("/orders/orders?limit=100")
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(all["items"].as_array().map(Vec::len), Some(10));
    assert_eq!(all["nextCursor"], Value::Null);
}

#[tokio::test]
async fn bad_list_parameters_are_400_naming_the_parameter() {
    let app = OrdersApp::spawn().await;
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("customerId=nope", "customerId"),
        ("cursor=abc", "cursor"),
        ("status=shipped", "status"),
        ("sort=asc", "sort"),
        ("limit=1&limit=2", "limit"),
    ] {
        let (status, body) = problem(app.get(&format!("/orders/orders?{query}")).await).await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(body["errors"][0]["field"], field, "{query}");
        assert_eq!(body["errors"][0]["in"], "query", "{query}");
    }
}

#[tokio::test]
async fn health_is_up_on_the_host_and_in_the_component() {
    let app = OrdersApp::spawn().await;
    // The broker connects in the background; until it does the host is `degraded`, not down.
    let mut host: Value = app.get("/health").await.json().await.expect("JSON");
    for _ in 0..100 {
        if host["status"] != "degraded" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        host = app.get("/health").await.json().await.expect("JSON");
    }
    assert_eq!(host["status"], "up", "{host}");
    assert_eq!(host["checks"]["orders.database"], "up");
    assert_eq!(host["checks"]["orders.broker"], "up");
    let component = app.get("/orders/health").await;
    assert_eq!(component.status(), 200);
}

#[tokio::test]
async fn a_repeated_or_misspelt_member_is_named() {
    let app = OrdersApp::spawn().await;
    let cases = [
        (
            format!("{{\"customerId\":\"{CUSTOMER}\",\"amount\":1,\"amount\":999}}"),
            "amount",
            "more than once",
        ),
        (
            format!("{{\"customer_id\":\"{CUSTOMER}\",\"amount\":1}}"),
            "customer_id",
            "not a known field",
        ),
    ];
    for (body, field, says) in cases {
        let (status, problem) = problem(app.post_raw("application/json", body.clone()).await).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(problem["errors"][0]["field"], field, "{body} → {problem}");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .contains(says),
            "{body} → {problem}"
        );
    }
    assert_eq!(app.count_orders().await, 0);
}
