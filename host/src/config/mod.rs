//! Typed configuration: the manifest (TOML) plus environment overrides, loaded and checked once
//! at start. A mistake stops the host with one line naming the setting and what to do.
//!
//! ```toml
//! [http]
//! listen = "127.0.0.1:8000"
//!
//! [[components]]
//! name = "orders"
//! wasm = "target/wasm32-wasip2/component/orders.wasm"   # relative to this file
//! route = "/orders"
//! database_url = "postgres://postgres@localhost:5432/orders"
//! migrations = "components/orders/migrations"
//! publishes = ["orders.created"]
//! subscriptions = ["invoices.issued"]
//!
//! [messaging]
//! url = "amqp://guest:guest@localhost:5672/%2f"
//! ```
//!
//! Environment overrides: `HOST_LISTEN` for `http.listen`, `AMQP_URL` for `messaging.url`, and
//! `<NAME>_DATABASE_URL` (the component name upper-cased, `-` as `_`) for a component's
//! `database_url`, so that a secret never has to be written into the manifest.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

mod control;
mod messaging;
mod urls;

pub use control::{AdminConfig, CacheConfig, Token};
use control::{ManifestAdmin, ManifestCache, check_admin, check_cache};
pub use messaging::{MessagingConfig, check_topic};
use messaging::{ManifestMessaging, check_messaging, default_messaging, resolve_publishers};
pub use urls::{AmqpUrl, DatabaseUrl};

/// The whole configuration of one host process.
#[derive(Debug, Clone)]
pub struct Config {
    pub http: HttpConfig,
    pub limits: Limits,
    /// The broker; `None` when no component publishes or subscribes.
    pub messaging: Option<MessagingConfig>,
    pub admin: AdminConfig,
    pub cache: CacheConfig,
    pub components: Vec<ComponentConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Where the HTTP listener binds. Port 0 picks a free port (tests).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes; a larger one gets 413 before any component runs.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Largest response body a component may send, in bytes; a larger one is a 500.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// Client connections open at once; further clients wait in the listen backlog.
    #[serde(default = "default_max_connections_per_listener")]
    pub max_connections: usize,
    /// How long a request may wait for a turn when its component is at `max_concurrency`;
    /// then it gets 503 with `Retry-After`.
    #[serde(rename = "queue_timeout_ms", default = "default_queue_timeout", with = "millis")]
    pub queue_timeout: Duration,
    /// How long one request may take, component and database together.
    #[serde(rename = "request_timeout_ms", default = "default_request_timeout", with = "millis")]
    pub request_timeout: Duration,
    /// How long in-flight requests may take to finish after a shutdown signal (and each later
    /// stage of stopping, such as relays and the broker connection).
    #[serde(rename = "shutdown_grace_ms", default = "default_shutdown_grace", with = "millis")]
    pub shutdown_grace: Duration,
    /// How long after a shutdown signal the host goes on serving while readiness answers 503,
    /// so load balancers stop sending it traffic before it stops accepting. 0 by default.
    #[serde(rename = "drain_delay_ms", default, with = "millis")]
    pub drain_delay: Duration,
}

/// Limits that apply to every component instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Linear memory one instance may grow to, in MiB.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    /// Instances alive at once across all components (the pooling allocator's size).
    #[serde(default = "default_max_instances")]
    pub max_instances: u32,
    /// Largest result one SQL query may return to a component, in bytes; a larger one is a
    /// `database` error (SQLSTATE 54000) and the query is cancelled.
    #[serde(default = "default_max_result_bytes")]
    pub max_result_bytes: usize,
}

/// One component, as the manifest names it.
#[derive(Debug, Clone)]
pub struct ComponentConfig {
    /// Lower-case letters, digits and `-`; used in logs, metrics and environment names.
    pub name: String,
    /// The component's `.wasm` file.
    pub wasm: PathBuf,
    /// The path prefix it serves, such as `/orders`; stripped before the component sees the path.
    pub route: String,
    pub database: DatabaseConfig,
    /// Requests this component handles at once, and how many more may wait for a turn; beyond
    /// that a request gets 503 at once, so one busy component cannot take every worker.
    pub max_concurrency: usize,
    pub max_queued: usize,
    /// Folder of `V<n>__<name>.sql` files applied at start, if any.
    pub migrations: Option<PathBuf>,
    /// Topics whose events are delivered to the component's `message-handler`.
    pub subscriptions: Vec<String>,
    /// Topics the component may publish to; publishing elsewhere is `not-allowed`.
    pub publishes: Vec<String>,
}

impl ComponentConfig {
    pub fn uses_messaging(&self) -> bool {
        !self.subscriptions.is_empty() || !self.publishes.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: DatabaseUrl,
    /// Connections in this component's pool.
    pub max_connections: usize,
    /// Lets the component's database role be a superuser or hold file and program privileges.
    /// For development only: such a role lets the component's SQL escape its sandbox.
    pub allow_privileged_role: bool,
    /// From `limits.max_result_bytes`.
    pub max_result_bytes: usize,
}

/// The manifest as written, before checks and overrides.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    #[serde(default = "default_http")]
    http: HttpConfig,
    #[serde(default = "default_limits")]
    limits: Limits,
    messaging: Option<ManifestMessaging>,
    #[serde(default)]
    admin: ManifestAdmin,
    #[serde(default)]
    cache: ManifestCache,
    #[serde(default)]
    components: Vec<ManifestComponent>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestComponent {
    name: String,
    wasm: PathBuf,
    route: String,
    database_url: Option<String>,
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    #[serde(default)]
    allow_privileged_role: bool,
    #[serde(default = "default_max_concurrency")]
    max_concurrency: usize,
    #[serde(default = "default_max_queued")]
    max_queued: usize,
    migrations: Option<PathBuf>,
    #[serde(default)]
    subscriptions: Vec<String>,
    #[serde(default)]
    publishes: Vec<String>,
}

/// Environment variables the configuration reads; a map in tests, the process's in `main`.
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy)]
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|value| !value.is_empty())
    }
}

impl<const N: usize> Environment for [(&str, &str); N] {
    fn var(&self, name: &str) -> Option<String> {
        self.iter().find(|(key, _)| *key == name).map(|(_, value)| (*value).to_owned())
    }
}

impl Config {
    /// Reads the manifest at `path`, applies environment overrides and checks everything.
    pub fn load(path: &Path, env: &impl Environment) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the manifest {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml(&text, base, env)
            .with_context(|| format!("bad manifest {}", path.display()))
    }

    /// Parses a manifest whose relative paths are relative to `base`.
    pub fn from_toml(text: &str, base: &Path, env: &impl Environment) -> anyhow::Result<Self> {
        let manifest: Manifest = toml::from_str(text).map_err(|err| {
            // toml's message spans several lines with a source excerpt; keep its first line and
            // the key it names.
            anyhow::anyhow!("{}", err.message().trim())
        })?;
        let mut http = manifest.http;
        if let Some(listen) = env.var("HOST_LISTEN") {
            http.listen = listen.parse().with_context(|| {
                format!("HOST_LISTEN={listen:?} is not an address such as 127.0.0.1:8000")
            })?;
        }
        check_positive("http.max_body_bytes", http.max_body_bytes as u64)?;
        check_positive("http.max_response_bytes", http.max_response_bytes as u64)?;
        check_positive("http.max_connections", http.max_connections as u64)?;
        check_positive("http.request_timeout_ms", http.request_timeout.as_millis() as u64)?;
        check_positive("limits.memory_mib", manifest.limits.memory_mib)?;
        check_positive("limits.max_instances", u64::from(manifest.limits.max_instances))?;
        check_positive("limits.max_result_bytes", manifest.limits.max_result_bytes as u64)?;

        let mut names = HashSet::new();
        let mut routes = HashSet::new();
        let mut components = Vec::new();
        for (index, raw) in manifest.components.into_iter().enumerate() {
            let at = format!("components[{index}]");
            let component =
                check_component(raw, base, &manifest.limits, env).with_context(|| at.clone())?;
            if !names.insert(component.name.clone()) {
                bail!("{at}.name: {:?} is used by two components; names must be unique", component.name);
            }
            if !routes.insert(component.route.clone()) {
                bail!("{at}.route: {:?} is used by two components; routes must be unique", component.route);
            }
            components.push(component);
        }
        if components.is_empty() {
            bail!("no components: add at least one [[components]] entry");
        }
        let mut messaging = match manifest.messaging {
            Some(messaging) => Some(check_messaging(messaging, env)?),
            None if env.var("AMQP_URL").is_some() => Some(check_messaging(default_messaging(), env)?),
            None => None,
        };
        if let Some(messaging) = &mut messaging {
            resolve_publishers(messaging, &components)?;
        }
        if messaging.is_none()
            && let Some(component) = components.iter().find(|c| c.uses_messaging())
        {
            bail!(
                "component `{}` publishes or subscribes but there is no [messaging] section; add one \
                 with the broker's url, or set AMQP_URL",
                component.name
            );
        }
        let admin = check_admin(manifest.admin, env)?;
        let cache = check_cache(manifest.cache, base, env)?;
        Ok(Self { http, limits: manifest.limits, messaging, admin, cache, components })
    }
}

fn check_component(
    raw: ManifestComponent,
    base: &Path,
    limits: &Limits,
    env: &impl Environment,
) -> anyhow::Result<ComponentConfig> {
    check_name(&raw.name).context("name")?;
    let route_ok = raw.route.len() > 1
        && raw.route.starts_with('/')
        && !raw.route.ends_with('/')
        && !raw.route.contains("//")
        && raw.route.chars().all(|c| c.is_ascii_alphanumeric() || "/-_.".contains(c));
    if !route_ok {
        bail!(
            "route: {:?} must be a path prefix such as \"/orders\": a leading '/', no trailing '/', \
             letters, digits, '-', '_', '.'",
            raw.route
        );
    }
    if raw.route == "/health" {
        bail!("route: \"/health\" is where the host answers its own readiness check; choose another prefix");
    }
    let wasm = base.join(&raw.wasm);
    if !wasm.is_file() {
        bail!(
            "wasm: {} does not exist; build it with `cargo build --profile component --target \
             wasm32-wasip2 -p {}`",
            wasm.display(),
            raw.name
        );
    }
    let migrations = raw.migrations.map(|dir| base.join(dir));
    if let Some(dir) = &migrations
        && !dir.is_dir()
    {
        bail!("migrations: {} is not a folder", dir.display());
    }
    let env_name = format!("{}_DATABASE_URL", raw.name.to_ascii_uppercase().replace('-', "_"));
    let Some(url) = env.var(&env_name).or(raw.database_url) else {
        bail!("database_url: missing; set it in the manifest or in {env_name}");
    };
    let url = DatabaseUrl::parse(&url).with_context(|| format!("database_url (or {env_name})"))?;
    check_positive("max_connections", raw.max_connections as u64)?;
    check_positive("max_concurrency", raw.max_concurrency as u64)?;
    for (field, topics) in [("subscriptions", &raw.subscriptions), ("publishes", &raw.publishes)] {
        for topic in topics {
            check_topic(topic).with_context(|| format!("{field}: {topic:?}"))?;
        }
    }
    Ok(ComponentConfig {
        name: raw.name,
        wasm,
        route: raw.route,
        database: DatabaseConfig {
            url,
            max_connections: raw.max_connections,
            allow_privileged_role: raw.allow_privileged_role,
            max_result_bytes: limits.max_result_bytes,
        },
        max_concurrency: raw.max_concurrency,
        max_queued: raw.max_queued,
        migrations,
        subscriptions: raw.subscriptions,
        publishes: raw.publishes,
    })
}

/// A component name: it appears in logs, queue names and environment variable names.
pub(super) fn check_name(name: &str) -> anyhow::Result<()> {
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !name_ok {
        bail!("{name:?} must be 1 to 63 lower-case letters, digits or '-', starting with a letter");
    }
    Ok(())
}

pub(super) fn check_positive(setting: &str, value: u64) -> anyhow::Result<()> {
    if value == 0 {
        bail!("{setting}: must be greater than 0");
    }
    Ok(())
}

fn default_http() -> HttpConfig {
    HttpConfig {
        listen: default_listen(),
        max_body_bytes: default_max_body_bytes(),
        max_response_bytes: default_max_response_bytes(),
        max_connections: default_max_connections_per_listener(),
        queue_timeout: default_queue_timeout(),
        request_timeout: default_request_timeout(),
        shutdown_grace: default_shutdown_grace(),
        drain_delay: Duration::ZERO,
    }
}

fn default_limits() -> Limits {
    Limits {
        memory_mib: default_memory_mib(),
        max_instances: default_max_instances(),
        max_result_bytes: default_max_result_bytes(),
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8000))
}
fn default_max_body_bytes() -> usize {
    1024 * 1024
}
fn default_max_response_bytes() -> usize {
    8 * 1024 * 1024
}
fn default_max_connections_per_listener() -> usize {
    1024
}
fn default_queue_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_max_concurrency() -> usize {
    64
}
fn default_max_queued() -> usize {
    256
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_shutdown_grace() -> Duration {
    Duration::from_secs(20)
}
fn default_memory_mib() -> u64 {
    64
}
fn default_max_instances() -> u32 {
    512
}
fn default_max_result_bytes() -> usize {
    16 * 1024 * 1024
}
fn default_max_connections() -> usize {
    16
}
/// Durations written as whole milliseconds, with a `_ms` key in the manifest.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests;
