//! Runs the real host for a test: fresh PostgreSQL databases of its own, each owned by a login
//! role of its own that is no superuser (both dropped afterwards), an exchange and queues of its
//! own on RabbitMQ (deleted afterwards), port 0, the built components. `TEST_LOG=1` shows the
//! host's logs.
//!
//! PostgreSQL is found at `TEST_POSTGRES_URL` (default `postgres://postgres@localhost:5432`),
//! as a superuser able to create and drop roles and databases; the test roles have no password,
//! so the server must trust local connections (`./test.sh` sets that up). RabbitMQ is found at
//! `TEST_AMQP_URL` (default `amqp://guest:guest@localhost:5672/%2f`; only its host and port are
//! used) and its management API at `TEST_RABBITMQ_API` (default `http://localhost:15672`, as
//! guest): the tests' exchanges and queues live in the vhost `platform-tests`, where each
//! component logs in as a user named after it with rights to its own queues only, as in
//! production (see [`ensure_broker_users`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Once};

use host::Host;
use host::config::Config;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use super::tcp_proxy::TcpProxy;

pub fn postgres_base() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@localhost:5432".into())
}

/// The folder of the workspace.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A component built by `cargo build --profile component --target wasm32-wasip2`.
pub fn component_wasm(name: &str) -> PathBuf {
    let path = workspace().join(format!("target/wasm32-wasip2/component/{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: run the README's test command, which builds the components first",
        path.display()
    );
    path
}

fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            tracing_subscriber::fmt()
                .with_env_filter("info,host=debug")
                .with_test_writer()
                .init();
        }
    });
}

/// `host:port` of the PostgreSQL server, from [`postgres_base`].
pub fn postgres_server() -> String {
    let base = postgres_base();
    let rest = base
        .split_once("://")
        .map_or(base.as_str(), |(_, rest)| rest);
    rest.rsplit_once('@')
        .map_or(rest, |(_, server)| server)
        .trim_end_matches('/')
        .to_owned()
}

/// A database of its own for one test, owned by a role of the same name as a component's
/// would be; both are dropped (with their connections) when the value is.
pub struct TestDatabase {
    /// The database's name, and its owner's.
    pub name: String,
}

impl TestDatabase {
    /// Made as `./dev.sh` and the deployments make a component's: only its owner may connect,
    /// and the server-side limits a component cannot lift are set on its role.
    pub async fn create() -> Self {
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        admin_execute(&format!(
            "CREATE ROLE {name} LOGIN; ALTER ROLE {name} SET temp_file_limit = '1GB'; \
             ALTER ROLE {name} SET statement_timeout = '30s'; \
             ALTER ROLE {name} SET idle_in_transaction_session_timeout = '30s'"
        ))
        .await;
        admin_execute(&format!("CREATE DATABASE {name} OWNER {name}")).await;
        admin_execute(&format!("REVOKE ALL ON DATABASE {name} FROM PUBLIC")).await;
        Self { name }
    }

    /// URL of this database on the real server, as its own role: what a component gets.
    pub fn url(&self) -> String {
        format!(
            "postgres://{}@{}/{}",
            self.name,
            postgres_server(),
            self.name
        )
    }

    /// URL of this database as the superuser, which no component may use.
    pub fn superuser_url(&self) -> String {
        format!("{}/{}", postgres_base(), self.name)
    }

    /// A connection as the superuser to the server's `postgres` database.
    pub async fn connect_admin() -> tokio_postgres::Client {
        let url = format!("{}/postgres", postgres_base());
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|err| {
                panic!("cannot reach PostgreSQL at {url}: {err}; is it running?")
            });
        tokio::spawn(connection);
        client
    }

    /// A direct connection as the database's own role, to look at what the service wrote.
    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .expect("connect to the test database");
        tokio::spawn(connection);
        client
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let statements = [
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            format!("DROP ROLE IF EXISTS {}", self.name),
        ];
        // Drop runs inside or outside a runtime; a thread with its own runtime works in both.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            for statement in &statements {
                runtime.block_on(admin_execute(statement));
            }
            Ok::<_, std::io::Error>(())
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop a test database or its role");
        }
    }
}

async fn admin_execute(statement: &str) {
    let client = TestDatabase::connect_admin().await;
    client
        .batch_execute(statement)
        .await
        .unwrap_or_else(|err| panic!("{statement}: {err}"));
}

/// The vhost of the tests' exchanges and queues.
pub const TEST_VHOST: &str = "platform-tests";

/// Broker users the tests log in as besides guest: the components', and one more that may
/// publish to the tests' exchanges but is no topic's publisher.
pub const BROKER_USERS: [&str; 4] = ["orders", "invoices", "misbehave", "intruder"];

/// `host:port` of RabbitMQ, from `TEST_AMQP_URL`.
pub fn amqp_server() -> String {
    let base = std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@localhost:5672/%2f".into());
    server_of(&base)
}

/// `host:port` of an AMQP URL.
fn server_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, server)| server);
    rest.split(['/', '?']).next().unwrap_or(rest).to_owned()
}

/// The URL of the tests' own broker work: guest, in the tests' vhost.
pub fn amqp_base() -> String {
    ensure_broker_users();
    format!("amqp://guest:guest@{}/{TEST_VHOST}", amqp_server())
}

/// `url` (the broker's, a proxy's or a TLS front's, with its scheme and query) as `user` logs
/// in there, in the tests' vhost.
pub fn as_user(url: &str, user: &str) -> String {
    let scheme = url.split_once("://").map_or("amqp", |(scheme, _)| scheme);
    let query = url
        .split_once('?')
        .map_or(String::new(), |(_, query)| format!("?{query}"));
    format!(
        "{scheme}://{user}:{user}-dev@{}/{TEST_VHOST}{query}",
        server_of(url)
    )
}

/// Makes the tests' vhost and users once per test process, with RabbitMQ's management API: each
/// component's user may configure, write and read its own queues of any test exchange
/// (`test.<32 hex digits>`) and write to the exchanges, as production's patterns allow on
/// `platform.events`; `intruder` may only write to the exchanges.
pub fn ensure_broker_users() {
    static READY: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    READY.get_or_init(|| {
        let api =
            std::env::var("TEST_RABBITMQ_API").unwrap_or_else(|_| "http://localhost:15672".into());
        let made = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let client = reqwest::Client::new();
                let put = |path: String, body: serde_json::Value| {
                    let request = client
                        .put(format!("{api}/api/{path}"))
                        .basic_auth("guest", Some("guest"))
                        .json(&body);
                    async move {
                        let response = request.send().await.unwrap_or_else(|err| {
                            panic!(
                                "cannot reach RabbitMQ's management API ({err}); is the plugin \
                                 on? `rabbitmq-plugins enable rabbitmq_management`"
                            )
                        });
                        assert!(
                            response.status().is_success(),
                            "PUT {path}: {}",
                            response.status()
                        );
                    }
                };
                put(format!("vhosts/{TEST_VHOST}"), serde_json::json!({})).await;
                let all = serde_json::json!({ "configure": ".*", "write": ".*", "read": ".*" });
                put(format!("permissions/{TEST_VHOST}/guest"), all).await;
                let exchange = r"test\.[0-9a-f]{32}";
                for user in BROKER_USERS {
                    put(
                        format!("users/{user}"),
                        serde_json::json!({ "password": format!("{user}-dev"), "tags": "" }),
                    )
                    .await;
                    let permissions = if user == "intruder" {
                        serde_json::json!({
                            "configure": "^$",
                            "write": format!("^{exchange}$"),
                            "read": "^$",
                        })
                    } else {
                        serde_json::json!({
                            "configure": format!(r"^{exchange}(\.{user}\..*)?$"),
                            "write": format!(r"^({exchange}|{exchange}\.{user}\..*|amq\.default)$"),
                            "read": format!(r"^({exchange}|{exchange}\.{user}\..*)$"),
                        })
                    };
                    put(format!("permissions/{TEST_VHOST}/{user}"), permissions).await;
                }
            });
        })
        .join();
        assert!(made.is_ok(), "setting up the tests' broker users failed");
    });
}

/// Retry delays test hosts use: three attempts in all, quickly.
pub const RETRY_DELAYS_MS: [u64; 2] = [100, 200];

/// What each component publishes and consumes, as the development manifest has it.
pub fn topics(component: &str) -> (&'static str, &'static str) {
    match component {
        "orders" => ("orders.created", "invoices.issued"),
        "invoices" => ("invoices.issued", "orders.created"),
        other => panic!("no test setup for component {other}"),
    }
}

/// The manifest of a host running `components` (name, database URL) on `broker`.
pub fn manifest(broker: &TestBroker, amqp_url: &str, components: &[(&str, &str)]) -> String {
    let workspace = workspace();
    let mut manifest = format!(
        r#"
[http]
listen = "127.0.0.1:0"
request_timeout_ms = 5000
shutdown_grace_ms = 5000

[limits]
max_instances = 256

[admin]
listen = "127.0.0.1:0"
watch = false

[cache]
dir = "{cache}"

[messaging]
exchange = "{exchange}"
retry_delays_ms = {delays:?}
relay_interval_ms = 200
publishers = {{ "orders.created" = "orders", "invoices.issued" = "invoices" }}
"#,
        exchange = broker.exchange,
        delays = RETRY_DELAYS_MS,
        cache = compile_cache().display(),
    );
    for (name, database_url) in components {
        let (publishes, subscribes) = topics(name);
        manifest.push_str(&format!(
            r#"
[[components]]
name = "{name}"
wasm = "{wasm}"
route = "/{name}"
database_url = "{database_url}"
amqp_url = "{amqp}"
migrations = "{migrations}"
max_connections = 8
publishes = ["{publishes}"]
subscriptions = ["{subscribes}"]
"#,
            amqp = as_user(amqp_url, name),
            wasm = component_wasm(name).display(),
            migrations = workspace
                .join(format!("components/{name}/migrations"))
                .display(),
        ));
    }
    manifest
}

/// The manifest of a host running Orders on `database_url`, with a broker of its own.
pub fn orders_manifest(broker: &TestBroker, database_url: &str) -> String {
    manifest(broker, &amqp_base(), &[("orders", database_url)])
}

/// The compile cache the tests share: entries are keyed by content, so sharing is safe.
pub fn compile_cache() -> PathBuf {
    workspace().join("target/test-compile-cache")
}

pub fn config(manifest: &str) -> Config {
    Config::from_toml(manifest, &workspace(), &[("UNUSED", "")]).expect("valid test manifest")
}

/// A host serving in the background.
pub struct TestHost {
    pub address: SocketAddr,
    /// The admin listener's address.
    pub admin: SocketAddr,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    serving: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestHost {
    /// Builds (migrations included) and starts a host from `manifest`.
    pub async fn start(manifest: &str) -> Self {
        Self::start_with(config(manifest)).await
    }

    pub async fn start_with(config: Config) -> Self {
        init_logging();
        let host = Host::build(config).await.expect("host builds");
        Self::serve(host)
    }

    pub fn serve(host: Host) -> Self {
        let (address, admin) = (host.local_addr(), host.admin_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(host.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Self {
            address,
            admin,
            client: reqwest::Client::new(),
            stop: Some(stop),
            serving: Some(serving),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// A URL of the admin API.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// `GET` of an admin call that must answer 200, as JSON.
    pub async fn admin_get(&self, path: &str) -> serde_json::Value {
        let response = self
            .client
            .get(self.admin_url(path))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200, "{path}");
        response.json().await.expect("JSON")
    }

    /// Signals shutdown and waits until the host has stopped.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.serving.take() {
            Some(serving) => serving.await?,
            None => Ok(()),
        }
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if let Some(serving) = self.serving.take() {
            serving.abort();
        }
    }
}

/// A test's own database and a host running Orders on it.
pub struct OrdersApp {
    pub host: TestHost,
    pub db: Arc<TestDatabase>,
    pub broker: TestBroker,
}

impl OrdersApp {
    pub async fn spawn() -> Self {
        let db = Arc::new(TestDatabase::create().await);
        let broker = TestBroker::new();
        let host = TestHost::start(&orders_manifest(&broker, &db.url())).await;
        Self { host, db, broker }
    }

    pub async fn post_order(&self, body: &serde_json::Value) -> reqwest::Response {
        self.host
            .client
            .post(self.host.url("/orders/orders"))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// `POST /orders/orders` with a body sent as is.
    pub async fn post_raw(&self, content_type: &str, body: String) -> reqwest::Response {
        self.host
            .client
            .post(self.host.url("/orders/orders"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.host
            .client
            .get(self.host.url(path))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn count_orders(&self) -> i64 {
        let client = self.db.connect().await;
        client
            .query_one("SELECT count(*) FROM orders", &[])
            .await
            .expect("count")
            .get(0)
    }
}

pub use super::broker::TestBroker;
pub use super::files::{TempDir, with_note};
