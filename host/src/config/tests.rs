use std::path::Path;

use super::*;

const ORDERS: &str = r#"
[[components]]
name = "orders"
wasm = "Cargo.toml"
route = "/orders"
database_url = "postgres://app:secret@db.internal:5433/orders"
"#;

fn load(text: &str) -> anyhow::Result<Config> {
    load_with(text, [("UNUSED", "")])
}

fn load_with<const N: usize>(text: &str, env: [(&str, &str); N]) -> anyhow::Result<Config> {
    // Relative paths resolve against the crate folder, where Cargo.toml stands in for a .wasm.
    Config::from_toml(text, Path::new(env!("CARGO_MANIFEST_DIR")), &env)
}

fn error_of(text: &str) -> String {
    format!(
        "{:#}",
        load(text).expect_err("configuration should be refused")
    )
}

#[test]
fn a_minimal_manifest_gets_the_documented_defaults() {
    let config = load(ORDERS).expect("valid manifest");
    assert_eq!(config.http.listen.to_string(), "127.0.0.1:8000");
    assert_eq!(config.http.max_body_bytes, 1024 * 1024);
    assert_eq!(config.limits.memory_mib, 64);
    let orders = &config.components[0];
    assert_eq!(orders.route, "/orders");
    assert_eq!(orders.database.max_connections, 16);
    assert_eq!(orders.database.url.database_name(), "orders");
}

#[test]
fn a_database_url_prints_without_its_password() {
    let config = load(ORDERS).expect("valid manifest");
    let shown = config.components[0].database.url.to_string();
    assert_eq!(shown, "postgres://app:***@db.internal:5433/orders");
    assert!(!format!("{config:?}").contains("secret"));
}

#[test]
fn the_environment_overrides_the_listen_address_and_database_url() {
    let config = load_with(
        ORDERS,
        [
            ("HOST_LISTEN", "0.0.0.0:9000"),
            ("ORDERS_DATABASE_URL", "postgres://localhost/other"),
        ],
    )
    .expect("valid manifest");
    assert_eq!(config.http.listen.to_string(), "0.0.0.0:9000");
    assert_eq!(config.components[0].database.url.database_name(), "other");
}

#[test]
fn a_database_on_this_machine_goes_without_tls_unless_the_url_asks_for_it() {
    use crate::config::DatabaseUrl;
    use postgres_tls::SslMode;
    let mode = |url: &str| DatabaseUrl::parse(url).expect(url).tls().mode();
    for local in [
        "postgres://orders@localhost:5432/orders",
        "postgres://orders@127.0.0.1/orders",
        "postgres://orders@[::1]:5432/orders",
        "postgres://orders@%2Fvar%2Frun%2Fpostgresql/orders",
        "host=/var/run/postgresql dbname=orders",
    ] {
        assert_eq!(mode(local), SslMode::Disable, "{local}");
    }
    for remote in [
        "postgres://orders@db.internal:5432/orders",
        "postgres://orders@10.0.0.5/orders",
        "postgres://orders@localhost,db.internal/orders",
        "postgres://orders@localhost/orders?sslmode=prefer",
        "host=localhost hostaddr=10.0.0.5 dbname=orders",
    ] {
        assert_eq!(mode(remote), SslMode::Prefer, "{remote}");
    }
    assert_eq!(
        mode("postgres://orders@localhost/orders?sslmode=require"),
        SslMode::Require
    );
    assert_eq!(
        DatabaseUrl::parse("postgres://orders@localhost/orders")
            .expect("url")
            .pg_config()
            .get_ssl_mode(),
        tokio_postgres::config::SslMode::Disable
    );
}

#[test]
fn tls_settings_are_read_from_the_urls_and_a_bad_one_names_its_variable() {
    let url =
        "postgres://app:secret@db.internal:5432/orders?sslmode=verify-full&sslrootcert=system";
    let config = load_with(ORDERS, [("ORDERS_DATABASE_URL", url)])
        .expect("verify-full with the system's roots");
    let database = &config.components[0].database.url;
    assert_eq!(database.tls().mode(), postgres_tls::SslMode::VerifyFull);
    assert_eq!(
        database.to_string(),
        "postgres://app:***@db.internal:5432/orders?sslmode=verify-full"
    );

    let key_value = load_with(
        ORDERS,
        [(
            "ORDERS_DATABASE_URL",
            "host=db dbname=orders sslmode=require",
        )],
    )
    .expect("key-value");
    assert_eq!(
        key_value.components[0].database.url.tls().mode(),
        postgres_tls::SslMode::Require
    );
    assert_eq!(
        key_value.components[0]
            .database
            .url
            .pg_config()
            .get_ssl_mode(),
        tokio_postgres::config::SslMode::Require
    );

    let missing =
        "postgres://app@db/orders?sslmode=verify-full&sslrootcert=/nonexistent/rds-bundle.pem";
    let error = format!(
        "{:#}",
        load_with(ORDERS, [("ORDERS_DATABASE_URL", missing)]).expect_err("no such CA file")
    );
    assert!(
        error.contains("ORDERS_DATABASE_URL") && error.contains("/nonexistent/rds-bundle.pem"),
        "{error}"
    );
    let error = format!(
        "{:#}",
        load_with(
            ORDERS,
            [("ORDERS_DATABASE_URL", "postgres://db/orders?sslmode=on")]
        )
        .expect_err("bad mode")
    );
    assert!(error.contains("sslmode=on is not one of"), "{error}");

    let messaging = format!("{ORDERS}\n[messaging]\nexchange = \"platform.events\"\n");
    let plain_with_ca =
        "amqp://guest:guest@mq:5672/%2f?cacertfile=/etc/ssl/certs/ca-certificates.crt";
    let error = format!(
        "{:#}",
        load_with(&messaging, [("AMQP_URL", plain_with_ca)]).expect_err("CA on plain AMQP")
    );
    assert!(
        error.contains("AMQP_URL") && error.contains("amqps://"),
        "{error}"
    );
    let error = format!(
        "{:#}",
        load_with(
            &messaging,
            [(
                "AMQP_URL",
                "amqps://u:p@mq:5671/%2f?cacertfile=/nonexistent.pem"
            )]
        )
        .expect_err("no CA file")
    );
    assert!(error.contains("/nonexistent.pem"), "{error}");
    let config = load_with(
        &messaging,
        [(
            "AMQP_URL",
            "amqps://u:p@b-1.mq.eu-west-1.amazonaws.com:5671/%2f",
        )],
    )
    .expect("amqps");
    let url = config
        .messaging
        .expect("messaging")
        .url
        .expect("the host's broker URL");
    assert!(url.extra_ca().is_none());
    assert_eq!(
        url.to_string(),
        "amqps://u:***@b-1.mq.eu-west-1.amazonaws.com:5671/%2f"
    );
}

#[test]
fn a_missing_database_url_names_the_environment_variable_to_set() {
    let text = ORDERS.replace(
        "database_url = \"postgres://app:secret@db.internal:5433/orders\"",
        "",
    );
    assert!(
        error_of(&text).contains("ORDERS_DATABASE_URL"),
        "{}",
        error_of(&text)
    );
}

#[test]
fn an_unknown_key_is_refused_by_name() {
    let error = error_of(&format!("{ORDERS}\nmax_conections = 3\n"));
    assert!(error.contains("max_conections"), "{error}");
}

#[test]
fn a_route_without_a_leading_slash_is_refused() {
    let error = error_of(&ORDERS.replace("\"/orders\"", "\"orders\""));
    assert!(error.contains("components[0]: route"), "{error}");
}

#[test]
fn a_missing_wasm_file_says_how_to_build_it() {
    let error = error_of(&ORDERS.replace("Cargo.toml", "missing.wasm"));
    assert!(error.contains("cargo build --profile component"), "{error}");
}

#[test]
fn two_components_on_one_route_are_refused() {
    let second = ORDERS.replace("name = \"orders\"", "name = \"copy\"");
    let error = error_of(&format!("{ORDERS}{second}"));
    assert!(
        error.contains("route: \"/orders\" is used by two components"),
        "{error}"
    );
}

#[test]
fn a_url_without_a_database_name_is_refused() {
    let error = error_of(&ORDERS.replace("5433/orders", "5433"));
    assert!(error.contains("names no database"), "{error}");
}

#[test]
fn a_bad_listen_override_names_the_variable() {
    let error = format!(
        "{:#}",
        load_with(ORDERS, [("HOST_LISTEN", "localhost")]).expect_err("bad")
    );
    assert!(error.contains("HOST_LISTEN"), "{error}");
}

#[test]
fn zero_limits_are_refused() {
    let error = error_of(&format!("[limits]\nmemory_mib = 0\n{ORDERS}"));
    assert!(
        error.contains("limits.memory_mib: must be greater than 0"),
        "{error}"
    );
}

#[test]
fn a_route_that_would_hide_the_hosts_health_checks_is_refused() {
    for route in ["/health", "/health/live"] {
        let error =
            error_of(&ORDERS.replace("route = \"/orders\"", &format!("route = \"{route}\"")));
        assert!(
            error.contains(&format!(
                "components[0]: route: \"{route}\": /health is where the host answers"
            )),
            "{error}"
        );
    }
}

#[test]
fn a_route_under_another_components_route_is_refused_with_its_fix() {
    let second = ORDERS
        .replace("name = \"orders\"", "name = \"admin\"")
        .replace("route = \"/orders\"", "route = \"/orders/admin\"");
    let error = error_of(&format!("{ORDERS}{second}"));
    assert!(
        error.contains(
            "components[1].route: \"/orders/admin\" and the route \"/orders\" of component \
             `orders` overlap"
        ) && error.contains("such as \"/admin\""),
        "{error}"
    );
    // A route that only starts with the same letters is its own prefix.
    let neighbour = ORDERS
        .replace("name = \"orders\"", "name = \"orders-archive\"")
        .replace("route = \"/orders\"", "route = \"/orders-archive\"");
    load(&format!("{ORDERS}{neighbour}")).expect("not nested");
}

#[test]
fn each_subscribed_topic_has_one_publisher_from_the_components_or_the_manifest() {
    let messaging = "[messaging]\nurl = \"amqp://orders@localhost\"\n";
    let subscriber = format!("{messaging}{ORDERS}subscriptions = [\"invoices.issued\"]\n");
    let error = error_of(&subscriber);
    assert!(
        error.contains("subscribes to \"invoices.issued\", which no component here publishes"),
        "{error}"
    );

    let named = subscriber.replace(
        "url = \"amqp://orders@localhost\"\n",
        "url = \"amqp://orders@localhost\"\npublishers = { \"invoices.issued\" = \"invoices\" }\n",
    );
    let config = load(&named).expect("publisher named in the manifest");
    let publishers = &config.messaging.expect("messaging").publishers;
    assert_eq!(publishers["invoices.issued"], "invoices");

    let both = format!("{named}publishes = [\"invoices.issued\"]\n");
    let error = error_of(&both);
    assert!(
        error.contains("\"invoices.issued\" is published by `orders` here, not `invoices`"),
        "{error}"
    );
}

#[test]
fn a_component_publishing_a_topic_is_its_publisher() {
    let text = format!(
        "[messaging]\nurl = \"amqp://orders@localhost\"\n{ORDERS}publishes = [\"orders.created\"]\n"
    );
    let config = load(&text).expect("valid manifest");
    assert_eq!(
        config.messaging.expect("messaging").publishers["orders.created"],
        "orders"
    );
}

#[test]
fn per_component_concurrency_has_defaults_and_refuses_zero() {
    let config = load(ORDERS).expect("valid manifest");
    assert_eq!(
        (
            config.components[0].max_concurrency,
            config.components[0].max_queued
        ),
        (64, 256)
    );
    let error = error_of(&format!("{ORDERS}max_concurrency = 0\n"));
    assert!(
        error.contains("max_concurrency: must be greater than 0"),
        "{error}"
    );
}

#[test]
fn an_admin_listener_off_loopback_needs_a_token() {
    let error = format!(
        "{:#}",
        load_with(ORDERS, [("HOST_ADMIN_LISTEN", "0.0.0.0:9000")]).expect_err("refused")
    );
    assert!(
        error.contains("admin.listen: 0.0.0.0:9000 is reachable from other machines"),
        "{error}"
    );
    assert!(error.contains("HOST_ADMIN_TOKEN"), "{error}");

    let token = "0123456789abcdef0123";
    let config = load_with(
        ORDERS,
        [
            ("HOST_ADMIN_LISTEN", "0.0.0.0:9000"),
            ("HOST_ADMIN_TOKEN", token),
        ],
    )
    .expect("with a token");
    assert!(
        config
            .admin
            .token
            .as_ref()
            .is_some_and(|t| t.matches(token) && !t.matches("0123456789abcdef0124"))
    );
    assert!(
        !format!("{config:?}").contains(token),
        "the token never prints"
    );

    let short = format!(
        "{:#}",
        load_with(ORDERS, [("HOST_ADMIN_TOKEN", "short")]).expect_err("refused")
    );
    assert!(short.contains("at least 16 characters"), "{short}");
}

#[test]
fn the_compile_cache_lives_outside_the_source_tree_by_default() {
    let config = load_with(ORDERS, [("HOME", "/home/someone")]).expect("valid manifest");
    assert_eq!(
        config.cache.dir.as_deref(),
        Some(Path::new("/home/someone/.cache/wasm-host"))
    );
    let config =
        load_with(ORDERS, [("HOST_CACHE_DIR", "/var/cache/host")]).expect("valid manifest");
    assert_eq!(
        config.cache.dir.as_deref(),
        Some(Path::new("/var/cache/host"))
    );
    let config = load(ORDERS).expect("valid manifest");
    assert_eq!(
        config.cache.dir, None,
        "no home: no cache, rather than a shared temporary folder"
    );
}

#[test]
fn every_setting_can_come_from_the_environment_over_the_file() {
    let config = load_with(
        ORDERS,
        [
            ("HOST_HTTP__LISTEN", "0.0.0.0:8080"),
            ("HOST_HTTP__TRUST_FORWARDED_PREFIX", "true"),
            ("HOST_HTTP__REQUEST_TIMEOUT_MS", "2500"),
            ("HOST_LIMITS__MEMORY_MIB", "32"),
            ("HOST_COMPONENTS__ORDERS__ROUTE", "/shop"),
            ("HOST_COMPONENTS__ORDERS__MAX_CONCURRENCY", "8"),
            ("HOST_COMPONENTS__orders__MAX_QUEUED", "9"),
            ("HOST_CONFIG", "not a setting: no double underscore"),
        ],
    )
    .expect("valid");
    assert_eq!(config.http.listen.to_string(), "0.0.0.0:8080");
    assert!(config.http.trust_forwarded_prefix);
    assert_eq!(config.http.request_timeout, Duration::from_millis(2500));
    assert_eq!(config.limits.memory_mib, 32);
    let orders = &config.components[0];
    assert_eq!(
        (
            orders.route.as_str(),
            orders.max_concurrency,
            orders.max_queued
        ),
        ("/shop", 8, 9)
    );
    assert_eq!(
        config.components.len(),
        1,
        "a name in any case is the same component"
    );
    assert_eq!(
        orders.database.url.database_name(),
        "orders",
        "the file's other settings stay"
    );
}

#[test]
fn a_component_can_be_named_by_the_environment_alone() {
    let config = load_with(
        "",
        [
            ("HOST_COMPONENTS__BILLING_RUNS__WASM", "Cargo.toml"),
            ("HOST_COMPONENTS__BILLING_RUNS__ROUTE", "/billing"),
            (
                "HOST_COMPONENTS__BILLING_RUNS__DATABASE_URL",
                "postgres://billing@db/billing",
            ),
        ],
    )
    .expect("valid");
    let billing = &config.components[0];
    assert_eq!(
        (billing.name.as_str(), billing.route.as_str()),
        ("billing-runs", "/billing")
    );
    assert_eq!(billing.max_queued, 256, "defaults apply as in the file");
}

#[test]
fn a_bad_value_from_the_environment_is_named_by_its_variable() {
    let error =
        |env: [(&str, &str); 1]| format!("{:#}", load_with(ORDERS, env).expect_err("refused"));
    let bad = error([("HOST_HTTP__MAX_BODY_BYTES", "lots")]);
    assert_eq!(
        bad,
        "HOST_HTTP__MAX_BODY_BYTES: invalid type: found a string, expected usize"
    );
    let secret = error([(
        "HOST_COMPONENTS__ORDERS__PUBLISHES",
        "postgres://app:hunter2@db/orders",
    )]);
    assert!(
        secret.starts_with("HOST_COMPONENTS__ORDERS__PUBLISHES: ") && !secret.contains("hunter2"),
        "{secret}"
    );
    let bad = error([("HOST_COMPONENTS__ORDERS__MAX_QUEUED", "-1")]);
    assert!(
        bad.starts_with("HOST_COMPONENTS__ORDERS__MAX_QUEUED: "),
        "{bad}"
    );
    let bad = error([("HOST_HTTP__LISTN", "0.0.0.0:80")]);
    assert!(
        bad.starts_with("HOST_HTTP__LISTN: unknown field: found `listn`"),
        "{bad}"
    );
    let bad = error([("HOST_COMPONENTS__ORDERS", "x")]);
    assert!(bad.contains("HOST_COMPONENTS__<NAME>__<SETTING>"), "{bad}");
    let missing = format!(
        "{:#}",
        load_with("", [("HOST_COMPONENTS__BILLING__ROUTE", "/billing")]).expect_err("refused")
    );
    assert!(
        missing.contains("HOST_COMPONENTS__BILLING") && missing.contains("wasm"),
        "{missing}"
    );
}

/// The manifests the image holds load as compose configures them: the image's paths replaced
/// by the environment with this checkout's, as a container could.
#[test]
fn the_container_manifests_load_with_their_containers_environment() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for name in ["orders", "invoices"] {
        let text = std::fs::read_to_string(root.join(format!("deploy/manifests/{name}.toml")))
            .expect("manifest");
        let upper = name.to_ascii_uppercase();
        let (wasm, migrations, url) = (
            format!("HOST_COMPONENTS__{upper}__WASM"),
            format!("HOST_COMPONENTS__{upper}__MIGRATIONS"),
            format!("{upper}_DATABASE_URL"),
        );
        let migrations_dir = root
            .join(format!("components/{name}/migrations"))
            .display()
            .to_string();
        let database = format!("postgres://{name}:{name}-dev@postgres:5432/{name}");
        let env = [
            (wasm.as_str(), "Cargo.toml"),
            (migrations.as_str(), migrations_dir.as_str()),
            (url.as_str(), database.as_str()),
            ("HOST_ADMIN_TOKEN", "compose-local-admin-token-not-a-secret"),
            ("AMQP_URL", "amqp://guest:guest@rabbitmq:5672/%2f"),
        ];
        let own_login = format!("{upper}_AMQP_URL");
        let own_url = format!("amqp://{name}:{name}-dev@rabbitmq:5672/%2f");
        let env = [
            env[0],
            env[1],
            env[2],
            env[3],
            env[4],
            (own_login.as_str(), own_url.as_str()),
        ];
        let config = load_with(&text, env).unwrap_or_else(|err| panic!("{name}: {err:#}"));
        assert_eq!(config.http.listen.to_string(), "0.0.0.0:8000", "{name}");
        assert!(config.http.trust_forwarded_prefix, "{name}: behind Kong");
        assert_eq!(config.admin.listen.to_string(), "0.0.0.0:9000", "{name}");
        assert_eq!(
            config.components.len(),
            1,
            "{name}: one component a container"
        );
        assert_eq!(config.components[0].route, format!("/{name}"));
        assert!(config.messaging.is_some(), "{name}");
    }
}

#[test]
fn each_component_logs_in_to_the_broker_as_a_user_named_after_it() {
    let both = format!(
        "{ORDERS}publishes = [\"orders.created\"]\n[[components]]\nname = \"invoices\"\n\
         wasm = \"Cargo.toml\"\nroute = \"/invoices\"\ndatabase_url = \"postgres://db/invoices\"\n\
         subscriptions = [\"orders.created\"]\namqp_url = \"amqp://invoices:pw@mq:5672/%2f\"\n\
         [messaging]\nurl = \"amqp://guest:guest@mq:5672/%2f\"\n"
    );
    let error = format!(
        "{:#}",
        load(&both).expect_err("orders would log in as guest")
    );
    assert!(
        error.contains("`orders` would log in to the broker as `guest`")
            && error.contains("ORDERS_AMQP_URL"),
        "{error}"
    );
    let config = load_with(&both, [("ORDERS_AMQP_URL", "amqp://orders:pw@mq:5672/%2f")])
        .expect("own logins");
    let users: Vec<&str> = config
        .components
        .iter()
        .map(|c| c.amqp_url.as_ref().expect("login").user())
        .collect();
    assert_eq!(users, ["orders", "invoices"]);
    assert!(
        !format!("{config:?}").contains("pw@"),
        "passwords never print"
    );
    let error = format!(
        "{:#}",
        load(&both.replace("url = \"amqp://guest:guest@mq:5672/%2f\"", "")).expect_err("no URL")
    );
    assert!(
        error.contains("no broker URL") && error.contains("ORDERS_AMQP_URL"),
        "{error}"
    );
}
