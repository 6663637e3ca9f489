//! What the host runs, in one place that every part reaches after start: the engine, the
//! services (each with its current code and that code's identity, and its broker connection),
//! and whether the host is stopping. The HTTP listener routes with it, the admin API shows and
//! swaps code in it, the file watcher reloads through it.
//!
//! Built once by [`crate::startup::Host::build`] and shared by `Arc`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::engine::Runtime;
use crate::service::Service;
use crate::telemetry::metrics::Metrics;

/// The engine, the services and the host's state that every part reads after start.
pub struct Registry {
    runtime: Arc<Runtime>,
    /// Longest route first, so `/orders-archive` is tried before `/orders`.
    services: Vec<Arc<Service>>,
    /// Set when shutdown begins: readiness answers 503 from then on.
    stopping: AtomicBool,
    /// The host's metrics, which the admin listener serves.
    metrics: Arc<Metrics>,
}

impl Registry {
    /// A registry of `services` on `runtime`, ordered for routing.
    pub fn new(
        runtime: Arc<Runtime>,
        mut services: Vec<Arc<Service>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        services.sort_by_key(|service| std::cmp::Reverse(service.route().len()));
        Self {
            runtime,
            services,
            stopping: AtomicBool::new(false),
            metrics,
        }
    }

    /// The host's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The engine and linker every component is compiled and instantiated with.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Every service, longest route first.
    pub fn services(&self) -> &[Arc<Service>] {
        &self.services
    }

    /// The service of the component called `name`.
    pub fn service(&self, name: &str) -> Option<&Arc<Service>> {
        self.services.iter().find(|service| service.name() == name)
    }

    /// The service whose route is a prefix of `path` (on a segment boundary), and the path it sees.
    pub fn route(&self, path: &str) -> Option<(&Arc<Service>, String)> {
        self.services.iter().find_map(|service| {
            let rest = path.strip_prefix(service.route())?;
            match rest {
                "" => Some((service, "/".to_owned())),
                rest if rest.starts_with('/') => Some((service, rest.to_owned())),
                _ => None,
            }
        })
    }

    /// Marks the host as stopping: readiness answers 503 from now on.
    pub fn begin_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Whether shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }
}
