//! One loaded component: its compiled code, its route, its database and its [`Admission`].
//!
//! The code sits behind an `ArcSwap` so it can be replaced while requests run: a request takes
//! the current code once, at its start, and finishes on it even if new code is swapped in.
//! Compiling and checking new code happens before the swap (see [`crate::control::reload`]), so
//! bad code never replaces good.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::capabilities::logging::LogRate;
use crate::capabilities::memory::HostMemory;
use crate::capabilities::messaging::Outbound;
use crate::capabilities::messaging::broker::Broker;
use crate::capabilities::sql::Database;
use crate::capabilities::{Capabilities, Parts};
use crate::config::{ComponentConfig, GuestLimits, Limits};
use crate::telemetry::metrics::{ComponentMetrics, Metrics};

pub mod admission;
pub mod code;
pub mod unit_of_work;

use crate::turns::Turns;
pub use admission::{Admission, Busy};
pub use code::{Code, Identity};

/// One component as the host runs it, from start to shutdown.
pub struct Service {
    /// Its manifest entry: its name, route and topics, where its `.wasm` and migrations are.
    pub config: ComponentConfig,
    /// Where its units of work's effects go beyond the host.
    pub reach: Reach,
    /// Its metrics, labelled with its name.
    pub metrics: ComponentMetrics,
    /// Bounds the HTTP requests running in this component at once.
    pub admission: Admission,
    /// What each of its stores is made from (see [`unit_of_work`]).
    guests: Guests,
    /// The code it serves, and how that came to be.
    deployment: Deployment,
}

/// Where a component's units of work reach beyond the host, built once with its service.
pub struct Reach {
    /// Its database: where its units of work's statements and the host's own go.
    pub database: Arc<dyn Database>,
    /// What it may publish, and the wake-up of its outbox relay.
    pub outbound: Arc<Outbound>,
    /// Its broker connection, when it publishes or subscribes.
    pub broker: Option<Arc<Broker>>,
}

/// What every store of one component is made from, built once with its service.
struct Guests {
    /// What each capability keeps for the component.
    capabilities: Capabilities,
    /// Linear memory one instance may use.
    memory_bytes: usize,
    /// What its units of work may take of the host.
    limits: GuestLimits,
    /// Its share of the host's memory, from which statements, results, events and response
    /// bodies are reserved.
    host_memory: Arc<HostMemory>,
    /// Shares the CPU between this component's long-running guests and everything else.
    turns: Turns,
    /// Units of work (requests and deliveries) running now, on any version of the code.
    in_flight: Arc<AtomicU64>,
}

/// The code a component serves, replaced whole by a swap, and its loads.
struct Deployment {
    /// What requests starting now run on.
    current: ArcSwap<Code>,
    /// The last load that failed, while the code before it kept serving.
    last_failure: Mutex<Option<FailedLoad>>,
    /// Held while a reload runs, so reloads of one component never overlap.
    reloading: tokio::sync::Mutex<()>,
    /// The digest of what its `.wasm` file held when last loaded from it (see
    /// [`crate::control::reload::Source::Watched`]).
    file_digest: Mutex<Option<String>>,
}

/// A load that changed nothing, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FailedLoad {
    /// What was loaded: the file, an upload.
    pub source: String,
    /// When.
    #[serde(with = "crate::rfc3339")]
    pub at: SystemTime,
    /// Why it was refused.
    pub reason: String,
}

impl Service {
    /// The service of the component `config` names, serving `code` as its version 1.
    pub fn new(
        config: &ComponentConfig,
        limits: &Limits,
        mut code: Code,
        database: Arc<dyn Database>,
        broker: Option<Arc<Broker>>,
        metrics: &Arc<Metrics>,
    ) -> Self {
        code.identity.version = 1;
        let file_digest = Mutex::new(Some(code.identity.sha256.clone()));
        let host_memory = HostMemory::new(config.limits.host_memory_bytes);
        let turns = Turns::new();
        let capabilities = Capabilities::new(Parts {
            config,
            database: database.clone(),
            broker: broker.clone(),
            metrics: metrics.component(&config.name),
            host_memory: host_memory.clone(),
            turns: turns.permits(),
        });
        Self {
            config: config.clone(),
            reach: Reach {
                database,
                outbound: capabilities.messaging.clone(),
                broker,
            },
            metrics: metrics.component(&config.name),
            admission: Admission::new(config.max_concurrency, config.max_queued),
            guests: Guests {
                capabilities,
                memory_bytes: (limits.memory_mib * 1024 * 1024) as usize,
                limits: config.limits,
                host_memory,
                turns,
                in_flight: Arc::default(),
            },
            deployment: Deployment {
                current: ArcSwap::from_pointee(code),
                last_failure: Mutex::new(None),
                reloading: tokio::sync::Mutex::new(()),
                file_digest,
            },
        }
    }

    /// Starts its capabilities' background work (its outbox relay, its tables' pruning) in
    /// `supervisor`.
    pub fn run_background(&self, supervisor: &mut crate::supervisor::Supervisor) {
        self.guests.capabilities.run_background(supervisor);
    }

    /// The component's name, from the manifest.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The path prefix it serves, such as `/orders`.
    pub fn route(&self) -> &str {
        &self.config.route
    }

    /// The topics delivered to it.
    pub fn subscriptions(&self) -> &[String] {
        &self.config.subscriptions
    }

    /// What its units of work may take of the host.
    pub fn limits(&self) -> &GuestLimits {
        &self.guests.limits
    }

    /// Its share of the host's memory.
    pub fn host_memory(&self) -> &Arc<HostMemory> {
        &self.guests.host_memory
    }

    /// Held while a reload runs, so reloads of one component never overlap.
    pub fn reloading(&self) -> &tokio::sync::Mutex<()> {
        &self.deployment.reloading
    }

    /// The code requests starting now run on.
    pub fn code(&self) -> Arc<Code> {
        self.deployment.current.load_full()
    }

    /// Replaces the code, numbering it one past the code it replaces; requests already running
    /// finish on the old one. Clears the last failed load.
    pub fn swap(&self, mut code: Code) -> Arc<Code> {
        code.identity.version = self.deployment.current.load().identity.version + 1;
        let code = Arc::new(code);
        self.deployment.current.store(code.clone());
        *self.lock_failure() = None;
        self.metrics.swapped();
        code
    }

    /// Records a load that failed and changed nothing.
    pub fn failed_load(&self, source: String, reason: String) {
        *self.lock_failure() = Some(FailedLoad {
            source,
            at: SystemTime::now(),
            reason,
        });
        self.metrics.load_failed();
    }

    /// The last load that failed since the code serving now was swapped in.
    pub fn last_failure(&self) -> Option<FailedLoad> {
        self.lock_failure().clone()
    }

    fn lock_failure(&self) -> std::sync::MutexGuard<'_, Option<FailedLoad>> {
        self.deployment
            .last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The digest of its `.wasm` file when last loaded from it.
    pub fn file_digest(&self) -> Option<String> {
        self.deployment
            .file_digest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records what its `.wasm` file held when loaded from it.
    pub fn set_file_digest(&self, digest: String) {
        *self
            .deployment
            .file_digest
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(digest);
    }

    /// The lines its guests log, and the host's lines about its units of work, share this rate.
    pub fn log_rate(&self) -> &LogRate {
        &self.guests.capabilities.logging.1
    }

    /// Units of work running now.
    pub fn in_flight(&self) -> u64 {
        self.guests.in_flight.load(Ordering::Relaxed)
    }
}
