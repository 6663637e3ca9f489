//! Component tests: the built `orders.wasm` under the real host, with an in-memory database that
//! answers each statement and records what the component asked. No services needed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use host::Host;
use host::capabilities::sql::fake::{Call, FakeDatabase};
use host::capabilities::sql::{Database, Error, RowSet, Value};
use host::config::Config;
use serde_json::{Value as Json, json};

const CUSTOMER: &str = "0190b3b2-8c1a-7d2e-9f00-4a5b6c7d8e9f";
const ORDER: &str = "01a21143-e0bb-724a-bc08-9cf6be4f538a";
/// 2026-01-01T00:00:00Z in microseconds.
const NEW_YEAR: i64 = 1_767_225_600_000_000;

struct Served {
    base: String,
    client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serves orders.wasm on a free port with `database` as its database.
async fn serve(database: FakeDatabase) -> Served {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let wasm = workspace.join("target/wasm32-wasip2/component/orders.wasm");
    assert!(wasm.is_file(), "{} is missing: run the README's test command", wasm.display());
    let manifest = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[limits]\nmax_instances = 16\n\
         [[components]]\nname = \"orders\"\nwasm = \"{}\"\nroute = \"/orders\"\n\
         database_url = \"postgres://unused/orders\"\n",
        wasm.display()
    );
    let config = Config::from_toml(&manifest, &workspace, &[("UNUSED", "")]).expect("manifest");
    let databases = HashMap::from([("orders".to_owned(), Arc::new(database) as Arc<dyn Database>)]);
    let host = Host::build_with(config, databases).await.expect("host builds");
    let base = format!("http://{}", host.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(host.run_until_stopped(async {
        let _ = stopped.await;
    }));
    Served { base, client: reqwest::Client::new(), stop: Some(stop) }
}

fn order_row(id: &str, amount: i64) -> Vec<Value> {
    vec![
        Value::Uuid(id.into()),
        Value::Uuid(CUSTOMER.into()),
        Value::Int64(amount),
        Value::Text("pending".into()),
        Value::Timestamp(NEW_YEAR),
    ]
}

fn rows(rows: Vec<Vec<Value>>) -> Result<RowSet, Error> {
    let columns = ["id", "customer_id", "amount", "status", "created_at"].map(String::from).to_vec();
    Ok(RowSet { columns, rows })
}

/// A database that inserts whatever it is given and finds nothing.
fn inserting() -> FakeDatabase {
    FakeDatabase::new(|statement, params| {
        if statement.starts_with("INSERT INTO orders") {
            let Value::Uuid(id) = &params[0] else { panic!("id is a uuid: {params:?}") };
            let Value::Int64(amount) = params[2] else { panic!("amount is int64: {params:?}") };
            rows(vec![order_row(id, amount)])
        } else {
            rows(vec![])
        }
    })
}

async fn post(served: &Served, body: &Json) -> reqwest::Response {
    served.client.post(format!("{}/orders/orders", served.base)).json(body).send().await.expect("sent")
}

#[tokio::test]
async fn creating_an_order_is_one_insert_in_a_committed_transaction() {
    let database = inserting();
    let served = serve(database.clone()).await;

    let response = post(&served, &json!({ "customerId": CUSTOMER, "amount": 250 })).await;

    assert_eq!(response.status(), 201);
    let order: Json = response.json().await.expect("JSON");
    assert_eq!(order["amount"], 250);
    assert_eq!(order["createdAt"], "2026-01-01T00:00:00.000000Z");
    let calls = database.calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(matches!(calls[0], Call::Begin));
    let Call::Query(statement, params) = &calls[1] else { panic!("{calls:?}") };
    assert!(statement.starts_with("INSERT INTO orders (id, customer_id, amount, idempotency_key)"), "{statement}");
    assert!(statement.contains("ON CONFLICT (idempotency_key) DO NOTHING"), "{statement}");
    assert!(matches!(&params[..], [Value::Uuid(id), Value::Uuid(customer), Value::Int64(250), Value::Null]
        if customer == CUSTOMER && *id == order["id"]), "{params:?}");
    assert!(matches!(calls[2], Call::Commit));
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
    let Call::Query(_, params) = &calls[1] else { panic!("{calls:?}") };
    assert!(matches!(&params[3], Value::Text(key) if key == "abc-123"), "{params:?}");
}

#[tokio::test]
async fn invalid_input_touches_no_database() {
    let database = inserting();
    let served = serve(database.clone()).await;

    for body in [json!({ "customerId": CUSTOMER, "amount": 0 }), json!({ "customerId": "x", "amount": 1 }), json!([])] {
        assert_eq!(post(&served, &body).await.status(), 400, "{body}");
    }
    let listing = served.client.get(format!("{}/orders/orders?limit=0", served.base)).send().await.expect("sent");
    assert_eq!(listing.status(), 400);

    assert!(database.calls().is_empty(), "{:?}", database.calls());
}

#[tokio::test]
async fn an_unknown_order_is_a_404_from_one_select() {
    let database = inserting();
    let served = serve(database.clone()).await;

    let response = served.client.get(format!("{}/orders/orders/{ORDER}", served.base)).send().await.expect("sent");

    assert_eq!(response.status(), 404);
    let calls = database.calls();
    let Call::Query(statement, params) = &calls[1] else { panic!("{calls:?}") };
    assert!(statement.contains("FROM orders WHERE id = $1"), "{statement}");
    assert!(matches!(&params[..], [Value::Uuid(id)] if id == ORDER), "{params:?}");
}

#[tokio::test]
async fn a_list_asks_for_one_row_more_than_the_page_to_find_the_next_cursor() {
    let database = FakeDatabase::new(|_, _| {
        rows(vec![order_row(ORDER, 1), order_row("01a21143-e0bb-724a-bc08-9cf6be4f5389", 2)])
    });
    let served = serve(database.clone()).await;

    let page: Json = served
        .client
        .get(format!("{}/orders/orders?limit=1&customerId={CUSTOMER}", served.base))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");

    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["nextCursor"], ORDER);
    let calls = database.calls();
    let Call::Query(statement, params) = &calls[1] else { panic!("{calls:?}") };
    assert!(statement.contains("WHERE customer_id = $1 ORDER BY id DESC LIMIT $2"), "{statement}");
    assert!(matches!(&params[..], [Value::Uuid(_), Value::Int64(2)]), "{params:?}");
}

#[tokio::test]
async fn a_row_the_component_cannot_read_is_a_500_and_the_transaction_rolls_back() {
    let database = FakeDatabase::new(|_, _| rows(vec![vec![Value::Text("not an order".into())]]));
    let served = serve(database.clone()).await;

    let response = served.client.get(format!("{}/orders/orders/{ORDER}", served.base)).send().await.expect("sent");

    assert_eq!(response.status(), 500);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    assert!(matches!(database.calls().last(), Some(Call::Rollback)), "{:?}", database.calls());
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
    let health = served.client.get(format!("{}/health", served.base)).send().await.expect("sent");
    assert_eq!(health.status(), 503);
}

#[tokio::test]
async fn a_file_that_is_not_a_component_is_refused_at_start() {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifest = "[[components]]\nname = \"orders\"\nwasm = \"Cargo.toml\"\nroute = \"/orders\"\n\
                    database_url = \"postgres://unused/orders\"\n";
    let config = Config::from_toml(manifest, &workspace, &[("UNUSED", "")]).expect("manifest");
    let databases = HashMap::from([("orders".to_owned(), Arc::new(inserting()) as Arc<dyn Database>)]);

    let error = match Host::build_with(config, databases).await {
        Ok(_) => panic!("a TOML file is not a component"),
        Err(err) => format!("{err:#}"),
    };

    assert!(error.contains("Cargo.toml is not a valid WebAssembly component"), "{error}");
}
