//! Dead letters through the admin API: listed in place, replayed exactly once after the cause
//! is fixed.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::system::{System, make_invoices_flaky};

#[tokio::test]
async fn dead_letters_are_listed_and_replayed_once_the_cause_is_fixed() {
    let system = System::start().await;
    make_invoices_flaky(&system.invoices, 1_000).await;
    system.wait_for_health("up").await;
    for amount in [11, 12, 13] {
        system.post_order(amount).await;
    }
    let host = &system.host;
    let listed = {
        let started = Instant::now();
        loop {
            let listed = host.admin_get("/components/invoices/dead-letters").await;
            if listed["messages"].as_array().map(Vec::len) == Some(3) {
                break listed;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "{listed}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let first = &listed["messages"][0];
    assert_eq!(first["topic"], "orders.created");
    assert_eq!(first["attempts"], 3);
    assert!(
        first["reason"]
            .as_str()
            .is_some_and(|r| r.contains("gave up after 3 attempts")),
        "{first}"
    );
    assert!(
        first["preview"]
            .as_str()
            .is_some_and(|p| p.contains("\"orderId\"")),
        "{first}"
    );
    assert_eq!(
        host.admin_get("/components/invoices/dead-letters").await["messages"]
            .as_array()
            .map(Vec::len),
        Some(3),
        "listing leaves them"
    );

    // The cause is fixed; one is replayed by id, then the rest.
    system
        .invoices
        .connect()
        .await
        .batch_execute("DROP TRIGGER invoices_on_insert ON invoices")
        .await
        .expect("fix");
    let id = first["id"].as_str().expect("id");
    let replay = |query: String| {
        let url = host.admin_url(&format!("/components/invoices/dead-letters/replay{query}"));
        let client = host.client.clone();
        async move {
            let response = client.post(url).send().await.expect("sent");
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.expect("JSON")["replayed"].as_u64()
        }
    };
    assert_eq!(replay(format!("?id={id}")).await, Some(1));
    System::wait_for_count(
        &system.invoices,
        "SELECT count(*) FROM invoices",
        1,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(replay(String::new()).await, Some(2));
    System::wait_for_count(
        &system.invoices,
        "SELECT count(*) FROM invoices",
        3,
        Duration::from_secs(10),
    )
    .await;
    System::wait_for_count(
        &system.orders,
        "SELECT count(*) FROM orders WHERE status = 'invoiced'",
        3,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        replay(String::new()).await,
        Some(0),
        "nothing is left to replay"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        System::count(&system.invoices, "SELECT count(*) FROM invoices").await,
        3,
        "each once"
    );
    assert_eq!(
        host.admin_get("/components/invoices/dead-letters").await["messages"],
        json!([])
    );
}
