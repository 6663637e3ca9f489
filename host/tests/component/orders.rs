//! Orders under the host with a fake database: the HTTP API and the `invoices.issued` handler.

use serde_json::{Value as Json, json};

use host::capabilities::sql::fake::{Call, FakeDatabase};
use host::capabilities::sql::{Error, RowSet, Value};
use host::startup::DeliveryOutcome;

use crate::*;

fn order_row(id: &str, amount: i64) -> Vec<Value> {
    vec![
        Value::Uuid(id.into()),
        Value::Uuid(CUSTOMER.into()),
        Value::Int64(amount),
        Value::Text("pending".into()),
        Value::Timestamp(NEW_YEAR),
        Value::Null,
    ]
}

fn rows(rows: Vec<Vec<Value>>) -> Result<RowSet, Error> {
    let columns = [
        "id",
        "customer_id",
        "amount",
        "status",
        "created_at",
        "invoice_id",
    ]
    .map(String::from)
    .to_vec();
    Ok(RowSet { columns, rows })
}

/// A database that inserts whatever it is given and finds nothing.
fn inserting() -> FakeDatabase {
    FakeDatabase::new(|statement, params| {
        if statement.starts_with("INSERT INTO orders") {
            let Value::Uuid(id) = &params[0] else {
                panic!("id is a uuid: {params:?}")
            };
            let Value::Int64(amount) = params[2] else {
                panic!("amount is int64: {params:?}")
            };
            rows(vec![order_row(id, amount)])
        } else {
            rows(vec![])
        }
    })
}

async fn post(served: &Served, body: &Json) -> reqwest::Response {
    served
        .client
        .post(format!("{}/orders/orders", served.base))
        .json(body)
        .send()
        .await
        .expect("sent")
}

#[tokio::test]
async fn creating_an_order_is_one_insert_and_one_event_in_a_committed_transaction() {
    let database = inserting();
    let served = serve(database.clone()).await;

    let response = post(&served, &json!({ "customerId": CUSTOMER, "amount": 250 })).await;

    assert_eq!(response.status(), 201);
    let order: Json = response.json().await.expect("JSON");
    assert_eq!(order["amount"], 250);
    assert_eq!(order["createdAt"], "2026-01-01T00:00:00.000000Z");
    let calls = database.calls();
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert!(matches!(calls[0], Call::Begin));
    let Call::Query(statement, params) = &calls[1] else {
        panic!("{calls:?}")
    };
    assert!(
        statement.starts_with("INSERT INTO orders (id, customer_id, amount, idempotency_key)"),
        "{statement}"
    );
    assert!(
        statement.contains("ON CONFLICT (idempotency_key) DO NOTHING"),
        "{statement}"
    );
    assert!(
        matches!(
            &params[..],
            [Value::Uuid(id), Value::Uuid(customer), Value::Int64(250), Value::Null]
                if customer == CUSTOMER && *id == order["id"]
        ),
        "{params:?}"
    );
    // orders.created goes to the outbox in the same transaction.
    let Call::Execute(statement, params) = &calls[2] else {
        panic!("{calls:?}")
    };
    assert!(
        statement.starts_with("INSERT INTO platform_outbox"),
        "{statement}"
    );
    // The last is the trace context, none here: these tests export no spans.
    let [
        _,
        Value::Text(topic),
        Value::Text(source),
        _,
        Value::Text(schema),
        Value::Bytes(data),
        Value::Null,
    ] = &params[..]
    else {
        panic!("{params:?}")
    };
    assert_eq!(
        (topic.as_str(), source.as_str()),
        ("orders.created", "orders")
    );
    assert_eq!(schema, "urn:contracts:orders.created:v1");
    let data: Json = serde_json::from_slice(data).expect("JSON data");
    assert_eq!(
        data,
        json!({ "orderId": order["id"], "customerId": CUSTOMER, "amount": 250,
                             "createdAt": "2026-01-01T00:00:00.000000Z" })
    );
    assert!(matches!(calls[3], Call::Commit));
}

#[tokio::test]
async fn an_idempotency_key_is_passed_as_a_parameter() {
    let database = inserting();
    let served = serve(database.clone()).await;

    let response = served
        .client
        .post(format!("{}/orders/orders", served.base))
        .header("idempotency-key", "abc-123")
        .json(&json!({ "customerId": CUSTOMER, "amount": 1 }))
        .send()
        .await
        .expect("sent");

    assert_eq!(response.status(), 201);
    let calls = database.calls();
    let Call::Query(_, params) = &calls[1] else {
        panic!("{calls:?}")
    };
    assert!(
        matches!(&params[3], Value::Text(key) if key == "abc-123"),
        "{params:?}"
    );
}

#[tokio::test]
async fn invalid_input_touches_no_database() {
    let database = inserting();
    let served = serve(database.clone()).await;

    for body in [
        json!({ "customerId": CUSTOMER, "amount": 0 }),
        json!({ "customerId": "x", "amount": 1 }),
        json!([]),
    ] {
        assert_eq!(post(&served, &body).await.status(), 400, "{body}");
    }
    let listing = served
        .client
        .get(format!("{}/orders/orders?limit=0", served.base))
        .send()
        .await
        .expect("sent");
    assert_eq!(listing.status(), 400);

    assert!(database.calls().is_empty(), "{:?}", database.calls());
}

#[tokio::test]
async fn an_unknown_order_is_a_404_from_one_select() {
    let database = inserting();
    let served = serve(database.clone()).await;

    let response = served
        .client
        .get(format!("{}/orders/orders/{ORDER}", served.base))
        .send()
        .await
        .expect("sent");

    assert_eq!(response.status(), 404);
    let calls = database.calls();
    let Call::Query(statement, params) = &calls[1] else {
        panic!("{calls:?}")
    };
    assert!(
        statement.contains("FROM orders WHERE id = $1"),
        "{statement}"
    );
    assert!(
        matches!(&params[..], [Value::Uuid(id)] if id == ORDER),
        "{params:?}"
    );
}

#[tokio::test]
async fn a_list_asks_for_one_row_more_than_the_page_to_find_the_next_cursor() {
    let database = FakeDatabase::new(|_, _| {
        rows(vec![
            order_row(ORDER, 1),
            order_row("01a21143-e0bb-724a-bc08-9cf6be4f5389", 2),
        ])
    });
    let served = serve(database.clone()).await;

    let page: Json = served
        .client
        .get(format!(
            "{}/orders/orders?limit=1&customerId={CUSTOMER}",
            served.base
        ))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");

    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["nextCursor"], ORDER);
    let calls = database.calls();
    let Call::Query(statement, params) = &calls[1] else {
        panic!("{calls:?}")
    };
    assert!(
        statement.contains("WHERE customer_id = $1 ORDER BY id DESC LIMIT $2"),
        "{statement}"
    );
    assert!(
        matches!(&params[..], [Value::Uuid(_), Value::Int64(2)]),
        "{params:?}"
    );
}

#[tokio::test]
async fn a_replayed_idempotent_post_publishes_nothing_again() {
    let database = FakeDatabase::new(|statement, _| {
        // The key is taken: the insert returns nothing and the lookup finds the first order.
        if statement.starts_with("SELECT") {
            rows(vec![order_row(ORDER, 1)])
        } else {
            rows(vec![])
        }
    });
    let served = serve(database.clone()).await;

    let response = served
        .client
        .post(format!("{}/orders/orders", served.base))
        .header("idempotency-key", "again")
        .json(&json!({ "customerId": CUSTOMER, "amount": 1 }))
        .send()
        .await
        .expect("sent");

    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["idempotent-replayed"], "true");
    let published = database
        .calls()
        .iter()
        .any(|call| matches!(call, Call::Execute(s, _) if s.contains("platform_outbox")));
    assert!(!published, "{:?}", database.calls());
}

#[tokio::test]
async fn a_row_the_component_cannot_read_is_a_500_and_the_transaction_rolls_back() {
    let database = FakeDatabase::new(|_, _| rows(vec![vec![Value::Text("not an order".into())]]));
    let served = serve(database.clone()).await;

    let response = served
        .client
        .get(format!("{}/orders/orders/{ORDER}", served.base))
        .send()
        .await
        .expect("sent");

    assert_eq!(response.status(), 500);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert!(
        matches!(database.calls().last(), Some(Call::Rollback)),
        "{:?}",
        database.calls()
    );
}

#[tokio::test]
async fn a_database_that_is_down_is_a_503_problem() {
    let database = inserting();
    database.go_down("connection refused");
    let served = serve(database.clone()).await;

    let response = post(&served, &json!({ "customerId": CUSTOMER, "amount": 1 })).await;

    assert_eq!(response.status(), 503);
    let problem: Json = response.json().await.expect("JSON");
    assert_eq!(problem["status"], 503);
    let health = served
        .client
        .get(format!("{}/health", served.base))
        .send()
        .await
        .expect("sent");
    assert_eq!(health.status(), 503);
}

#[tokio::test]
async fn a_file_that_is_not_a_component_is_refused_at_start() {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifest = "[[components]]\nname = \"orders\"\nwasm = \"Cargo.toml\"\nroute = \"/orders\"\n\
                    database_url = \"postgres://unused/orders\"\n";
    let config = Config::from_toml(manifest, &workspace, &[("UNUSED", "")]).expect("manifest");
    let databases = HashMap::from([(
        "orders".to_owned(),
        Arc::new(inserting()) as Arc<dyn Database>,
    )]);

    let error = match Host::build_with(config, databases).await {
        Ok(_) => panic!("a TOML file is not a component"),
        Err(err) => format!("{err:#}"),
    };

    assert!(
        error.contains("Cargo.toml is not a valid WebAssembly component"),
        "{error}"
    );
}

fn invoice_issued(order: &str) -> IncomingEvent {
    event(
        "invoices.issued",
        "urn:contracts:invoices.issued:v1",
        json!({ "invoiceId": "0190b3b2-8c1a-7d2e-9f00-00000000a001", "orderId": order, "amount": 5,
                "issuedAt": "2026-01-01T00:00:00Z" }),
    )
}

#[tokio::test]
async fn an_issued_invoice_marks_its_pending_order_invoiced() {
    let database = FakeDatabase::new(|_, _| rows(vec![vec![]]));
    let host = host(
        "orders",
        "orders.created",
        "invoices.issued",
        database.clone(),
    )
    .await;

    let outcome = host.deliver("orders", invoice_issued(ORDER)).await;

    assert_eq!(outcome, Some(DeliveryOutcome::Handled));
    let calls = database.calls();
    assert_eq!(
        names(&calls),
        [
            "begin",
            "INSERT INTO platform_inbox",
            "UPDATE orders SET",
            "commit"
        ],
        "{calls:?}"
    );
    let Call::Execute(_, params) = &calls[2] else {
        panic!("{calls:?}")
    };
    assert!(
        matches!(&params[..], [Value::Uuid(order), Value::Uuid(_)] if order == ORDER),
        "{params:?}"
    );
}

#[tokio::test]
async fn an_invoice_for_an_unknown_order_is_rejected_and_rolled_back() {
    // Inbox insert and update change nothing... except the inbox, which records the event.
    let database = FakeDatabase::new(|statement, _| {
        if statement.contains("platform_inbox") {
            rows(vec![vec![]])
        } else {
            rows(vec![])
        }
    });
    let host = host(
        "orders",
        "orders.created",
        "invoices.issued",
        database.clone(),
    )
    .await;

    let outcome = host.deliver("orders", invoice_issued(ORDER)).await;

    assert!(
        matches!(outcome, Some(DeliveryOutcome::Reject(ref why)) if why.contains("unknown order")),
        "{outcome:?}"
    );
    assert_eq!(
        names(&database.calls()).last().map(String::as_str),
        Some("rollback")
    );
}

#[tokio::test]
async fn an_event_already_in_the_inbox_keeps_nothing_of_the_handlers_work() {
    // The inbox insert, sent ahead of the handler's first statement, changes no row: the event
    // was handled before. The handler's statement answers an error, and everything rolls back.
    let database = FakeDatabase::new(|_, _| rows(vec![]));
    let host = host(
        "orders",
        "orders.created",
        "invoices.issued",
        database.clone(),
    )
    .await;

    let outcome = host.deliver("orders", invoice_issued(ORDER)).await;

    assert_eq!(outcome, Some(DeliveryOutcome::Duplicate));
    assert_eq!(
        names(&database.calls()),
        [
            "begin",
            "INSERT INTO platform_inbox",
            "UPDATE orders SET",
            "rollback"
        ]
    );
}

#[tokio::test]
async fn an_order_invoiced_by_another_invoice_rejects_the_event() {
    // The update changes nothing; the order already names a different invoice.
    let database = FakeDatabase::new(|statement, _| {
        if statement.starts_with("UPDATE") {
            rows(vec![])
        } else if statement.starts_with("SELECT") {
            let mut row = order_row(ORDER, 5);
            row[5] = Value::Uuid("0190b3b2-8c1a-7d2e-9f00-00000000ffff".into());
            rows(vec![row])
        } else {
            rows(vec![vec![]])
        }
    });
    let host = host(
        "orders",
        "orders.created",
        "invoices.issued",
        database.clone(),
    )
    .await;

    let outcome = host.deliver("orders", invoice_issued(ORDER)).await;

    assert!(
        matches!(
            outcome,
            Some(DeliveryOutcome::Reject(ref why)) if why.contains("already invoiced")
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_duplicate_whose_handler_fails_before_any_statement_is_still_a_duplicate() {
    // The inbox insert changes no row; the event's data is not what the handler reads, so it
    // fails before its first statement: the guard, sent alone, still finds the duplicate.
    let database = FakeDatabase::new(|_, _| rows(vec![]));
    let host = host(
        "orders",
        "orders.created",
        "invoices.issued",
        database.clone(),
    )
    .await;
    let mut event = invoice_issued(ORDER);
    event.data = b"{}".to_vec();

    let outcome = host.deliver("orders", event).await;

    assert_eq!(outcome, Some(DeliveryOutcome::Duplicate));
    assert_eq!(
        names(&database.calls()),
        ["begin", "INSERT INTO platform_inbox", "rollback"]
    );
}
