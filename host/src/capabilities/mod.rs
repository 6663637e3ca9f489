//! Imports: what a component may call on the host, and the one place they are composed.
//!
//! Each capability has one shape: a context built per store (`SqlCtx`, `MessagingCtx`), a view
//! borrowing it (`Sql<'_>`), the generated `Host` trait implemented on the view, and one
//! `add_to_linker`. This module composes them, so a capability plugs in here and in its own
//! folder only:
//!
//! - [`Capabilities`]: what each keeps per component, built once with its service from the
//!   component's manifest entry and what the host made for it ([`Parts`]);
//! - [`InStore`]: each one's context in one store, for one unit of work
//!   ([`Capabilities::for_store`]);
//! - [`add_to_linker`]: each one's imports, on any store data that holds an [`InStore`]
//!   ([`HasCapabilities`]);
//! - [`Capabilities::run_background`]: each one's background work for the component (the outbox
//!   relay, the messaging tables' pruning), joining the host's supervisor.
//!
//! A new capability `x` is its folder `capabilities/x/` plus a field in each of the two structs,
//! a line in [`Capabilities::new`], [`Capabilities::for_store`], [`add_to_linker`] and (when it
//! works in the background) [`Capabilities::run_background`], and (when it has configuration of
//! its own) a section in [`crate::config`].

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;
use wasmtime::component::Linker;
use wasmtime::error::Context;

use crate::config::ComponentConfig;
use crate::supervisor::{Phase, Supervisor};
use crate::telemetry::metrics::ComponentMetrics;

pub mod http;
pub mod logging;
pub mod memory;
pub mod messaging;
pub mod route;
pub mod sql;

use logging::LogRate;
use memory::HostMemory;
use messaging::broker::Broker;
use messaging::outbox::Relay;
use messaging::retention::Retention;
use messaging::{MessagingCtx, Outbound, PublishLimits};
use route::{RouteCtx, Routes};
use sql::{Database, SqlComponent, SqlCtx, SqlLimits};

/// What the host made for one component that its capabilities are built from.
pub struct Parts<'a> {
    /// Its manifest entry: its name, route, topics and limits.
    pub config: &'a ComponentConfig,
    /// Its database.
    pub database: Arc<dyn Database>,
    /// Its broker connection, when it publishes or subscribes.
    pub broker: Option<Arc<Broker>>,
    /// Its metrics.
    pub metrics: ComponentMetrics,
    /// Its share of the host's memory.
    pub host_memory: Arc<HostMemory>,
    /// Its turns on the CPU, which large results are read in.
    pub turns: Arc<Semaphore>,
}

/// What each capability keeps per component, built once with its service.
pub struct Capabilities {
    /// `sql`: the database, the statements' limits and what each statement was found to be.
    pub sql: Arc<SqlComponent>,
    /// `messaging`: what the component may publish, and the wake-up of its relay.
    pub messaging: Arc<Outbound>,
    /// How much one unit of work may publish.
    publish: PublishLimits,
    /// The broker its relay publishes to.
    broker: Option<Arc<Broker>>,
    /// `http-route`: the routes it named.
    pub route: Arc<Routes>,
    /// Its guests' stdout and stderr: the name their lines carry and the rate they share.
    pub logging: (Arc<str>, Arc<LogRate>),
    /// Its share of the host's memory, which published events are reserved from.
    host_memory: Arc<HostMemory>,
    /// Its metrics, which every capability's calls count in.
    metrics: ComponentMetrics,
}

impl Capabilities {
    /// Each capability's part of a component.
    pub fn new(parts: Parts<'_>) -> Self {
        let config = parts.config;
        let limits = &config.limits;
        Self {
            sql: Arc::new(SqlComponent {
                database: parts.database,
                limits: SqlLimits {
                    max_statement_bytes: limits.max_statement_bytes,
                    max_parameters: limits.max_parameters,
                    max_parameter_bytes: limits.max_parameter_bytes,
                    max_result_bytes: limits.max_result_bytes,
                },
                memory: parts.host_memory.clone(),
                turns: parts.turns,
                verdicts: Default::default(),
            }),
            messaging: Arc::new(Outbound {
                source: config.name.clone(),
                topics: config.publishes.iter().cloned().collect(),
                ..Outbound::default()
            }),
            publish: PublishLimits {
                max_event_bytes: limits.max_event_bytes,
                max_published_bytes: limits.max_published_bytes,
            },
            broker: parts.broker,
            route: Arc::new(Routes::new(&config.name, &config.route)),
            logging: (
                config.name.as_str().into(),
                LogRate::new(
                    &config.name,
                    limits.log_lines_per_second,
                    parts.metrics.clone(),
                ),
            ),
            host_memory: parts.host_memory,
            metrics: parts.metrics,
        }
    }

    /// Each capability's context for one unit of work that must be over by `deadline`.
    pub fn for_store(&self, deadline: Instant) -> InStore {
        InStore {
            sql: SqlCtx::new(self.sql.clone(), deadline),
            messaging: MessagingCtx::new(
                self.messaging.clone(),
                self.metrics.clone(),
                self.publish,
                self.host_memory.clone(),
            ),
            route: RouteCtx::new(self.route.clone()),
            metrics: self.metrics.clone(),
        }
    }
}

impl Capabilities {
    /// Starts each capability's background work for the component in `supervisor`, restarted
    /// if it dies and stopped in the background phase: the outbox relay of a component that
    /// publishes, the pruning of the outbox and inbox of one that uses messaging. Both go
    /// through the component's database, whatever that is.
    pub fn run_background(&self, supervisor: &mut Supervisor) {
        let Some(broker) = &self.broker else {
            return;
        };
        let component = self.logging.0.to_string();
        let database = &self.sql.database;
        if !self.messaging.topics.is_empty() {
            let relay = Relay::new(
                component.clone(),
                database.clone(),
                broker.clone(),
                self.messaging.clone(),
                self.metrics.clone(),
                self.publish.max_event_bytes,
            );
            let name = format!("outbox relay of {component}");
            supervisor
                .spawn_restarting(Phase::Background, name, move |stop| relay.clone().run(stop));
        }
        let name = format!("outbox and inbox retention of {component}");
        let keep = broker.config().retention;
        let pruning = Arc::new(Retention::new(component, database.clone(), keep));
        supervisor.spawn_restarting(Phase::Background, name, move |stop| {
            pruning.clone().run(stop)
        });
    }
}

/// Each capability's context in one store: created with it, dropped with it.
pub struct InStore {
    /// This unit of work's database transaction.
    pub sql: SqlCtx,
    /// What this unit of work published (into the same transaction).
    pub messaging: MessagingCtx,
    /// The route the component named for the HTTP request it serves.
    pub route: RouteCtx,
    /// The component's metrics, for its statements.
    pub metrics: ComponentMetrics,
}

/// Store data that holds the capabilities' contexts.
pub trait HasCapabilities: Send + 'static {
    /// The capabilities' contexts.
    fn capabilities(&mut self) -> &mut InStore;

    /// Called before a capability call that may wait (on the database, on a lock): hands back
    /// the guest's turn on the CPU (see [`crate::turns`]).
    fn about_to_wait(&mut self);
}

/// Adds every platform capability to `linker`.
pub fn add_to_linker<T: HasCapabilities>(linker: &mut Linker<T>) -> anyhow::Result<()> {
    sql::add_to_linker(linker, |state| {
        state.about_to_wait();
        let store = state.capabilities();
        sql::Sql::new(&mut store.sql, &store.metrics)
    })
    .context("cannot link platform:service/sql")?;
    messaging::add_to_linker(linker, |state| {
        state.about_to_wait();
        let store = state.capabilities();
        messaging::Messaging::new(&mut store.messaging, &mut store.sql)
    })
    .context("cannot link platform:service/messaging")?;
    route::add_to_linker(linker, |state| {
        route::Route::new(&mut state.capabilities().route)
    })
    .context("cannot link platform:service/http-route")?;
    Ok(())
}
