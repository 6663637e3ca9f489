//! Building a host apart from running it.
//!
//! [`Host::build`] checks everything that can be checked before serving: it migrates each
//! component's database, compiles each component against the world and binds the listener. Any
//! failure stops the start with a message saying what to fix. [`Host::run_until_stopped`] then
//! serves HTTP, keeps the broker connection, relays outboxes and consumes subscriptions until
//! the shutdown future completes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use crate::bindings::message_handler::IncomingEvent;
use crate::capabilities::messaging::broker::Broker;
use crate::capabilities::messaging::outbox::Relay;
use crate::capabilities::messaging::retention::Retention;
use crate::capabilities::sql::Database;
use crate::capabilities::sql::postgres::PgDatabase;
use crate::config::Config;
use crate::engine::Runtime;
use crate::migrations;
use crate::service::{Code, Service};
use crate::triggers::http::HttpTrigger;
use crate::triggers::messaging::MessageTrigger;
pub use crate::triggers::messaging::delivery::Outcome as DeliveryOutcome;

pub struct Host {
    runtime: Arc<Runtime>,
    listener: TcpListener,
    http: Arc<HttpTrigger>,
    services: Vec<Arc<Service>>,
    /// Present when the manifest has a `[messaging]` section.
    broker: Option<Arc<Broker>>,
    /// One per publishing component backed by PostgreSQL.
    relays: Vec<Relay>,
    /// One per component using messaging and backed by PostgreSQL.
    retention: Vec<Retention>,
    /// One per subscribing component.
    consumers: Vec<Arc<MessageTrigger>>,
    /// Deadline of one unit of work.
    deadline: Duration,
}

impl Host {
    /// Migrates each component's PostgreSQL database, then builds the host on it.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let mut databases: HashMap<String, Arc<dyn Database>> = HashMap::new();
        let mut pools = HashMap::new();
        for component in &config.components {
            let applied = migrations::migrate(component).await?;
            if !applied.is_empty() {
                tracing::info!(component = %component.name, ?applied, "migrations applied");
            }
            let database = PgDatabase::new(&component.database)
                .with_context(|| format!("cannot set up the pool for {}", component.database.url))?;
            pools.insert(component.name.clone(), database.pool().clone());
            databases.insert(component.name.clone(), Arc::new(database));
        }
        let mut host = Self::build_with(config, databases).await?;
        if let Some(broker) = &host.broker {
            let keep = broker.config().retention;
            for service in &host.services {
                let Some(pool) = pools.remove(&service.name) else { continue };
                if !service.outbound.topics.is_empty() {
                    let outbound = service.outbound.clone();
                    host.relays.push(Relay::new(service.name.clone(), pool.clone(), broker.clone(), outbound));
                }
                if !service.outbound.topics.is_empty() || !service.subscriptions.is_empty() {
                    host.retention.push(Retention::new(service.name.clone(), pool, keep));
                }
            }
        }
        Ok(host)
    }

    /// Builds the host with the given database for each component (by name): PostgreSQL in
    /// production, a fake in component tests (which then has no outbox relay).
    pub async fn build_with(
        config: Config,
        mut databases: HashMap<String, Arc<dyn Database>>,
    ) -> anyhow::Result<Self> {
        let runtime = Arc::new(Runtime::new(&config.limits)?);
        let mut services = Vec::new();
        for component in &config.components {
            let database = databases
                .remove(&component.name)
                .with_context(|| format!("no database for component `{}`", component.name))?;
            let compiling = runtime.clone();
            let (name, path) = (component.name.clone(), component.wasm.clone());
            let subscribes = !component.subscriptions.is_empty();
            let code = tokio::task::spawn_blocking(move || Code::compile(&compiling, &name, &path, subscribes))
                .await
                .context("the compile task panicked")??;
            services.push(Arc::new(Service::new(component, &config.limits, code, database)));
        }
        let listener = TcpListener::bind(config.http.listen).await.with_context(|| {
            format!(
                "cannot listen on {}: is another host running? Stop it (`./dev.sh down`) or set HOST_LISTEN",
                config.http.listen
            )
        })?;
        let deadline = config.http.request_timeout;
        let broker = config.messaging.map(Broker::new);
        let consumers = match &broker {
            Some(broker) => services
                .iter()
                .filter(|service| !service.subscriptions.is_empty())
                .map(|service| Arc::new(MessageTrigger::new(runtime.clone(), service.clone(), broker.clone(), deadline)))
                .collect(),
            None => Vec::new(),
        };
        let http = Arc::new(HttpTrigger::new(runtime.clone(), services.clone(), broker.clone(), config.http));
        Ok(Self {
            runtime,
            listener,
            http,
            services,
            broker,
            relays: Vec::new(),
            retention: Vec::new(),
            consumers,
            deadline,
        })
    }

    /// The address the HTTP listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        // A bound TCP listener always has a local address.
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// The loaded components, by route.
    pub fn services(&self) -> &[Arc<Service>] {
        &self.services
    }

    /// Delivers `event` to `component` as the AMQP consumer would, without a broker: one unit of
    /// work with de-duplication. `None` if there is no such component.
    pub async fn deliver(&self, component: &str, event: IncomingEvent) -> Option<DeliveryOutcome> {
        let service = self.services.iter().find(|service| service.name == component)?;
        Some(crate::triggers::messaging::delivery::deliver(&self.runtime, service, event, self.deadline).await)
    }

    /// Serves until `shutdown` completes, then stops in order: the HTTP listener and the
    /// consumers first (each letting the work in flight finish and acknowledging it), then the
    /// relays, then the broker connection they all used.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        tracing::info!(address = %self.local_addr(), "serving HTTP");
        let stopping = CancellationToken::new();
        let signal = stopping.clone();
        tokio::spawn(async move {
            shutdown.await;
            signal.cancel();
        });
        let (relays_stop, broker_stop) = (CancellationToken::new(), CancellationToken::new());
        let mut broker = tokio::task::JoinSet::new();
        if let Some(supervised) = &self.broker {
            broker.spawn(supervised.clone().supervise(broker_stop.clone()));
        }
        let mut relays = tokio::task::JoinSet::new();
        for relay in self.relays {
            relays.spawn(relay.run(relays_stop.clone()));
        }
        for pruning in self.retention {
            relays.spawn(pruning.run(relays_stop.clone()));
        }
        let mut consumers = tokio::task::JoinSet::new();
        for consumer in self.consumers {
            consumers.spawn(consumer.run(stopping.clone()));
        }
        let cancelled = stopping.clone();
        let served = self.http.serve(self.listener, async move { cancelled.cancelled().await }).await;
        stopping.cancel();
        while consumers.join_next().await.is_some() {}
        relays_stop.cancel();
        while relays.join_next().await.is_some() {}
        broker_stop.cancel();
        while broker.join_next().await.is_some() {}
        served
    }
}
