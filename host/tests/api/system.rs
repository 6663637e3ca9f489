//! Orders and Invoices in one host over the real broker, and what tests do with them: post
//! orders, publish events as a relay would, wait for counts, read dead letters.

use std::sync::Arc;
use std::time::{Duration, Instant};

use contracts::events::{CloudEvent, OrderCreated};
use contracts::{Amount, CustomerId, EventId, OrderId, Timestamp};
use serde_json::{Value, json};

use crate::helpers::{self, TestBroker, TestDatabase, TestHost};

pub const CUSTOMER: &str = "0190b3b2-8c1a-7d2e-9f00-4a5b6c7d8e9f";

/// Orders and Invoices in one host, each on a database of its own.
pub struct System {
    pub host: TestHost,
    pub orders: Arc<TestDatabase>,
    pub invoices: Arc<TestDatabase>,
    pub broker: TestBroker,
}

impl System {
    pub async fn start() -> Self {
        Self::start_with(|_| helpers::amqp_base()).await
    }

    /// `amqp` gives the broker URL the host uses (a proxy's, say).
    pub async fn start_with(amqp: impl FnOnce(&TestBroker) -> String) -> Self {
        let orders = Arc::new(TestDatabase::create().await);
        let invoices = Arc::new(TestDatabase::create().await);
        let broker = TestBroker::new();
        let manifest = helpers::manifest(
            &broker,
            &amqp(&broker),
            &[("orders", &orders.url()), ("invoices", &invoices.url())],
        );
        let host = TestHost::start(&manifest).await;
        Self {
            host,
            orders,
            invoices,
            broker,
        }
    }

    pub async fn post_order(&self, amount: i64) -> Value {
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

    /// A pending order written straight to Orders' table: no event was published for it.
    pub async fn insert_pending_order(&self) -> OrderId {
        let order: OrderId = new_id();
        self.orders
            .connect()
            .await
            .execute(
                "INSERT INTO orders (id, customer_id, amount) \
                 VALUES ($1::text::uuid, $2::text::uuid, 700)",
                &[&order.to_string(), &CUSTOMER],
            )
            .await
            .expect("order");
        order
    }

    pub async fn get(&self, path: &str) -> Value {
        self.host
            .client
            .get(self.host.url(path))
            .send()
            .await
            .expect("sent")
            .json()
            .await
            .expect("JSON")
    }

    pub async fn count(db: &TestDatabase, statement: &str) -> i64 {
        db.connect()
            .await
            .query_one(statement, &[])
            .await
            .expect(statement)
            .get(0)
    }

    /// Waits until `statement` on `db` counts `expected`, or panics after `within`.
    pub async fn wait_for_count(
        db: &TestDatabase,
        statement: &str,
        expected: i64,
        within: Duration,
    ) {
        let started = Instant::now();
        loop {
            let count = Self::count(db, statement).await;
            if count == expected {
                return;
            }
            assert!(
                started.elapsed() < within,
                "{statement}: {count}, expected {expected} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `/health` reports the broker `broker` ("up" or "down"); for "up", also until
    /// both consumers are attached, so that events published next reach them.
    pub async fn wait_for_health(&self, broker: &str) {
        let started = Instant::now();
        loop {
            let health = self.get("/health").await;
            let brokers = ["orders.broker", "invoices.broker"].map(|check| {
                health["checks"][check]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            });
            if brokers.iter().all(|state| state.starts_with(broker)) {
                if broker == "up" {
                    self.broker.wait_for_consumer("orders").await;
                    self.broker.wait_for_consumer("invoices").await;
                }
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "broker never {broker}: {health}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub fn order_created(order: OrderId, event: EventId) -> Vec<u8> {
    let data = OrderCreated {
        order_id: order,
        customer_id: CUSTOMER.parse::<CustomerId>().expect("id"),
        amount: Amount::new(500).expect("amount"),
        created_at: Timestamp::from_unix_micros(1_767_225_600_000_000).expect("time"),
    };
    let envelope = CloudEvent::new(event, "orders", data.created_at, data);
    serde_json::to_vec(&envelope).expect("serializes")
}

pub fn new_id<T: std::str::FromStr>() -> T {
    uuid::Uuid::new_v4()
        .to_string()
        .parse()
        .ok()
        .expect("a UUID parses")
}

/// Takes one message from `queue`, if there is one.
pub async fn take(queue: &str) -> Option<lapin::message::BasicGetMessage> {
    let channel = TestBroker::channel().await;
    channel
        .basic_get(
            queue.into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .expect("basic.get")
}

pub async fn wait_for_dead_letter(queue: &str) -> lapin::message::BasicGetMessage {
    let started = Instant::now();
    loop {
        if let Some(message) = take(queue).await {
            return message;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "nothing reached {queue}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn reason(message: &lapin::message::BasicGetMessage) -> String {
    let headers = message
        .delivery
        .properties
        .headers()
        .clone()
        .unwrap_or_default();
    match headers.inner().get("x-dead-reason") {
        Some(lapin::types::AMQPValue::LongString(text)) => {
            String::from_utf8_lossy(text.as_bytes()).into_owned()
        }
        other => panic!("no x-dead-reason header: {other:?}"),
    }
}

/// Installs a trigger on `table` that runs `action` (PL/pgSQL) on each of the first `times`
/// inserts. A sequence counts the inserts, since a sequence is not rolled back with the failed
/// transaction; `SELECT last_value FROM {table}_inserts` reads the count.
async fn on_first_inserts(db: &TestDatabase, table: &str, times: i64, action: &str) {
    db.connect()
        .await
        .batch_execute(&format!(
            "CREATE SEQUENCE {table}_inserts;
             CREATE FUNCTION {table}_on_insert() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF nextval('{table}_inserts') <= {times} THEN {action} END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER {table}_on_insert BEFORE INSERT ON {table} FOR EACH ROW \
             EXECUTE FUNCTION {table}_on_insert();"
        ))
        .await
        .expect("install the trigger");
}

/// Makes the invoices table refuse the first `failures` inserts, as a bug in the handler would.
pub async fn make_invoices_flaky(db: &TestDatabase, failures: i64) {
    on_first_inserts(
        db,
        "invoices",
        failures,
        "RAISE EXCEPTION 'flaky database';",
    )
    .await;
}

/// Makes the first `times` inserts into `table` end their own database session, as a server
/// restart or `pg_terminate_backend` does (SQLSTATE 57P01).
pub async fn end_sessions_on_insert(db: &TestDatabase, table: &str, times: i64) {
    on_first_inserts(
        db,
        table,
        times,
        "PERFORM pg_terminate_backend(pg_backend_pid()); PERFORM pg_sleep(1);",
    )
    .await;
}
