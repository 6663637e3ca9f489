//! TLS to PostgreSQL and RabbitMQ, as a host in the cloud uses them: a PostgreSQL server with TLS
//! on (and plain TCP refused) and a TLS front for RabbitMQ, both with a CA made by the test.

mod pki;
mod server;

use std::time::{Duration, Instant};

use host::config::DatabaseUrl;
use host::config::postgres_tls;

use super::broker::TestBroker;
use super::helpers::{TestDatabase, TestHost, amqp_base, manifest};
use server::{TlsFront, TlsPostgres};

/// Connects as the host does with `url`; whether the session uses TLS, or why it failed.
async fn session_uses_tls(url: &str) -> Result<bool, String> {
    let url = DatabaseUrl::parse(url).map_err(|err| format!("{err:#}"))?;
    let (client, connection) = url
        .pg_config()
        .connect(url.tls().connector().clone())
        .await
        .map_err(|err| {
            let why = postgres_tls::explain(&err, url.tls().mode()).unwrap_or_default();
            format!(
                "{err}; {why}; sqlstate {:?}",
                err.code().map(|code| code.code())
            )
        })?;
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|err| err.to_string())?;
    Ok(row.get(0))
}

#[tokio::test]
async fn verify_full_takes_the_servers_certificate_only_with_its_ca() {
    let server = TlsPostgres::start().await;
    let ca = format!("sslrootcert={}", server.ca.file.display());
    let other = format!("sslrootcert={}", server.other_ca.file.display());
    let at = |host: &str, query: String| server.url(host, "postgres", &query);

    assert_eq!(
        session_uses_tls(&server.verified_url("postgres")).await,
        Ok(true),
        "verify-full with the CA"
    );

    // Without the CA the system's roots are used, and none of them signed the test's server.
    let refused = session_uses_tls(&at("localhost", "sslmode=verify-full".into()))
        .await
        .expect_err("no CA");
    assert!(refused.contains("sslrootcert"), "{refused}");
    let refused = session_uses_tls(&at("localhost", format!("sslmode=verify-full&{other}")))
        .await
        .expect_err("wrong CA");
    assert!(refused.contains("certificate was refused"), "{refused}");
    let refused = session_uses_tls(&at("localhost", format!("sslmode=verify-ca&{other}")))
        .await
        .expect_err("wrong CA");
    assert!(refused.contains("UnknownIssuer"), "{refused}");
    assert!(refused.contains("certificate was refused"), "{refused}");

    // The certificate names `localhost`, not 127.0.0.1: verify-full checks the name, verify-ca
    // (and require with a CA, as libpq) only the chain.
    let refused = session_uses_tls(&at("127.0.0.1", format!("sslmode=verify-full&{ca}")))
        .await
        .expect_err("wrong name");
    assert!(
        refused.contains("does not name the URL's host"),
        "{refused}"
    );
    assert_eq!(
        session_uses_tls(&at("127.0.0.1", format!("sslmode=verify-ca&{ca}"))).await,
        Ok(true)
    );
    let refused = session_uses_tls(&at("localhost", format!("sslmode=require&{other}")))
        .await
        .expect_err("wrong CA");
    assert!(refused.contains("certificate was refused"), "{refused}");

    // Encrypted without a check, as libpq does: require, and prefer when offered. Without an
    // sslmode a server on this machine is reached without TLS (this one takes TLS only).
    assert_eq!(
        session_uses_tls(&at("127.0.0.1", "sslmode=require".into())).await,
        Ok(true)
    );
    assert_eq!(
        session_uses_tls(&at("127.0.0.1", "sslmode=prefer".into())).await,
        Ok(true)
    );
    let refused = session_uses_tls(&at("127.0.0.1", String::new()))
        .await
        .expect_err("plain TCP by default on loopback");
    assert!(refused.contains("Some(\"28000\")"), "{refused}");

    // The server takes TLS only; `disable` is honoured, so it is refused.
    let refused = session_uses_tls(&at("localhost", "sslmode=disable".into()))
        .await
        .expect_err("plain TCP");
    assert!(refused.contains("Some(\"28000\")"), "{refused}");
}

#[tokio::test]
async fn a_host_reaches_its_database_and_broker_only_over_verified_tls() {
    let server = TlsPostgres::start().await;
    let admin = DatabaseUrl::parse(&server.verified_url("postgres")).expect("admin URL");
    let (client, connection) = admin
        .pg_config()
        .connect(admin.tls().connector().clone())
        .await
        .expect("admin");
    tokio::spawn(connection);
    for name in ["orders", "invoices"] {
        for statement in [
            format!("CREATE ROLE {name} LOGIN"),
            format!("CREATE DATABASE {name} OWNER {name}"),
        ] {
            client.batch_execute(&statement).await.expect("set up");
        }
    }
    let url_of = |name: &str| {
        server
            .verified_url(name)
            .replace("postgres@", &format!("{name}@"))
    };
    let (orders_url, invoices_url) = (url_of("orders"), url_of("invoices"));

    let broker = TestBroker::new();
    let front = TlsFront::start(&server.ca, rabbitmq_address()).await;
    let amqps = format!(
        "amqps://guest:guest@localhost:{}/%2f?cacertfile={}",
        front.port,
        server.ca.file.display()
    );
    let host = TestHost::start(&manifest(
        &broker,
        &amqps,
        &[("orders", &orders_url), ("invoices", &invoices_url)],
    ))
    .await;
    broker.wait_for_consumer("invoices").await;

    let body = serde_json::json!({ "customerId": uuid::Uuid::new_v4(), "amount": 1250 });
    let created = host
        .client
        .post(host.url("/orders/orders"))
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(
        created.status(),
        201,
        "{}",
        created.text().await.unwrap_or_default()
    );

    // orders.created and invoices.issued travel over amqps; both databases over verify-full.
    let orders = client_of(&server, "orders").await;
    let started = Instant::now();
    loop {
        let invoiced: i64 = orders
            .query_one("SELECT count(*) FROM orders WHERE status = 'invoiced'", &[])
            .await
            .expect("orders")
            .get(0);
        if invoiced == 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the order was never invoiced over TLS"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let health: serde_json::Value = host
        .client
        .get(host.url("/health"))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("JSON");
    assert_eq!(health["status"], "up", "{health}");

    // Every session the host holds is encrypted (plain TCP would have been refused anyway).
    let row = client
        .query_one(
            "SELECT count(*), bool_and(s.ssl) \
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.usename IN ('orders', 'invoices')",
            &[],
        )
        .await
        .expect("sessions");
    assert!(row.get::<_, i64>(0) > 0, "the host holds no session");
    assert_eq!(row.get::<_, Option<bool>>(1), Some(true));
    host.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_host_whose_ca_did_not_sign_its_databases_certificate_refuses_to_start() {
    let server = TlsPostgres::start().await;
    let url = server.url(
        "localhost",
        "postgres",
        &format!(
            "sslmode=verify-full&sslrootcert={}",
            server.other_ca.file.display()
        ),
    );
    let broker = TestBroker::new();
    let config = super::helpers::config(&manifest(&broker, &amqp_base(), &[("orders", &url)]));
    let error = match host::Host::build(config).await {
        Ok(_) => panic!("a host started on a database whose certificate it cannot verify"),
        Err(err) => format!("{err:#}"),
    };
    assert!(
        error.contains("certificate was refused") && error.contains("sslrootcert"),
        "{error}"
    );
    assert!(
        error.contains("postgres://postgres@localhost") && error.contains("sslmode=verify-full"),
        "{error}"
    );
}

#[tokio::test]
async fn an_amqps_broker_signed_by_an_unknown_ca_is_refused() {
    let database = TestDatabase::create().await;
    let folder = crate::files::TempDir::new();
    let ca = pki::Authority::new(&folder.0, "broker-ca");
    let front = TlsFront::start(&ca, rabbitmq_address()).await;
    let broker = TestBroker::new();
    // No cacertfile: only the built-in roots, which never signed the test's CA.
    let amqps = format!("amqps://guest:guest@localhost:{}/%2f", front.port);
    let host = TestHost::start(&manifest(&broker, &amqps, &[("orders", &database.url())])).await;
    let started = Instant::now();
    let why = loop {
        // The admin listener's readiness says why; the data port's says only "down".
        let health: serde_json::Value = host
            .client
            .get(host.admin_url("/readyz"))
            .send()
            .await
            .expect("readiness")
            .json()
            .await
            .expect("JSON");
        let broker_state = health["checks"]["orders.broker"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if broker_state.to_lowercase().contains("certificate")
            || broker_state.contains("UnknownIssuer")
        {
            assert_eq!(health["status"], "degraded", "{health}");
            break broker_state;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the broker never failed on its certificate: {health}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(why.starts_with("down"), "{why}");
    host.stop().await.expect("clean stop");
}

/// `host:port` of the shared RabbitMQ, from the tests' AMQP URL.
fn rabbitmq_address() -> String {
    let base = amqp_base();
    let rest = base.split_once('@').map_or(base.as_str(), |(_, rest)| rest);
    let server = rest.split('/').next().unwrap_or("localhost:5672");
    if server.contains(':') {
        server.to_owned()
    } else {
        format!("{server}:5672")
    }
}

async fn client_of(server: &TlsPostgres, database: &str) -> tokio_postgres::Client {
    let url = DatabaseUrl::parse(&server.verified_url(database)).expect("URL");
    let (client, connection) = url
        .pg_config()
        .connect(url.tls().connector().clone())
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}
