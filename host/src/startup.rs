//! Building a host apart from running it.
//!
//! [`Host::build`] checks everything that can be checked before serving: it migrates each
//! component's database, compiles each component against the world and binds the listener. Any
//! failure stops the start with a message saying what to fix. [`Host::run_until_stopped`] then
//! serves until the shutdown future completes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::capabilities::sql::Database;
use crate::capabilities::sql::postgres::PgDatabase;
use crate::config::Config;
use crate::engine::Runtime;
use crate::migrations;
use crate::service::{Code, Service};
use crate::triggers::http::HttpTrigger;

pub struct Host {
    listener: TcpListener,
    http: Arc<HttpTrigger>,
    services: Vec<Arc<Service>>,
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
            let database = PgDatabase::new(&component.database)
                .with_context(|| format!("cannot set up the pool for {}", component.database.url))?;
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
        let runtime = Arc::new(Runtime::new(&config.limits)?);
        let mut services = Vec::new();
        for component in &config.components {
            let database = databases
                .remove(&component.name)
                .with_context(|| format!("no database for component `{}`", component.name))?;
            let compiling = runtime.clone();
            let (name, path) = (component.name.clone(), component.wasm.clone());
            let code = tokio::task::spawn_blocking(move || Code::compile(&compiling, &name, &path))
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
        let http = Arc::new(HttpTrigger::new(runtime, services.clone(), config.http));
        Ok(Self { listener, http, services })
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

    /// Serves until `shutdown` completes, then lets requests in flight finish.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        tracing::info!(address = %self.local_addr(), "serving HTTP");
        self.http.serve(self.listener, shutdown).await
    }
}
