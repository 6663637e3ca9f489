//! Building a host apart from running it.
//!
//! [`Host::build`] checks everything that can be checked before serving: it migrates each
//! component's database, compiles each component against the world (or loads it from the
//! compile cache) and binds the HTTP and admin listeners. Any failure stops the start with a
//! message saying what to fix. [`Host::run_until_stopped`] then runs every task under the
//! [`Supervisor`] (serving HTTP and the admin API, the broker connection, relays, consumers,
//! the file watcher) until the shutdown future completes, and stops them phase by phase.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

pub use crate::bindings::message_handler::IncomingEvent;
use crate::capabilities::messaging::broker::Broker;
use crate::capabilities::sql::Database;
use crate::capabilities::sql::postgres::PgDatabase;
use crate::config::{AdminConfig, Config};
use crate::control;
use crate::engine::Runtime;
use crate::migrations;
use crate::registry::Registry;
use crate::service::{Code, Service};
use crate::supervisor::{Phase, Supervisor};
use crate::telemetry::metrics::Metrics;
use crate::triggers::http::HttpTrigger;
use crate::triggers::messaging::MessageTrigger;
pub use crate::triggers::messaging::delivery::Outcome as DeliveryOutcome;

/// A host built and bound, not yet serving: made by [`Host::build`] (or [`Host::build_with`]) and
/// consumed by [`Host::run_until_stopped`].
pub struct Host {
    /// What the host runs, shared with the listeners and the control plane.
    registry: Arc<Registry>,
    listener: TcpListener,
    http: Arc<HttpTrigger>,
    admin: AdminConfig,
    admin_listener: TcpListener,
    /// How long readiness answers 503 before the host stops taking work.
    drain_delay: Duration,
    /// How long each phase may take to stop.
    grace: Duration,
    /// One per subscribing component.
    consumers: Vec<Arc<MessageTrigger>>,
    /// Deadline of one unit of work.
    deadline: Duration,
}

impl Host {
    /// Migrates each component's PostgreSQL database, then builds the host on it.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let mut databases: HashMap<String, Arc<dyn Database>> = HashMap::new();
        for component in &config.components {
            let applied = migrations::migrate(component).await?;
            if !applied.is_empty() {
                tracing::info!(component = %component.name, ?applied, "migrations applied");
            }
            let largest_value = component
                .limits
                .max_result_bytes
                .max(component.limits.max_event_bytes);
            let unit_timeout = config.http.request_timeout;
            let database = PgDatabase::new(&component.database, largest_value, unit_timeout)
                .with_context(|| {
                    format!("cannot set up the pool for {}", component.database.url)
                })?;
            database.schema_changed().await;
            databases.insert(component.name.clone(), Arc::new(database));
        }
        Self::build_with(config, databases).await
    }

    /// Builds the host with the given database for each component (by name): PostgreSQL in
    /// production, a fake in component tests.
    pub async fn build_with(
        config: Config,
        mut databases: HashMap<String, Arc<dyn Database>>,
    ) -> anyhow::Result<Self> {
        let runtime = Arc::new(Runtime::new(&config.limits, config.cache.dir.as_deref())?);
        let metrics = Arc::new(Metrics::new());
        let mut services = Vec::new();
        for component in &config.components {
            let database = databases
                .remove(&component.name)
                .with_context(|| format!("no database for component `{}`", component.name))?;
            let wasm = tokio::fs::read(&component.wasm)
                .await
                .with_context(|| format!("cannot read {}", component.wasm.display()))?;
            let compiling = runtime.clone();
            let (name, source) = (component.name.clone(), component.wasm.display().to_string());
            let subscribes = !component.subscriptions.is_empty();
            let code = tokio::task::spawn_blocking(move || {
                let digest = crate::cache::digest(&wasm);
                Code::load(&compiling, &name, &wasm, digest, source, subscribes)
            })
            .await
            .context("the compile task panicked")??;
            let broker = match (&config.messaging, &component.amqp_url) {
                (Some(messaging), Some(url)) if component.uses_messaging() => {
                    Some(Broker::new(&component.name, url.clone(), messaging.clone()))
                }
                _ => None,
            };
            services.push(Arc::new(Service::new(
                component,
                &config.limits,
                code,
                database,
                broker,
                &metrics,
            )));
        }
        let listener = TcpListener::bind(config.http.listen).await.with_context(|| {
            format!(
                "cannot listen on {}: is another host running? Stop it (`./dev.sh down`) or set \
                 HOST_LISTEN",
                config.http.listen
            )
        })?;
        let deadline = config.http.request_timeout;
        let consumers = services
            .iter()
            .filter(|service| !service.subscriptions().is_empty())
            .filter_map(|service| {
                let broker = service.reach.broker.clone()?;
                Some(Arc::new(MessageTrigger::new(
                    runtime.clone(),
                    service.clone(),
                    broker,
                    deadline,
                )))
            })
            .collect();
        let admin_listener = TcpListener::bind(config.admin.listen).await.with_context(|| {
            format!(
                "cannot listen on {} for the admin API: is another host running? Stop it or set \
                 HOST_ADMIN_LISTEN",
                config.admin.listen
            )
        })?;
        let registry = Arc::new(Registry::new(runtime, services, metrics));
        let (drain_delay, grace) = (config.http.drain_delay, config.http.shutdown_grace);
        let http = Arc::new(HttpTrigger::new(registry.clone(), config.http));
        Ok(Self {
            registry,
            listener,
            http,
            admin: config.admin,
            admin_listener,
            drain_delay,
            grace,
            consumers,
            deadline,
        })
    }

    /// The address the HTTP listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        // A bound TCP listener always has a local address.
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// The address the admin listener is bound to.
    pub fn admin_addr(&self) -> SocketAddr {
        // A bound TCP listener always has a local address.
        self.admin_listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// What the host runs.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Delivers `event` to `component` as the AMQP consumer would, without a broker: one unit of
    /// work with de-duplication. `None` if there is no such component.
    pub async fn deliver(&self, component: &str, event: IncomingEvent) -> Option<DeliveryOutcome> {
        let service = self.registry.service(component)?;
        Some(
            crate::triggers::messaging::delivery::deliver(
                self.registry.runtime(),
                service,
                event,
                self.deadline,
            )
            .await,
        )
    }

    /// Serves until `shutdown` completes, then stops phase by phase (see [`Supervisor`]): the
    /// HTTP listener and the consumers first (each letting the work in flight finish and
    /// acknowledging it), then the relays, retention and the file watcher, then the broker
    /// connection and the admin listener.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(address = %self.local_addr(), "serving HTTP");
        let mut supervisor = Supervisor::new();
        let (http, listener) = (self.http.clone(), self.listener);
        supervisor.spawn(Phase::Intake, move |stop| async move {
            if let Err(err) = http
                .serve(listener, async move { stop.cancelled().await })
                .await
            {
                tracing::error!(error = %err, "the HTTP listener failed");
            }
        });
        for consumer in self.consumers {
            let name = format!("consumer of {}", consumer.component());
            supervisor
                .spawn_restarting(Phase::Intake, name, move |stop| consumer.clone().run(stop));
        }
        for service in self.registry.services() {
            service.run_background(&mut supervisor);
        }
        if self.admin.watch {
            match control::watch::watch(self.registry.clone()) {
                Ok(watching) => supervisor.spawn(Phase::Background, watching),
                Err(err) => {
                    tracing::warn!(
                        error = %format!("{err:#}"),
                        "component files are not watched; reload through the admin API"
                    )
                }
            }
        }
        for service in self.registry.services() {
            let Some(broker) = service.reach.broker.clone() else {
                continue;
            };
            let name = format!("broker connection of {}", service.name());
            supervisor.spawn_restarting(Phase::Connections, name, move |stop| {
                broker.clone().supervise(stop)
            });
        }
        let (registry, admin_listener, token) = (
            self.registry.clone(),
            self.admin_listener,
            self.admin.token.clone(),
        );
        supervisor.spawn(Phase::Connections, move |stop| {
            control::serve(admin_listener, registry, token, stop)
        });

        shutdown.await;
        self.registry.begin_stopping();
        if !self.drain_delay.is_zero() {
            // Readiness answers 503 while the host still serves, so load balancers move away first.
            tracing::info!(
                delay = ?self.drain_delay,
                "not ready; serving on while load balancers drain"
            );
            tokio::time::sleep(self.drain_delay).await;
        }
        supervisor.stop(self.grace).await;
        Ok(())
    }
}
