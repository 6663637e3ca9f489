//! Orders and Invoices over the real broker: events flow, are never lost, never applied twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use contracts::OrderId;
use contracts::events::{Event, OrderCreated};
use serde_json::{Value, json};

use crate::helpers::{self, TcpProxy, TestBroker, TestDatabase, TestHost};
use crate::system::{
    CUSTOMER, System, make_invoices_flaky, new_id, order_created, reason, wait_for_dead_letter,
};

#[tokio::test]
async fn a_posted_order_gets_its_invoice_and_becomes_invoiced() {
    let system = System::start().await;
    system.wait_for_health("up").await;

    let started = Instant::now();
    let order = system.post_order(1999).await;
    let id = order["id"].as_str().expect("id");
    let invoiced = loop {
        let current = system.get(&format!("/orders/orders/{id}")).await;
        if current["status"] == "invoiced" {
            break current;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not invoiced: {current}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    eprintln!("order → invoiced in {:?}", started.elapsed());

    let page = system
        .get(&format!("/invoices/invoices?orderId={id}"))
        .await;
    let invoices = page["items"].as_array().expect("items");
    assert_eq!(invoices.len(), 1, "{page}");
    assert_eq!(invoices[0]["amount"], 1999);
    assert_eq!(invoices[0]["status"], "issued");
    assert_eq!(invoices[0]["customerId"], CUSTOMER);
    assert_eq!(invoiced["invoiceId"], invoices[0]["id"]);
    let invoice = system
        .get(&format!(
            "/invoices/invoices/{}",
            invoices[0]["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(invoice["orderId"], id);
}

#[tokio::test]
async fn a_broker_outage_loses_no_order_and_doubles_no_invoice() {
    let proxy = TcpProxy::start("127.0.0.1:5672").await;
    let system = System::start_with(|_| proxy.amqp_url()).await;
    system.wait_for_health("up").await;

    proxy.set_up(false);
    system.wait_for_health("down").await;
    for amount in 1..=200 {
        system.post_order(amount).await;
    }
    let health = system.get("/health").await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(
        System::count(&system.orders, "SELECT count(*) FROM orders").await,
        200
    );
    assert_eq!(
        System::count(&system.invoices, "SELECT count(*) FROM invoices").await,
        0
    );

    proxy.set_up(true);
    System::wait_for_count(
        &system.invoices,
        "SELECT count(*) FROM invoices",
        200,
        Duration::from_secs(60),
    )
    .await;
    System::wait_for_count(
        &system.orders,
        "SELECT count(*) FROM orders WHERE status = 'invoiced'",
        200,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        System::count(
            &system.invoices,
            "SELECT count(DISTINCT order_id) FROM invoices"
        )
        .await,
        200
    );
    assert_eq!(
        System::count(
            &system.orders,
            "SELECT count(*) FROM platform_outbox WHERE sent_at IS NULL"
        )
        .await,
        0
    );
    // A little longer: nothing more arrives.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        System::count(&system.invoices, "SELECT count(*) FROM invoices").await,
        200
    );
}

#[tokio::test]
async fn a_broker_unreachable_at_start_still_accepts_orders_and_catches_up() {
    let proxy = TcpProxy::start("127.0.0.1:5672").await;
    proxy.set_up(false);
    let system = System::start_with(|_| proxy.amqp_url()).await;

    let order = system.post_order(10).await;
    assert_eq!(system.get("/health").await["status"], "degraded");

    proxy.set_up(true);
    System::wait_for_count(
        &system.invoices,
        "SELECT count(*) FROM invoices",
        1,
        Duration::from_secs(30),
    )
    .await;
    let id = order["id"].as_str().expect("id");
    let page = system
        .get(&format!("/invoices/invoices?orderId={id}"))
        .await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn the_same_event_delivered_twice_makes_one_invoice() {
    let system = System::start().await;
    system.wait_for_health("up").await;
    let order: OrderId = new_id();
    let body = order_created(order, new_id());

    system.broker.publish(OrderCreated::TOPIC, &body).await;
    system.broker.publish(OrderCreated::TOPIC, &body).await;

    System::wait_for_count(
        &system.invoices,
        "SELECT count(*) FROM platform_inbox",
        1,
        Duration::from_secs(10),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        System::count(&system.invoices, "SELECT count(*) FROM invoices").await,
        1
    );
}

#[tokio::test]
async fn the_same_order_under_two_event_ids_still_makes_one_invoice() {
    let system = System::start().await;
    system.wait_for_health("up").await;
    let order: OrderId = new_id();

    system
        .broker
        .publish(OrderCreated::TOPIC, &order_created(order, new_id()))
        .await;
    system
        .broker
        .publish(OrderCreated::TOPIC, &order_created(order, new_id()))
        .await;

    System::wait_for_count(
        &system.invoices,
        "SELECT count(*) FROM platform_inbox",
        2,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        System::count(&system.invoices, "SELECT count(*) FROM invoices").await,
        1
    );
}

#[tokio::test]
async fn a_handler_failing_twice_succeeds_on_the_third_attempt_with_one_invoice() {
    let system = System::start().await;
    make_invoices_flaky(&system.invoices, 2).await;
    system.wait_for_health("up").await;

    system.post_order(77).await;

    System::wait_for_count(
        &system.invoices,
        "SELECT count(*) FROM invoices",
        1,
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(
        System::count(&system.invoices, "SELECT last_value FROM invoices_inserts").await,
        3
    );
    System::wait_for_count(
        &system.orders,
        "SELECT count(*) FROM orders WHERE status = 'invoiced'",
        1,
        Duration::from_secs(10),
    )
    .await;
}

#[tokio::test]
async fn exhausted_retries_go_to_the_dead_letter_queue() {
    let system = System::start().await;
    make_invoices_flaky(&system.invoices, 1_000).await;
    system.wait_for_health("up").await;

    system
        .broker
        .publish(OrderCreated::TOPIC, &order_created(new_id(), new_id()))
        .await;

    let dead = wait_for_dead_letter(&system.broker.dead_letters("invoices")).await;
    assert!(
        reason(&dead).contains("gave up after 3 attempts"),
        "{}",
        reason(&dead)
    );
    assert_eq!(
        System::count(&system.invoices, "SELECT last_value FROM invoices_inserts").await,
        3
    );
    assert_eq!(
        System::count(&system.invoices, "SELECT count(*) FROM invoices").await,
        0
    );
}

#[tokio::test]
async fn a_malformed_message_is_dead_lettered_and_the_consumer_keeps_going() {
    let system = System::start().await;
    system.wait_for_health("up").await;

    system
        .broker
        .publish(OrderCreated::TOPIC, b"{ this is not an event")
        .await;
    let dead = wait_for_dead_letter(&system.broker.dead_letters("invoices")).await;
    assert!(reason(&dead).contains("undecodable"), "{}", reason(&dead));
    assert_eq!(dead.delivery.data, b"{ this is not an event");

    system.post_order(5).await;
    System::wait_for_count(
        &system.invoices,
        "SELECT count(*) FROM invoices",
        1,
        Duration::from_secs(10),
    )
    .await;
}

#[tokio::test]
async fn an_event_of_an_unknown_schema_version_is_rejected_to_the_dead_letter_queue() {
    let system = System::start().await;
    system.wait_for_health("up").await;
    let body = order_created(new_id(), new_id());
    let mut envelope: Value = serde_json::from_slice(&body).expect("JSON");
    envelope["dataschema"] = json!("urn:contracts:orders.created:v9");

    system
        .broker
        .publish(
            OrderCreated::TOPIC,
            &serde_json::to_vec(&envelope).expect("JSON"),
        )
        .await;

    let dead = wait_for_dead_letter(&system.broker.dead_letters("invoices")).await;
    assert!(reason(&dead).contains("v9"), "{}", reason(&dead));
    assert_eq!(
        System::count(&system.invoices, "SELECT count(*) FROM invoices").await,
        0
    );
}

#[tokio::test]
async fn two_hosts_competing_for_one_queue_invoice_each_order_once() {
    let invoices = Arc::new(TestDatabase::create().await);
    let broker = TestBroker::new();
    let manifest = helpers::manifest(
        &broker,
        &helpers::amqp_base(),
        &[("invoices", &invoices.url())],
    );
    let (first, second) = tokio::join!(TestHost::start(&manifest), TestHost::start(&manifest));
    for host in [&first, &second] {
        let started = Instant::now();
        loop {
            let health: Value = host
                .client
                .get(host.url("/health"))
                .send()
                .await
                .expect("sent")
                .json()
                .await
                .expect("JSON");
            if health["checks"]["invoices.broker"] == "up" {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "{health}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Both consumers are attached once the queue has two.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let orders: Vec<OrderId> = (0..100).map(|_| new_id()).collect();
    for order in &orders {
        // Every order twice, under two event ids, so competing consumers race on each.
        broker
            .publish(OrderCreated::TOPIC, &order_created(*order, new_id()))
            .await;
        broker
            .publish(OrderCreated::TOPIC, &order_created(*order, new_id()))
            .await;
    }

    System::wait_for_count(
        &invoices,
        "SELECT count(*) FROM platform_inbox",
        200,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        System::count(&invoices, "SELECT count(*) FROM invoices").await,
        100
    );
    assert_eq!(
        System::count(&invoices, "SELECT count(DISTINCT order_id) FROM invoices").await,
        100
    );
    drop((first, second));
}

#[tokio::test]
async fn events_no_queue_is_bound_for_do_not_hold_back_the_ones_behind_them() {
    let system = System::start().await;
    system.wait_for_health("up").await;
    // More than a relay batch of events nobody consumes, ahead of a real order's event.
    let orders = system.orders.connect().await;
    orders
        .batch_execute(
            "INSERT INTO platform_outbox (id, topic, source, content_type, data)
             SELECT gen_random_uuid()::text, 'nobody.listens', 'orders', 'application/json', \
             convert_to('{}', 'UTF8')
             FROM generate_series(1, 150)",
        )
        .await
        .expect("unroutable events");

    system.post_order(3).await;

    System::wait_for_count(
        &system.invoices,
        "SELECT count(*) FROM invoices",
        1,
        Duration::from_secs(10),
    )
    .await;
    let held =
        "SELECT count(*) FROM platform_outbox WHERE sent_at IS NULL AND topic = 'nobody.listens'";
    assert_eq!(
        System::count(&system.orders, held).await,
        150,
        "kept until a subscriber exists"
    );
}
