//! Orders and Invoices over the real broker: events flow, are never lost, never applied twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use contracts::events::{CloudEvent, Event, JSON, OrderCreated, SPEC_VERSION};
use contracts::{Amount, CustomerId, EventId, OrderId, Timestamp};
use serde_json::{Value, json};

use crate::helpers::{self, TcpProxy, TestBroker, TestDatabase, TestHost};

const CUSTOMER: &str = "0190b3b2-8c1a-7d2e-9f00-4a5b6c7d8e9f";

/// Orders and Invoices in one host, each on a database of its own.
struct System {
    host: TestHost,
    orders: Arc<TestDatabase>,
    invoices: Arc<TestDatabase>,
    broker: TestBroker,
}

impl System {
    async fn start() -> Self {
        Self::start_with(|_| helpers::amqp_base()).await
    }

    /// `amqp` gives the broker URL the host uses (a proxy's, say).
    async fn start_with(amqp: impl FnOnce(&TestBroker) -> String) -> Self {
        let orders = Arc::new(TestDatabase::create().await);
        let invoices = Arc::new(TestDatabase::create().await);
        let broker = TestBroker::new();
        let manifest = helpers::manifest(
            &broker,
            &amqp(&broker),
            &[("orders", &orders.url()), ("invoices", &invoices.url())],
        );
        let host = TestHost::start(&manifest).await;
        Self { host, orders, invoices, broker }
    }

    async fn post_order(&self, amount: i64) -> Value {
        let response = self
            .host
            .client
            .post(self.host.url("/orders/orders"))
            .json(&json!({ "customerId": CUSTOMER, "amount": amount }))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 201);
        response.json().await.expect("JSON")
    }

    async fn get(&self, path: &str) -> Value {
        self.host.client.get(self.host.url(path)).send().await.expect("sent").json().await.expect("JSON")
    }

    async fn count(db: &TestDatabase, statement: &str) -> i64 {
        db.connect().await.query_one(statement, &[]).await.expect(statement).get(0)
    }

    /// Waits until `statement` on `db` counts `expected`, or panics after `within`.
    async fn wait_for_count(db: &TestDatabase, statement: &str, expected: i64, within: Duration) {
        let started = Instant::now();
        loop {
            let count = Self::count(db, statement).await;
            if count == expected {
                return;
            }
            assert!(started.elapsed() < within, "{statement}: {count}, expected {expected} within {within:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_for_health(&self, broker: &str) {
        let started = Instant::now();
        loop {
            let health = self.get("/health").await;
            if health["checks"]["broker"].as_str().is_some_and(|state| state.starts_with(broker)) {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "broker never {broker}: {health}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn order_created(order: OrderId, event: EventId) -> Vec<u8> {
    let data = OrderCreated {
        order_id: order,
        customer_id: CUSTOMER.parse::<CustomerId>().expect("id"),
        amount: Amount::new(500).expect("amount"),
        created_at: Timestamp::from_unix_micros(1_767_225_600_000_000).expect("time"),
    };
    let envelope = CloudEvent {
        specversion: SPEC_VERSION.into(),
        id: event,
        kind: OrderCreated::TOPIC.into(),
        source: "orders".into(),
        time: data.created_at,
        datacontenttype: JSON.into(),
        dataschema: Some(OrderCreated::DATA_SCHEMA.into()),
        traceparent: None,
        data,
    };
    serde_json::to_vec(&envelope).expect("serializes")
}

fn new_id<T: std::str::FromStr>() -> T {
    uuid::Uuid::new_v4().to_string().parse().ok().expect("a UUID parses")
}

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
        assert!(started.elapsed() < Duration::from_secs(10), "not invoiced: {current}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    eprintln!("order → invoiced in {:?}", started.elapsed());

    let page = system.get(&format!("/invoices/invoices?orderId={id}")).await;
    let invoices = page["items"].as_array().expect("items");
    assert_eq!(invoices.len(), 1, "{page}");
    assert_eq!(invoices[0]["amount"], 1999);
    assert_eq!(invoices[0]["status"], "issued");
    assert_eq!(invoices[0]["customerId"], CUSTOMER);
    assert_eq!(invoiced["invoiceId"], invoices[0]["id"]);
    let invoice = system.get(&format!("/invoices/invoices/{}", invoices[0]["id"].as_str().expect("id"))).await;
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
    assert_eq!(System::count(&system.orders, "SELECT count(*) FROM orders").await, 200);
    assert_eq!(System::count(&system.invoices, "SELECT count(*) FROM invoices").await, 0);

    proxy.set_up(true);
    System::wait_for_count(&system.invoices, "SELECT count(*) FROM invoices", 200, Duration::from_secs(60)).await;
    System::wait_for_count(
        &system.orders,
        "SELECT count(*) FROM orders WHERE status = 'invoiced'",
        200,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(System::count(&system.invoices, "SELECT count(DISTINCT order_id) FROM invoices").await, 200);
    assert_eq!(System::count(&system.orders, "SELECT count(*) FROM platform_outbox WHERE sent_at IS NULL").await, 0);
    // A little longer: nothing more arrives.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(System::count(&system.invoices, "SELECT count(*) FROM invoices").await, 200);
}

#[tokio::test]
async fn a_broker_unreachable_at_start_still_accepts_orders_and_catches_up() {
    let proxy = TcpProxy::start("127.0.0.1:5672").await;
    proxy.set_up(false);
    let system = System::start_with(|_| proxy.amqp_url()).await;

    let order = system.post_order(10).await;
    assert_eq!(system.get("/health").await["status"], "degraded");

    proxy.set_up(true);
    System::wait_for_count(&system.invoices, "SELECT count(*) FROM invoices", 1, Duration::from_secs(30)).await;
    let id = order["id"].as_str().expect("id");
    let page = system.get(&format!("/invoices/invoices?orderId={id}")).await;
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

    System::wait_for_count(&system.invoices, "SELECT count(*) FROM platform_inbox", 1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(System::count(&system.invoices, "SELECT count(*) FROM invoices").await, 1);
}

#[tokio::test]
async fn the_same_order_under_two_event_ids_still_makes_one_invoice() {
    let system = System::start().await;
    system.wait_for_health("up").await;
    let order: OrderId = new_id();

    system.broker.publish(OrderCreated::TOPIC, &order_created(order, new_id())).await;
    system.broker.publish(OrderCreated::TOPIC, &order_created(order, new_id())).await;

    System::wait_for_count(&system.invoices, "SELECT count(*) FROM platform_inbox", 2, Duration::from_secs(10)).await;
    assert_eq!(System::count(&system.invoices, "SELECT count(*) FROM invoices").await, 1);
}

/// Makes the invoices table refuse the first `failures` inserts. A sequence counts attempts,
/// since a sequence is not rolled back with the failed transaction.
async fn make_invoices_flaky(db: &TestDatabase, failures: i64) {
    let client = db.connect().await;
    client
        .batch_execute(&format!(
            "CREATE SEQUENCE attempts;
             CREATE FUNCTION flaky() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF nextval('attempts') <= {failures} THEN RAISE EXCEPTION 'flaky database'; END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER flaky BEFORE INSERT ON invoices FOR EACH ROW EXECUTE FUNCTION flaky();"
        ))
        .await
        .expect("install the flaky trigger");
}

#[tokio::test]
async fn a_handler_failing_twice_succeeds_on_the_third_attempt_with_one_invoice() {
    let system = System::start().await;
    make_invoices_flaky(&system.invoices, 2).await;
    system.wait_for_health("up").await;

    system.post_order(77).await;

    System::wait_for_count(&system.invoices, "SELECT count(*) FROM invoices", 1, Duration::from_secs(15)).await;
    assert_eq!(System::count(&system.invoices, "SELECT last_value FROM attempts").await, 3);
    System::wait_for_count(&system.orders, "SELECT count(*) FROM orders WHERE status = 'invoiced'", 1, Duration::from_secs(10)).await;
}

/// Takes one message from `queue`, if there is one.
async fn take(queue: &str) -> Option<lapin::message::BasicGetMessage> {
    let channel = TestBroker::channel().await;
    channel
        .basic_get(queue.into(), lapin::options::BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
}

async fn wait_for_dead_letter(queue: &str) -> lapin::message::BasicGetMessage {
    let started = Instant::now();
    loop {
        if let Some(message) = take(queue).await {
            return message;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "nothing reached {queue}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn reason(message: &lapin::message::BasicGetMessage) -> String {
    let headers = message.delivery.properties.headers().clone().unwrap_or_default();
    match headers.inner().get("x-dead-reason") {
        Some(lapin::types::AMQPValue::LongString(text)) => String::from_utf8_lossy(text.as_bytes()).into_owned(),
        other => panic!("no x-dead-reason header: {other:?}"),
    }
}

#[tokio::test]
async fn exhausted_retries_go_to_the_dead_letter_queue() {
    let system = System::start().await;
    make_invoices_flaky(&system.invoices, 1_000).await;
    system.wait_for_health("up").await;

    system.broker.publish(OrderCreated::TOPIC, &order_created(new_id(), new_id())).await;

    let dead = wait_for_dead_letter(&system.broker.dead_letters("invoices")).await;
    assert!(reason(&dead).contains("gave up after 3 attempts"), "{}", reason(&dead));
    assert_eq!(System::count(&system.invoices, "SELECT last_value FROM attempts").await, 3);
    assert_eq!(System::count(&system.invoices, "SELECT count(*) FROM invoices").await, 0);
}

#[tokio::test]
async fn a_malformed_message_is_dead_lettered_and_the_consumer_keeps_going() {
    let system = System::start().await;
    system.wait_for_health("up").await;

    system.broker.publish(OrderCreated::TOPIC, b"{ this is not an event").await;
    let dead = wait_for_dead_letter(&system.broker.dead_letters("invoices")).await;
    assert!(reason(&dead).contains("undecodable"), "{}", reason(&dead));
    assert_eq!(dead.delivery.data, b"{ this is not an event");

    system.post_order(5).await;
    System::wait_for_count(&system.invoices, "SELECT count(*) FROM invoices", 1, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn an_event_of_an_unknown_schema_version_is_rejected_to_the_dead_letter_queue() {
    let system = System::start().await;
    system.wait_for_health("up").await;
    let body = order_created(new_id(), new_id());
    let mut envelope: Value = serde_json::from_slice(&body).expect("JSON");
    envelope["dataschema"] = json!("urn:contracts:orders.created:v9");

    system.broker.publish(OrderCreated::TOPIC, &serde_json::to_vec(&envelope).expect("JSON")).await;

    let dead = wait_for_dead_letter(&system.broker.dead_letters("invoices")).await;
    assert!(reason(&dead).contains("v9"), "{}", reason(&dead));
    assert_eq!(System::count(&system.invoices, "SELECT count(*) FROM invoices").await, 0);
}

#[tokio::test]
async fn two_hosts_competing_for_one_queue_invoice_each_order_once() {
    let invoices = Arc::new(TestDatabase::create().await);
    let broker = TestBroker::new();
    let manifest = helpers::manifest(&broker, &helpers::amqp_base(), &[("invoices", &invoices.url())]);
    let (first, second) = tokio::join!(TestHost::start(&manifest), TestHost::start(&manifest));
    for host in [&first, &second] {
        let started = Instant::now();
        loop {
            let health: Value = host.client.get(host.url("/health")).send().await.expect("sent").json().await.expect("JSON");
            if health["checks"]["broker"] == "up" {
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
        broker.publish(OrderCreated::TOPIC, &order_created(*order, new_id())).await;
        broker.publish(OrderCreated::TOPIC, &order_created(*order, new_id())).await;
    }

    System::wait_for_count(&invoices, "SELECT count(*) FROM platform_inbox", 200, Duration::from_secs(30)).await;
    assert_eq!(System::count(&invoices, "SELECT count(*) FROM invoices").await, 100);
    assert_eq!(System::count(&invoices, "SELECT count(DISTINCT order_id) FROM invoices").await, 100);
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
             SELECT gen_random_uuid()::text, 'nobody.listens', 'orders', 'application/json', convert_to('{}', 'UTF8')
             FROM generate_series(1, 150)",
        )
        .await
        .expect("unroutable events");

    system.post_order(3).await;

    System::wait_for_count(&system.invoices, "SELECT count(*) FROM invoices", 1, Duration::from_secs(10)).await;
    let held = "SELECT count(*) FROM platform_outbox WHERE sent_at IS NULL AND topic = 'nobody.listens'";
    assert_eq!(System::count(&system.orders, held).await, 150, "kept until a subscriber exists");
}
