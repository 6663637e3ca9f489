//! One `[[components]]` entry: the component's code, route, database and topics, checked once.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::{
    AmqpUrl, DatabaseUrl, Environment, GuestLimitSettings, GuestLimits, Limits, check_positive,
    check_topic,
};

/// One component, as the manifest names it.
#[derive(Debug, Clone)]
pub struct ComponentConfig {
    /// Lower-case letters, digits and `-`; used in logs, metrics and environment names.
    pub name: String,
    /// The component's `.wasm` file.
    pub wasm: PathBuf,
    /// The path prefix it serves, such as `/orders`; stripped before the component sees the path.
    pub route: String,
    /// Its own database: where it is and how the host connects to it.
    pub database: DatabaseConfig,
    /// Requests this component handles at once, and how many more may wait for a turn; beyond
    /// that a request gets 503 at once, so one busy component cannot take every worker.
    pub max_concurrency: usize,
    /// Requests that may wait for a turn while `max_concurrency` run (see above).
    pub max_queued: usize,
    /// Folder of `V<n>__<name>.sql` files applied at start, if any.
    pub migrations: Option<PathBuf>,
    /// Topics whose events are delivered to the component's `message-handler`.
    pub subscriptions: Vec<String>,
    /// Topics the component may publish to; publishing elsewhere is `not-allowed`.
    pub publishes: Vec<String>,
    /// What its units of work may take of the host.
    pub limits: GuestLimits,
    /// Its broker login: `<NAME>_AMQP_URL`, else its `amqp_url`, else (for a component that
    /// publishes or subscribes) the host's (see [`super::messaging::resolve_broker_logins`]).
    pub amqp_url: Option<AmqpUrl>,
}

impl ComponentConfig {
    /// Whether it publishes or subscribes, and so needs the broker.
    pub fn uses_messaging(&self) -> bool {
        !self.subscriptions.is_empty() || !self.publishes.is_empty()
    }
}

/// A component's database, as its manifest entry and environment give it.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// Where the database is and how to log in: `<NAME>_DATABASE_URL`, else `database_url`.
    pub url: DatabaseUrl,
    /// Connections in this component's pool.
    pub max_connections: usize,
    /// Lets the component's database role be a superuser or hold file and program privileges.
    /// For development only: such a role lets the component's SQL escape its sandbox.
    pub allow_privileged_role: bool,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ManifestComponent {
    pub(super) name: String,
    wasm: PathBuf,
    route: String,
    database_url: Option<String>,
    /// Its own broker login, when the manifest gives it (`<NAME>_AMQP_URL` wins over it).
    amqp_url: Option<String>,
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
    /// Its own limits, over `[limits]`.
    #[serde(flatten)]
    limits: GuestLimitSettings,
}

pub(super) fn check_component(
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
        && raw
            .route
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/-_.".contains(c));
    if !route_ok {
        bail!(
            "route: {:?} must be a path prefix such as \"/orders\": a leading '/', no trailing \
             '/', letters, digits, '-', '_', '.'",
            raw.route
        );
    }
    if raw.route == "/health" || raw.route.starts_with("/health/") {
        bail!(
            "route: {:?}: /health is where the host answers its own liveness and readiness checks; \
             choose another prefix",
            raw.route
        );
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
    let env_name = format!(
        "{}_DATABASE_URL",
        raw.name.to_ascii_uppercase().replace('-', "_")
    );
    let Some(url) = env.var(&env_name).or(raw.database_url) else {
        bail!("database_url: missing; set it in the manifest or in {env_name}");
    };
    let url = DatabaseUrl::parse(&url).with_context(|| format!("database_url (or {env_name})"))?;
    check_positive("max_connections", raw.max_connections as u64)?;
    let limits = raw.limits.over(&limits.guest).resolve(&raw.name)?;
    let amqp_env = format!(
        "{}_AMQP_URL",
        raw.name.to_ascii_uppercase().replace('-', "_")
    );
    let amqp_url = match env.var(&amqp_env).or(raw.amqp_url) {
        Some(url) => {
            Some(AmqpUrl::parse(&url).with_context(|| format!("amqp_url (or {amqp_env})"))?)
        }
        None => None,
    };
    check_positive("max_concurrency", raw.max_concurrency as u64)?;
    for (field, topics) in [
        ("subscriptions", &raw.subscriptions),
        ("publishes", &raw.publishes),
    ] {
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
        },
        max_concurrency: raw.max_concurrency,
        max_queued: raw.max_queued,
        migrations,
        subscriptions: raw.subscriptions,
        publishes: raw.publishes,
        limits,
        amqp_url,
    })
}

/// A component name: it appears in logs, queue names and environment variable names.
pub(super) fn check_name(name: &str) -> anyhow::Result<()> {
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !name_ok {
        bail!("{name:?} must be 1 to 63 lower-case letters, digits or '-', starting with a letter");
    }
    Ok(())
}

fn default_max_concurrency() -> usize {
    64
}
fn default_max_queued() -> usize {
    256
}
fn default_max_connections() -> usize {
    16
}
