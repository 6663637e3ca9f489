//! Invoices under the host with a fake database: the `orders.created` handler and the API.

use serde_json::json;

use host::capabilities::sql::fake::{Call, FakeDatabase};
use host::capabilities::sql::{Error, RowSet, Value};
use host::startup::DeliveryOutcome;

use crate::*;

const INVOICE: &str = "0190b3b2-8c1a-7d2e-9f00-00000000a001";

fn invoice_row() -> Vec<Value> {
    vec![
        Value::Uuid(INVOICE.into()),
        Value::Uuid(ORDER.into()),
        Value::Uuid(CUSTOMER.into()),
        Value::Int64(1250),
        Value::Text("issued".into()),
        Value::Timestamp(NEW_YEAR),
    ]
}

fn answer(rows: Vec<Vec<Value>>) -> Result<RowSet, Error> {
    let columns = [
        "id",
        "order_id",
        "customer_id",
        "amount",
        "status",
        "issued_at",
    ]
    .map(String::from)
    .to_vec();
    Ok(RowSet { columns, rows })
}

fn order_created() -> host::startup::IncomingEvent {
    event(
        "orders.created",
        "urn:contracts:orders.created:v1",
        json!({
            "orderId": ORDER,
            "customerId": CUSTOMER,
            "amount": 1250,
            "createdAt": "2026-01-01T00:00:00Z",
        }),
    )
}

async fn invoices_host(database: FakeDatabase) -> Host {
    host("invoices", "invoices.issued", "orders.created", database).await
}

#[tokio::test]
async fn an_order_gets_one_invoice_and_one_announcement_in_one_transaction() {
    let database = FakeDatabase::new(|statement, _| match statement {
        s if s.starts_with("INSERT INTO invoices") => answer(vec![invoice_row()]),
        _ => answer(vec![vec![]]),
    });
    let host = invoices_host(database.clone()).await;

    let outcome = host.deliver("invoices", order_created()).await;

    assert_eq!(outcome, Some(DeliveryOutcome::Handled));
    let calls = database.calls();
    assert_eq!(
        names(&calls),
        [
            "begin",
            "INSERT INTO platform_inbox",
            "INSERT INTO invoices",
            "INSERT INTO platform_outbox",
            "commit"
        ],
        "{calls:?}"
    );
    let Call::Query(statement, params) = &calls[2] else {
        panic!("{calls:?}")
    };
    assert!(
        statement.contains("ON CONFLICT (order_id) DO NOTHING"),
        "{statement}"
    );
    assert!(
        matches!(&params[1..], [Value::Uuid(order), Value::Uuid(customer), Value::Int64(1250)]
        if order == ORDER && customer == CUSTOMER),
        "{params:?}"
    );
    let Call::Execute(_, params) = &calls[3] else {
        panic!("{calls:?}")
    };
    let Value::Bytes(data) = &params[5] else {
        panic!("{params:?}")
    };
    let data: serde_json::Value = serde_json::from_slice(data).expect("JSON");
    assert_eq!(
        data,
        json!({ "invoiceId": INVOICE, "orderId": ORDER, "amount": 1250,
                             "issuedAt": "2026-01-01T00:00:00.000000Z" })
    );
}

#[tokio::test]
async fn an_order_that_already_has_its_invoice_gets_no_second_announcement() {
    // The invoice insert conflicts on order_id and returns nothing.
    let database = FakeDatabase::new(|statement, _| match statement {
        s if s.starts_with("INSERT INTO invoices") => answer(vec![]),
        _ => answer(vec![vec![]]),
    });
    let host = invoices_host(database.clone()).await;

    assert_eq!(
        host.deliver("invoices", order_created()).await,
        Some(DeliveryOutcome::Handled)
    );
    assert_eq!(
        names(&database.calls()),
        [
            "begin",
            "INSERT INTO platform_inbox",
            "INSERT INTO invoices",
            "commit"
        ]
    );
}

#[tokio::test]
async fn a_database_error_asks_for_a_retry_and_rolls_back() {
    let database = FakeDatabase::new(|statement, _| match statement {
        s if s.starts_with("INSERT INTO invoices") => {
            Err(Error::Database(host::capabilities::sql::DatabaseError {
                code: "40001".into(),
                message: "could not serialize access".into(),
                constraint: None,
                column: None,
                detail: None,
            }))
        }
        _ => answer(vec![vec![]]),
    });
    let host = invoices_host(database.clone()).await;

    let outcome = host.deliver("invoices", order_created()).await;

    assert!(
        matches!(outcome, Some(DeliveryOutcome::Retry(_))),
        "{outcome:?}"
    );
    assert_eq!(
        names(&database.calls()).last().map(String::as_str),
        Some("rollback")
    );
}

#[tokio::test]
async fn malformed_event_data_is_rejected_without_touching_invoices() {
    let database = FakeDatabase::new(|_, _| answer(vec![vec![]]));
    let host = invoices_host(database.clone()).await;
    let mut event = order_created();
    event.data = br#"{"orderId":"nope"}"#.to_vec();

    let outcome = host.deliver("invoices", event).await;

    assert!(
        matches!(outcome, Some(DeliveryOutcome::Reject(_))),
        "{outcome:?}"
    );
    // The handler ran no statement, so the inbox insert went alone, for its verdict.
    assert_eq!(
        names(&database.calls()),
        ["begin", "INSERT INTO platform_inbox", "rollback"]
    );
}

#[tokio::test]
async fn the_invoices_api_finds_by_order_and_refuses_bad_parameters() {
    let database = FakeDatabase::new(|_, _| answer(vec![invoice_row()]));
    let host = invoices_host(database.clone()).await;
    let base = format!("http://{}", host.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(host.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();

    let page: serde_json::Value = client
        .get(format!("{base}/invoices/invoices?orderId={ORDER}"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");
    assert_eq!(page["items"][0]["id"], INVOICE);
    assert_eq!(page["nextCursor"], serde_json::Value::Null);
    let Call::Query(statement, _) = &database.calls()[1] else {
        panic!("{:?}", database.calls())
    };
    assert!(statement.contains("WHERE order_id = $1"), "{statement}");

    for (query, field) in [
        ("orderId=x", "orderId"),
        ("limit=0", "limit"),
        ("foo=1", "foo"),
    ] {
        let response = client
            .get(format!("{base}/invoices/invoices?{query}"))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 400, "{query}");
        let problem: serde_json::Value = response.json().await.expect("JSON");
        assert_eq!(problem["errors"][0]["field"], field, "{query}");
    }
    let response = client
        .post(format!("{base}/invoices/invoices"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET");
    let _ = stop.send(());
}
