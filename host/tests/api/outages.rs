//! Every accepted order is invoiced exactly once whatever fails: database sessions terminated
//! under load (mid-statement, mid-commit, mid-inbox insert), the broker gone for a while; and
//! events are accepted only from their topic's publisher.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use contracts::events::{CloudEvent, Event, InvoiceIssued};
use contracts::{Amount, InvoiceId, OrderId, Timestamp};
use serde_json::json;

use crate::helpers::{TcpProxy, TestDatabase};
use crate::system::{
    CUSTOMER, System, end_sessions_on_insert, new_id, reason, take, wait_for_dead_letter,
};

fn invoice_issued(order: OrderId, invoice: InvoiceId, source: &str) -> Vec<u8> {
    let data = InvoiceIssued {
        invoice_id: invoice,
        order_id: order,
        amount: Amount::new(700).expect("amount"),
        issued_at: Timestamp::from_unix_micros(1_767_225_600_000_000).expect("time"),
    };
    let envelope = CloudEvent::new(new_id(), source, data.issued_at, data);
    serde_json::to_vec(&envelope).expect("serializes")
}

#[tokio::test]
async fn an_event_from_anyone_but_its_topics_publisher_is_dead_lettered_and_changes_nothing() {
    let system = System::start().await;
    system.wait_for_health("up").await;
    let order = system.insert_pending_order().await;
    let status = "SELECT count(*) FROM orders WHERE status = 'invoiced'";

    system
        .broker
        .publish(
            InvoiceIssued::TOPIC,
            &invoice_issued(order, new_id(), "mallory"),
        )
        .await;
    let dead = wait_for_dead_letter(&system.broker.dead_letters("orders")).await;
    assert!(
        reason(&dead).contains("forged event: its source \"mallory\" is not \"invoices\""),
        "{}",
        reason(&dead)
    );

    let mut wrong_type: serde_json::Value =
        serde_json::from_slice(&invoice_issued(order, new_id(), "invoices")).expect("JSON");
    wrong_type["type"] = json!("orders.created");
    system
        .broker
        .publish(
            InvoiceIssued::TOPIC,
            &serde_json::to_vec(&wrong_type).expect("JSON"),
        )
        .await;
    let dead = wait_for_dead_letter(&system.broker.dead_letters("orders")).await;
    assert!(
        reason(&dead).contains("forged event: its type \"orders.created\""),
        "{}",
        reason(&dead)
    );
    assert_eq!(
        System::count(&system.orders, status).await,
        0,
        "the forged events changed nothing"
    );
    assert_eq!(
        System::count(&system.orders, "SELECT count(*) FROM platform_inbox").await,
        0
    );

    // The same event from its real publisher is applied.
    system
        .broker
        .publish(
            InvoiceIssued::TOPIC,
            &invoice_issued(order, new_id(), "invoices"),
        )
        .await;
    System::wait_for_count(&system.orders, status, 1, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn rows_written_into_the_outbox_by_hand_go_out_only_as_the_components_own_events() {
    let system = System::start().await;
    system.wait_for_health("up").await;
    let order = system.insert_pending_order().await;
    let orders = system.orders.connect().await;
    // Orders' SQL writes an `invoices.issued` event under Invoices' name straight into its own
    // outbox, bypassing `publish`; and an `orders.created` one under someone else's name.
    let forged: serde_json::Value =
        serde_json::from_slice(&invoice_issued(order, new_id(), "invoices")).expect("JSON");
    let data = serde_json::to_vec(&forged["data"]).expect("data");
    orders
        .execute(
            "INSERT INTO platform_outbox (id, topic, source, content_type, data) VALUES
                 ('forged-1', 'invoices.issued', 'invoices', 'application/json', $1),
                 ('forged-2', 'orders.created', 'mallory', 'application/json', '\\x7b7d')",
            &[&data],
        )
        .await
        .expect("outbox rows");

    // The second goes out, as Orders' own event (which Invoices then rejects as malformed).
    let dead = wait_for_dead_letter(&system.broker.dead_letters("invoices")).await;
    let envelope: serde_json::Value = serde_json::from_slice(&dead.delivery.data).expect("JSON");
    assert_eq!(envelope["id"], "forged-2");
    assert_eq!(
        envelope["source"], "orders",
        "sent under the component's own name"
    );
    // The first never leaves: Orders does not publish invoices.issued.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let unsent = "SELECT count(*) FROM platform_outbox WHERE id = 'forged-1' AND sent_at IS NULL";
    assert_eq!(System::count(&system.orders, unsent).await, 1);
    assert_eq!(
        System::count(
            &system.orders,
            "SELECT count(*) FROM orders WHERE status = 'invoiced'"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn sessions_ended_mid_inbox_insert_and_mid_statement_are_retried_without_counting_attempts() {
    let system = System::start().await;
    // Three of each, more than the two retries a counted failure would get: three attempts end
    // at the inbox insert, three more at the invoice insert (after their inbox insert), then one
    // succeeds.
    end_sessions_on_insert(&system.invoices, "platform_inbox", 3).await;
    end_sessions_on_insert(&system.invoices, "invoices", 3).await;
    system.wait_for_health("up").await;

    let order = system.post_order(42).await;

    System::wait_for_count(
        &system.invoices,
        "SELECT count(*) FROM invoices",
        1,
        Duration::from_secs(30),
    )
    .await;
    System::wait_for_count(
        &system.orders,
        "SELECT count(*) FROM orders WHERE status = 'invoiced'",
        1,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        System::count(
            &system.invoices,
            "SELECT last_value FROM platform_inbox_inserts"
        )
        .await,
        7
    );
    assert_eq!(
        System::count(&system.invoices, "SELECT last_value FROM invoices_inserts").await,
        4
    );
    assert!(
        take(&system.broker.dead_letters("invoices"))
            .await
            .is_none(),
        "outages never dead-letter"
    );
    let page = system
        .get(&format!(
            "/invoices/invoices?orderId={}",
            order["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn sessions_terminated_under_load_lose_no_order_and_answer_503_never_500() {
    let system = Arc::new(System::start().await);
    system.wait_for_health("up").await;
    let loading = Arc::new(AtomicBool::new(true));
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let (system, loading) = (system.clone(), loading.clone());
            tokio::spawn(async move {
                let (mut accepted, mut statuses) = (Vec::new(), Vec::new());
                while loading.load(Ordering::Relaxed) {
                    let response = system
                        .host
                        .client
                        .post(system.host.url("/orders/orders"))
                        .json(&json!({ "customerId": CUSTOMER, "amount": 5 }))
                        .send()
                        .await
                        .expect("sent");
                    let status = response.status().as_u16();
                    if status == 201 {
                        let order: serde_json::Value = response.json().await.expect("JSON");
                        accepted.push(order["id"].as_str().expect("id").to_owned());
                    }
                    statuses.push(status);
                }
                (accepted, statuses)
            })
        })
        .collect();

    // End every session of both services' databases, five times over, while orders flow.
    let killer = TestDatabase::connect_admin().await;
    let names = [system.orders.name.clone(), system.invoices.name.clone()];
    let mut terminated = 0;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let rows = killer
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = ANY($1) AND pid <> pg_backend_pid()",
                &[&names.as_slice()],
            )
            .await
            .expect("terminate");
        terminated += rows.len();
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    loading.store(false, Ordering::Relaxed);
    let (mut accepted, mut statuses) = (Vec::new(), Vec::new());
    for client in clients {
        let (ids, codes) = client.await.expect("client");
        accepted.extend(ids);
        statuses.extend(codes);
    }
    let refused = statuses.iter().filter(|status| **status == 503).count();
    println!(
        "{} POSTs: {} accepted, {refused} answered 503, {terminated} sessions terminated",
        statuses.len(),
        accepted.len()
    );
    assert!(
        statuses
            .iter()
            .all(|status| *status == 201 || *status == 503),
        "only 201 or 503: {statuses:?}"
    );
    assert!(terminated >= 5, "sessions were terminated under load");

    // Every order in the database (accepted, or committed just before its answer was lost) ends
    // invoiced exactly once, and no event was dead-lettered.
    let all = System::count(&system.orders, "SELECT count(*) FROM orders").await;
    assert!(all >= accepted.len() as i64);
    System::wait_for_count(
        &system.orders,
        "SELECT count(*) FROM orders WHERE status = 'invoiced'",
        all,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        System::count(&system.invoices, "SELECT count(*) FROM invoices").await,
        all
    );
    assert_eq!(
        System::count(
            &system.invoices,
            "SELECT count(DISTINCT order_id) FROM invoices"
        )
        .await,
        all
    );
    let ids: Vec<&str> = accepted.iter().map(String::as_str).collect();
    let invoiced = system
        .orders
        .connect()
        .await
        .query_one(
            "SELECT count(*) FROM orders WHERE id::text = ANY($1) AND status = 'invoiced'",
            &[&ids],
        )
        .await
        .expect("count")
        .get::<_, i64>(0);
    assert_eq!(invoiced, accepted.len() as i64, "every 201 ends invoiced");
    for component in ["orders", "invoices"] {
        assert!(
            take(&system.broker.dead_letters(component)).await.is_none(),
            "no dead letter for {component}"
        );
    }
}

#[tokio::test]
async fn after_fifteen_seconds_without_the_broker_events_flow_within_about_a_second() {
    let proxy = TcpProxy::start("127.0.0.1:5672").await;
    let system = Arc::new(System::start_with(|_| proxy.amqp_url()).await);
    system.wait_for_health("up").await;
    system.post_order(1).await;
    System::wait_for_count(
        &system.invoices,
        "SELECT count(*) FROM invoices",
        1,
        Duration::from_secs(10),
    )
    .await;

    proxy.set_up(false);
    system.wait_for_health("down").await;
    let loading = Arc::new(AtomicBool::new(true));
    let load = {
        let (system, loading) = (system.clone(), loading.clone());
        tokio::spawn(async move {
            let mut posted = 0;
            while loading.load(Ordering::Relaxed) {
                system.post_order(2).await;
                posted += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            posted
        })
    };
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(
        System::count(&system.invoices, "SELECT count(*) FROM invoices").await,
        1
    );

    proxy.set_up(true);
    let returned = Instant::now();
    let flowing = loop {
        if System::count(&system.invoices, "SELECT count(*) FROM invoices").await > 1 {
            break returned.elapsed();
        }
        assert!(
            returned.elapsed() < Duration::from_secs(10),
            "no event flowed within 10 s of the broker's return"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    loading.store(false, Ordering::Relaxed);
    let posted = load.await.expect("load") + 1;
    println!(
        "broker back after 15 s: the first event flowed {flowing:?} after its return \
         ({posted} orders posted)"
    );
    assert!(
        flowing < Duration::from_secs(5),
        "events flowed {flowing:?} after the broker returned"
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
}
