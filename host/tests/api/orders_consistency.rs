//! Idempotency keys: client retries never create a second order.

use serde_json::{Value, json};

use crate::helpers::OrdersApp;

const CUSTOMER: &str = "0190b3b2-8c1a-7d2e-9f00-4a5b6c7d8e9f";

async fn post_with_key(app: &OrdersApp, key: &str, body: &Value) -> reqwest::Response {
    app.host
        .client
        .post(app.host.url("/orders/orders"))
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .expect("sent")
}

#[tokio::test]
async fn a_retry_with_the_same_key_and_body_returns_the_same_order() {
    let app = OrdersApp::spawn().await;
    let body = json!({ "customerId": CUSTOMER, "amount": 700 });

    let first = post_with_key(&app, "retry-1", &body).await;
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.expect("JSON");

    let second = post_with_key(&app, "retry-1", &body).await;
    assert_eq!(second.status(), 201);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    assert_eq!(second.json::<Value>().await.expect("JSON"), first);
    assert_eq!(app.count_orders().await, 1);
}

#[tokio::test]
async fn the_same_key_with_another_body_is_a_409_naming_the_header() {
    let app = OrdersApp::spawn().await;
    post_with_key(&app, "k", &json!({ "customerId": CUSTOMER, "amount": 1 })).await;

    let response = post_with_key(&app, "k", &json!({ "customerId": CUSTOMER, "amount": 2 })).await;

    assert_eq!(response.status(), 409);
    let problem: Value = response.json().await.expect("JSON");
    assert_eq!(problem["errors"][0]["field"], "Idempotency-Key");
    assert_eq!(app.count_orders().await, 1);
}

#[tokio::test]
async fn concurrent_posts_with_one_key_create_one_order() {
    let app = OrdersApp::spawn().await;
    let body = json!({ "customerId": CUSTOMER, "amount": 42 });

    let responses =
        futures::future::join_all((0..16).map(|_| post_with_key(&app, "burst", &body))).await;

    let mut ids = Vec::new();
    for response in responses {
        assert_eq!(response.status(), 201);
        let order: Value = response.json().await.expect("JSON");
        ids.push(order["id"].as_str().expect("id").to_owned());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every response names the same order");
    assert_eq!(app.count_orders().await, 1);
}

#[tokio::test]
async fn a_bad_idempotency_key_is_400_and_writes_nothing() {
    let app = OrdersApp::spawn().await;
    let body = json!({ "customerId": CUSTOMER, "amount": 42 });
    for key in ["has space", &"k".repeat(256)] {
        let response = post_with_key(&app, key, &body).await;
        assert_eq!(response.status(), 400);
        let problem: Value = response.json().await.expect("JSON");
        assert_eq!(problem["errors"][0]["field"], "Idempotency-Key");
    }
    assert_eq!(app.count_orders().await, 0);
}
