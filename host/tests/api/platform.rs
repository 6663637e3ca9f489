//! The host's own promises: migrations, readiness, database outages, shutdown, bad components.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{self, OrdersApp, TcpProxy, TestBroker, TestDatabase, TestHost};

const CUSTOMER: &str = "0190b3b2-8c1a-7d2e-9f00-4a5b6c7d8e9f";

#[tokio::test]
async fn migrating_twice_is_harmless() {
    let db = TestDatabase::create().await;
    let manifest = helpers::orders_manifest(&TestBroker::new(), &db.url());
    let config = helpers::config(&manifest);

    let first = host::migrations::migrate(&config.components[0])
        .await
        .expect("first run");
    let second = host::migrations::migrate(&config.components[0])
        .await
        .expect("second run");

    assert_eq!(
        first,
        [
            "V1__create_orders",
            "V2__link_invoices",
            "V3__status_index_and_amount_bound"
        ]
    );
    assert!(second.is_empty(), "nothing left to apply: {second:?}");
}

#[tokio::test]
async fn hosts_starting_at_once_migrate_once() {
    let db = TestDatabase::create().await;
    let config = helpers::config(&helpers::orders_manifest(&TestBroker::new(), &db.url()));
    let component = &config.components[0];

    let runs =
        futures::future::join_all((0..4).map(|_| host::migrations::migrate(component))).await;

    let applied: Vec<Vec<String>> = runs
        .into_iter()
        .map(|run| run.expect("migration run"))
        .collect();
    assert_eq!(
        applied.iter().filter(|a| !a.is_empty()).count(),
        1,
        "{applied:?}"
    );
    let client = db.connect().await;
    let rows = client
        .query("SELECT version FROM platform_schema_history", &[])
        .await
        .expect("history");
    assert_eq!(rows.len(), 3);
    let host_rows = client
        .query("SELECT version FROM platform_host_schema_history", &[])
        .await
        .expect("the host's own history");
    assert_eq!(
        host_rows.len(),
        2,
        "the host's tables are migrations 1 and 2"
    );
}

#[tokio::test]
async fn a_host_starts_on_a_database_a_newer_host_migrated() {
    let db = TestDatabase::create().await;
    let config = helpers::config(&helpers::orders_manifest(&TestBroker::new(), &db.url()));
    host::migrations::migrate(&config.components[0])
        .await
        .expect("migrates");
    // What a newer release of the host leaves: a migration of its own this host does not know.
    db.connect()
        .await
        .execute(
            "INSERT INTO platform_host_schema_history (version, name, applied_on, checksum) \
             SELECT 99, 'from_a_newer_host', applied_on, '0' \
             FROM platform_host_schema_history WHERE version = 1",
            &[],
        )
        .await
        .expect("a newer host's migration");

    host::migrations::migrate(&config.components[0])
        .await
        .expect("rolled back, the older host starts");
}

#[tokio::test]
async fn a_database_whose_host_tables_predate_their_history_keeps_its_rows_and_gains_it() {
    let db = TestDatabase::create().await;
    let client = db.connect().await;
    // What a host made before its tables had a history: the same tables, and an event in them.
    let tables = include_str!("../../migrations/V1__messaging_tables.sql");
    client.batch_execute(tables).await.expect("tables made");
    client
        .execute(
            "INSERT INTO platform_outbox (id, topic, source, content_type, data) \
             VALUES ('e-1', 'orders.created', 'orders', 'application/json', '{}')",
            &[],
        )
        .await
        .expect("an event");
    let config = helpers::config(&helpers::orders_manifest(&TestBroker::new(), &db.url()));

    host::migrations::migrate(&config.components[0])
        .await
        .expect("migrates");

    let kept: i64 = client
        .query_one("SELECT count(*) FROM platform_outbox WHERE id = 'e-1'", &[])
        .await
        .expect("outbox")
        .get(0);
    assert_eq!(kept, 1);
    let versions: Vec<i32> = client
        .query(
            "SELECT version FROM platform_host_schema_history ORDER BY version",
            &[],
        )
        .await
        .expect("the host's own history")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(versions, [1, 2]);
}

#[tokio::test]
async fn a_database_outage_answers_503_and_recovers_without_a_restart() {
    let db = Arc::new(TestDatabase::create().await);
    let proxy = TcpProxy::start("127.0.0.1:5432").await;
    let broker = TestBroker::new();
    let host = TestHost::start(&helpers::orders_manifest(
        &broker,
        &proxy.postgres_url(&db.name),
    ))
    .await;
    let app = OrdersApp { host, db, broker };
    let body = json!({ "customerId": CUSTOMER, "amount": 5 });
    assert_eq!(app.post_order(&body).await.status(), 201);

    proxy.set_up(false);
    // The proxy closes its connections in the background; readiness notices first.
    let mut health = app.get("/health").await;
    for _ in 0..100 {
        if health.status() == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        health = app.get("/health").await;
    }
    assert_eq!(health.status(), 503);
    assert_eq!(health.headers()["content-type"], "application/problem+json");
    let health: Value = health.json().await.expect("JSON");
    assert_eq!(health["status"], 503, "{health}");
    assert!(
        health["checks"]["orders.database"]
            .as_str()
            .is_some_and(|s| s.starts_with("down")),
        "{health}"
    );
    let response = app.post_order(&body).await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );

    proxy.set_up(true);
    let mut recovered = false;
    for _ in 0..50 {
        if app.post_order(&body).await.status() == 201 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        recovered,
        "orders are accepted again once the database is back"
    );
    assert_eq!(app.get("/health").await.status(), 200);
    assert_eq!(app.count_orders().await, 2);
}

#[tokio::test]
async fn an_unreachable_database_at_start_is_a_clear_error() {
    let proxy = TcpProxy::start("127.0.0.1:5432").await;
    proxy.set_up(false);
    let manifest = helpers::orders_manifest(&TestBroker::new(), &proxy.postgres_url("orders"));

    let error = match host::Host::build(helpers::config(&manifest)).await {
        Ok(_) => panic!("the host must not start without its database"),
        Err(err) => format!("{err:#}"),
    };

    assert!(
        error.contains("cannot reach PostgreSQL at postgres://orders@127.0.0.1"),
        "{error}"
    );
    assert!(error.contains("component `orders`"), "{error}");
}

#[tokio::test]
async fn a_missing_database_says_how_to_create_it() {
    let manifest = helpers::orders_manifest(
        &TestBroker::new(),
        &format!("{}/no_such_database_here", helpers::postgres_base()),
    );

    let error = match host::Host::build(helpers::config(&manifest)).await {
        Ok(_) => panic!("the host must not start without its database"),
        Err(err) => format!("{err:#}"),
    };

    assert!(error.contains("createdb no_such_database_here"), "{error}");
}

#[tokio::test]
async fn shutdown_lets_requests_in_flight_finish() {
    let app = OrdersApp::spawn().await;
    // Hold the orders table so the POST below waits inside its transaction.
    let mut blocker = app.db.connect().await;
    let lock = blocker.transaction().await.expect("begin");
    lock.batch_execute("LOCK TABLE orders IN EXCLUSIVE MODE")
        .await
        .expect("lock");

    let client = app.host.client.clone();
    let url = app.host.url("/orders/orders");
    let in_flight = tokio::spawn(async move {
        client
            .post(url)
            .json(&json!({ "customerId": CUSTOMER, "amount": 9 }))
            .send()
            .await
    });
    // Wait until the POST is inside its transaction, blocked on the lock.
    let observer = app.db.connect().await;
    let waiting =
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'";
    for attempt in 0.. {
        let blocked: i64 = observer
            .query_one(waiting, &[&app.db.name])
            .await
            .expect("activity")
            .get(0);
        if blocked == 1 {
            break;
        }
        assert!(attempt < 200, "the POST never reached the database");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    let OrdersApp {
        host,
        db,
        broker: _broker,
    } = app;
    let address = host.address;
    let stopping = tokio::spawn(host.stop());
    // No longer accepting: new connections are refused while the POST is still held.
    for attempt in 0.. {
        if tokio::net::TcpStream::connect(address).await.is_err() {
            break;
        }
        assert!(attempt < 200, "the listener is still accepting");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        !in_flight.is_finished(),
        "the in-flight request is still waiting on the lock"
    );
    lock.rollback().await.expect("release the lock");

    let response = in_flight
        .await
        .expect("task")
        .expect("the in-flight request was answered");
    assert_eq!(response.status(), 201);
    stopping.await.expect("task").expect("clean stop");
    let client = db.connect().await;
    let count: i64 = client
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(count, 1);
}

#[tokio::test]
async fn retention_deletes_only_old_sent_events_and_old_inbox_records() {
    let db = TestDatabase::create().await;
    let config = helpers::config(&helpers::orders_manifest(&TestBroker::new(), &db.url()));
    host::migrations::migrate(&config.components[0])
        .await
        .expect("migrated");
    let client = db.connect().await;
    client
        .batch_execute(
            "INSERT INTO platform_outbox (id, topic, source, content_type, data, sent_at) VALUES
                 ('old-sent', 't', 's', 'application/json', '\\x7b7d', now() - interval '8 days'),
                 ('new-sent', 't', 's', 'application/json', '\\x7b7d', now() - interval '1 hour');
             INSERT INTO platform_outbox (id, topic, source, content_type, data, created_at) VALUES
                 ('old-unsent', 't', 's', 'application/json', '\\x7b7d', \
                  now() - interval '30 days');
             INSERT INTO platform_inbox (source, event_id, topic, handled_at) VALUES
                 ('s', 'old', 't', now() - interval '8 days'),
                 ('s', 'new', 't', now());",
        )
        .await
        .expect("rows");
    let database = host::capabilities::sql::postgres::PgDatabase::new(
        &config.components[0].database,
        1 << 20,
        Duration::from_secs(30),
    )
    .expect("pool");

    let retention = host::capabilities::messaging::retention::Retention::new(
        "orders".into(),
        Arc::new(database),
        Duration::from_secs(7 * 24 * 3600),
    );
    assert_eq!(retention.prune().await.expect("pruned"), 2);

    let outbox: Vec<String> = client
        .query("SELECT id FROM platform_outbox ORDER BY id", &[])
        .await
        .expect("ids")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        outbox,
        ["new-sent", "old-unsent"],
        "unsent events are never deleted"
    );
    let inbox: Vec<String> = client
        .query("SELECT event_id FROM platform_inbox", &[])
        .await
        .expect("ids")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(inbox, ["new"]);
}

#[tokio::test]
async fn a_request_over_its_deadline_is_a_504_and_leaves_nothing_behind() {
    let db = Arc::new(TestDatabase::create().await);
    let broker = TestBroker::new();
    let manifest = helpers::orders_manifest(&broker, &db.url())
        .replace("request_timeout_ms = 5000", "request_timeout_ms = 1000");
    let app = OrdersApp {
        host: TestHost::start(&manifest).await,
        db,
        broker,
    };
    let mut blocker = app.db.connect().await;
    let lock = blocker.transaction().await.expect("begin");
    lock.batch_execute("LOCK TABLE orders IN EXCLUSIVE MODE")
        .await
        .expect("lock");
    let body = json!({ "customerId": CUSTOMER, "amount": 4 });

    let started = std::time::Instant::now();
    let response = app.post_order(&body).await;

    assert_eq!(response.status(), 504);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered at the deadline, not after the lock"
    );
    lock.rollback().await.expect("release the lock");
    assert_eq!(
        app.post_order(&body).await.status(),
        201,
        "the pool still works"
    );
    assert_eq!(
        app.count_orders().await,
        1,
        "the timed-out order was rolled back"
    );
}

#[tokio::test]
async fn a_guard_whose_statement_failed_before_it_was_sent_still_goes_before_the_commit() {
    use host::capabilities::memory::HostMemory;
    use host::capabilities::sql::postgres::PgDatabase;
    use host::capabilities::sql::{
        Guard, SqlComponent, SqlCtx, SqlLimits, Value as SqlValue, Verdicts, inspect,
    };

    let db = TestDatabase::create().await;
    let client = db.connect().await;
    client
        .batch_execute(
            "CREATE TABLE guard_rows (k text PRIMARY KEY); CREATE TABLE work (n int NOT NULL);",
        )
        .await
        .expect("tables");
    let config = helpers::config(&helpers::orders_manifest(&TestBroker::new(), &db.url()));
    let database = PgDatabase::new(
        &config.components[0].database,
        1 << 20,
        Duration::from_secs(30),
    )
    .expect("pool");
    let component = SqlComponent {
        database: Arc::new(database),
        limits: SqlLimits {
            max_statement_bytes: 4096,
            max_parameters: 8,
            max_parameter_bytes: 4096,
            max_result_bytes: 1 << 20,
        },
        memory: HostMemory::new(1 << 20),
        turns: Arc::new(tokio::sync::Semaphore::new(1)),
        verdicts: Verdicts::default(),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut sql = SqlCtx::new(Arc::new(component), deadline);
    sql.guard(
        "record the event",
        "INSERT INTO guard_rows VALUES ($1) ON CONFLICT DO NOTHING",
        vec![SqlValue::Text("event-1".into())],
    );

    // The handler's first statement wants a parameter it is not given: it fails before anything
    // of it, or of the guard queued with it, is sent. The handler goes on and writes.
    let missing = inspect("INSERT INTO work VALUES ($1)").expect("a statement");
    assert!(sql.execute(missing, vec![]).await.is_err());
    sql.defer("INSERT INTO work VALUES (1)", vec![])
        .await
        .expect("deferred");
    sql.finish(true).await.expect("committed");

    assert!(matches!(sql.guarded(), Some(Guard::Passed)));
    let count = |table: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .await
                .expect("count")
                .get::<_, i64>(0)
        }
    };
    assert_eq!(count("work").await, 1);
    assert_eq!(
        count("guard_rows").await,
        1,
        "the work committed without its guard"
    );
}
