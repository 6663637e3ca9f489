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
//! Every setting can also come from the environment, over the file: `HOST_<SECTION>__<KEY>`
//! (`HOST_HTTP__LISTEN`), and `HOST_COMPONENTS__<NAME>__<KEY>` for a component's, matched by
//! name (see [`layers`]). Shorter names for the common ones: `HOST_LISTEN` for `http.listen`,
//! `AMQP_URL` for `messaging.url`, and `<NAME>_DATABASE_URL` (the component name upper-cased,
//! `-` as `_`) for a component's `database_url`, so that a secret never has to be written into
//! the manifest.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

mod component;
mod control;
mod layers;
mod limits;
mod messaging;
pub mod postgres_tls;
mod urls;

use component::check_name;
pub use component::{ComponentConfig, DatabaseConfig};
use component::{ManifestComponent, check_component};
pub use control::{AdminConfig, CacheConfig, Token};
use control::{ManifestAdmin, ManifestCache, check_admin, check_cache};
pub use limits::{GuestLimitSettings, GuestLimits, Limits};
use messaging::{
    ManifestMessaging, check_messaging, default_messaging, resolve_broker_logins,
    resolve_publishers,
};
pub use messaging::{MessagingConfig, check_topic};
pub use urls::{AmqpUrl, DatabaseUrl};

/// The whole configuration of one host process.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `[http]` section: the listener, body sizes and timeouts of requests.
    pub http: HttpConfig,
    /// The `[limits]` section: the instance pool, and every component's default limits.
    pub limits: Limits,
    /// The broker; `None` when no component publishes or subscribes.
    pub messaging: Option<MessagingConfig>,
    /// The `[admin]` section: the admin listener, its token, and whether files are watched.
    pub admin: AdminConfig,
    /// The `[cache]` section: where compiled components are kept.
    pub cache: CacheConfig,
    /// The `[[components]]` entries, checked, in manifest order; never empty.
    pub components: Vec<ComponentConfig>,
}

/// The `[http]` section: where the HTTP listener binds, what it accepts of clients (bodies,
/// connections) and how long requests and stopping may take.
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
    /// Client connections open at once. At the limit, the connection idle longest is closed
    /// for a new one; when none is idle, new clients wait in the listen backlog.
    #[serde(default = "default_max_connections_per_listener")]
    pub max_connections: usize,
    /// Client connections open at once from one address: half of `max_connections` unless set.
    /// Behind a gateway every connection comes from it: raise this to `max_connections` there.
    #[serde(default)]
    pub max_connections_per_client: Option<usize>,
    /// How long a new connection may take to begin its first request before it is closed.
    #[serde(
        rename = "first_request_timeout_ms",
        default = "default_first_request_timeout",
        with = "millis"
    )]
    pub first_request_timeout: Duration,
    /// How long a request may wait for a turn when its component is at `max_concurrency`;
    /// then it gets 503 with `Retry-After`.
    #[serde(
        rename = "queue_timeout_ms",
        default = "default_queue_timeout",
        with = "millis"
    )]
    pub queue_timeout: Duration,
    /// How long one request may take, component and database together.
    #[serde(
        rename = "request_timeout_ms",
        default = "default_request_timeout",
        with = "millis"
    )]
    pub request_timeout: Duration,
    /// How long in-flight requests may take to finish after a shutdown signal (and each later
    /// stage of stopping, such as relays and the broker connection).
    #[serde(
        rename = "shutdown_grace_ms",
        default = "default_shutdown_grace",
        with = "millis"
    )]
    pub shutdown_grace: Duration,
    /// Whether a gateway's `X-Forwarded-Prefix` is passed on to components instead of the
    /// route, so the links and API documents they send back carry the path the client used
    /// (`/api/orders/...` when the gateway strips `/api`). Only behind a gateway that sets the
    /// header itself; off, the component is told its route.
    #[serde(default)]
    pub trust_forwarded_prefix: bool,
    /// How long after a shutdown signal the host goes on serving while readiness answers 503,
    /// so load balancers stop sending it traffic before it stops accepting. 0 by default.
    #[serde(rename = "drain_delay_ms", default, with = "millis")]
    pub drain_delay: Duration,
}

/// The manifest as written, before checks and overrides.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    #[serde(default = "default_http")]
    http: HttpConfig,
    #[serde(default = "limits::default_limits")]
    limits: Limits,
    messaging: Option<ManifestMessaging>,
    #[serde(default)]
    admin: ManifestAdmin,
    #[serde(default)]
    cache: ManifestCache,
    #[serde(default)]
    components: Vec<ManifestComponent>,
}

/// Environment variables the configuration reads; a map in tests, the process's in `main`.
pub trait Environment {
    /// The value of the variable `name`; `None` when it is unset (or, in the process, empty).
    fn var(&self, name: &str) -> Option<String>;
    /// Every variable, for the `HOST_<SECTION>__<KEY>` settings.
    fn vars(&self) -> Vec<(String, String)>;
}

/// The process environment.
#[derive(Debug, Clone, Copy)]
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|value| !value.is_empty())
    }

    fn vars(&self) -> Vec<(String, String)> {
        std::env::vars_os()
            .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
            .filter(|(_, value)| !value.is_empty())
            .collect()
    }
}

impl<const N: usize> Environment for [(&str, &str); N] {
    fn var(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| (*value).to_owned())
    }

    fn vars(&self) -> Vec<(String, String)> {
        self.iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }
}

impl HttpConfig {
    /// Connections one client address may hold open.
    pub fn connections_per_client(&self) -> usize {
        self.max_connections_per_client
            .unwrap_or((self.max_connections / 2).max(1))
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

    /// Parses a manifest whose relative paths are relative to `base`, with the environment's
    /// settings over it.
    pub fn from_toml(text: &str, base: &Path, env: &impl Environment) -> anyhow::Result<Self> {
        let file: toml::Table = toml::from_str(text).map_err(|err| {
            // toml's message spans several lines with a source excerpt; keep its first line and
            // the key it names.
            anyhow::anyhow!("{}", err.message().trim())
        })?;
        let settings = layers::EnvSettings::read(env)?;
        let mut manifest: Manifest = settings
            .over(file)
            .extract()
            .map_err(|err| layers::explain(err, ""))?;
        manifest.components = settings.apply_to(manifest.components)?;
        let mut http = manifest.http;
        if let Some(listen) = env.var("HOST_LISTEN") {
            http.listen = listen.parse().with_context(|| {
                format!("HOST_LISTEN={listen:?} is not an address such as 127.0.0.1:8000")
            })?;
        }
        check_positive("http.max_body_bytes", http.max_body_bytes as u64)?;
        check_positive("http.max_response_bytes", http.max_response_bytes as u64)?;
        check_positive("http.max_connections", http.max_connections as u64)?;
        if let Some(per_client) = http.max_connections_per_client {
            check_positive("http.max_connections_per_client", per_client as u64)?;
        }
        check_positive(
            "http.first_request_timeout_ms",
            http.first_request_timeout.as_millis() as u64,
        )?;
        check_positive(
            "http.request_timeout_ms",
            http.request_timeout.as_millis() as u64,
        )?;
        check_positive("limits.memory_mib", manifest.limits.memory_mib)?;
        check_positive(
            "limits.max_instances",
            u64::from(manifest.limits.max_instances),
        )?;
        manifest.limits.guest.resolve("limits")?;

        let mut names = HashSet::new();
        let mut routes = HashSet::new();
        let mut components = Vec::new();
        for (index, raw) in manifest.components.into_iter().enumerate() {
            let at = format!("components[{index}]");
            let component =
                check_component(raw, base, &manifest.limits, env).with_context(|| at.clone())?;
            if !names.insert(component.name.clone()) {
                bail!(
                    "{at}.name: {:?} is used by two components; names must be unique",
                    component.name
                );
            }
            if !routes.insert(component.route.clone()) {
                bail!(
                    "{at}.route: {:?} is used by two components; routes must be unique",
                    component.route
                );
            }
            if let Some(other) = components
                .iter()
                .find(|other: &&ComponentConfig| nested(&other.route, &component.route))
            {
                bail!(
                    "{at}.route: {:?} and the route {:?} of component `{}` overlap: a request \
                     under the longer one could reach either; give each component a prefix of \
                     its own, such as \"/{}\"",
                    component.route,
                    other.route,
                    other.name,
                    component.name
                );
            }
            components.push(component);
        }
        if components.is_empty() {
            bail!("no components: add at least one [[components]] entry");
        }
        let mut messaging = match manifest.messaging {
            Some(messaging) => Some(check_messaging(messaging, env)?),
            None if env.var("AMQP_URL").is_some() => {
                Some(check_messaging(default_messaging(), env)?)
            }
            None => None,
        };
        if let Some(messaging) = &mut messaging {
            resolve_publishers(messaging, &components)?;
            resolve_broker_logins(messaging, &mut components)?;
        }
        if messaging.is_none()
            && let Some(component) = components.iter().find(|c| c.uses_messaging())
        {
            bail!(
                "component `{}` publishes or subscribes but there is no [messaging] section; add \
                 one with the broker's url, or set AMQP_URL",
                component.name
            );
        }
        check_instances(
            manifest.limits.max_instances,
            &components,
            messaging.as_ref(),
        )?;
        let admin = check_admin(manifest.admin, env)?;
        let cache = check_cache(manifest.cache, base, env)?;
        Ok(Self {
            http,
            limits: manifest.limits,
            messaging,
            admin,
            cache,
            components,
        })
    }
}

/// Whether one route lies under the other (`/orders` and `/orders/admin`), segment by segment.
fn nested(a: &str, b: &str) -> bool {
    let under = |long: &str, short: &str| {
        long.strip_prefix(short)
            .is_some_and(|rest| rest.starts_with('/'))
    };
    under(a, b) || under(b, a)
}

/// Refuses a pool of instances smaller than what the components may run at once (their requests
/// and their deliveries): otherwise one busy component could take every instance and leave its
/// neighbours none.
fn check_instances(
    max_instances: u32,
    components: &[ComponentConfig],
    messaging: Option<&MessagingConfig>,
) -> anyhow::Result<()> {
    let prefetch = messaging.map_or(0, |messaging| usize::from(messaging.prefetch));
    let share = |component: &ComponentConfig| {
        component.max_concurrency
            + if component.subscriptions.is_empty() {
                0
            } else {
                prefetch
            }
    };
    let needed: usize = components.iter().map(share).sum();
    if needed > max_instances as usize {
        let shares: Vec<String> = components
            .iter()
            .map(|c| format!("{} {}", c.name, share(c)))
            .collect();
        bail!(
            "limits.max_instances: {max_instances} is fewer than the components may run at once \
             ({needed}: {}, max_concurrency plus messaging.prefetch for a subscriber), so one \
             component could take every instance from the others; raise max_instances or lower \
             max_concurrency",
            shares.join(", ")
        );
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
        max_connections_per_client: None,
        first_request_timeout: default_first_request_timeout(),
        queue_timeout: default_queue_timeout(),
        request_timeout: default_request_timeout(),
        shutdown_grace: default_shutdown_grace(),
        trust_forwarded_prefix: false,
        drain_delay: Duration::ZERO,
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
fn default_first_request_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_queue_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_shutdown_grace() -> Duration {
    Duration::from_secs(20)
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
