//! One loaded component: its compiled code, its route, its database and its [`Admission`].
//!
//! The code sits behind an `ArcSwap` so it can be replaced while requests run: a request takes
//! the current code once, at its start, and finishes on it even if new code is swapped in.
//! Compiling and checking new code happens before the swap, so bad code never replaces good.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;


use wasmtime::error::Context;
use arc_swap::ArcSwap;
use wasmtime::Store;
use wasmtime::component::Component;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::bindings::SubscriberPre;
use crate::capabilities::messaging::{MessagingCtx, Outbound};
use crate::capabilities::sql::{Database, SqlCtx};
use crate::config::{ComponentConfig, Limits};
use crate::engine::Runtime;
use crate::state::StoreState;

pub mod admission;
pub mod turns;

pub use admission::{Admission, Busy};
use turns::Turns;

/// Code checked against the world and ready to instantiate.
pub struct Code {
    /// Instantiates the component as a `wasi:http` proxy.
    pub proxy: ProxyPre<StoreState>,
    /// Instantiates it as an event consumer; present when it has subscriptions.
    pub subscriber: Option<SubscriberPre<StoreState>>,
    /// Where it was loaded from, for logs.
    pub path: PathBuf,
}

impl Code {
    /// Compiles `path` and checks it against what the host provides and requires. CPU-heavy:
    /// run it off the async threads.
    pub fn compile(runtime: &Runtime, name: &str, path: &Path, subscribes: bool) -> anyhow::Result<Self> {
        let started = Instant::now();
        let component = Component::from_file(&runtime.engine, path).with_context(|| {
            format!("{} is not a valid WebAssembly component", path.display())
        })?;
        let pre = runtime.linker.instantiate_pre(&component).with_context(|| {
            format!(
                "component `{name}` ({}) needs an import this host does not provide; build it \
                 against the platform:service/service world in wit/",
                path.display()
            )
        })?;
        let subscriber = if subscribes {
            Some(SubscriberPre::new(pre.clone()).with_context(|| {
                format!(
                    "component `{name}` ({}) has subscriptions but does not export \
                     platform:service/message-handler",
                    path.display()
                )
            })?)
        } else {
            None
        };
        let proxy = ProxyPre::new(pre).with_context(|| {
            format!(
                "component `{name}` ({}) does not export wasi:http/incoming-handler@0.2.x, \
                 which a component with a route must",
                path.display()
            )
        })?;
        tracing::info!(
            component = name,
            path = %path.display(),
            compile_ms = started.elapsed().as_millis() as u64,
            "component compiled"
        );
        Ok(Self { proxy, subscriber, path: path.to_owned() })
    }
}

pub struct Service {
    pub name: String,
    /// The name again, shared with every store's log streams.
    log_name: Arc<str>,
    /// Path prefix it serves, such as `/orders`.
    pub route: String,
    pub database: Arc<dyn Database>,
    /// What it may publish, and the wake-up of its outbox relay.
    pub outbound: Arc<Outbound>,
    /// Topics delivered to it.
    pub subscriptions: Vec<String>,
    code: ArcSwap<Code>,
    /// Linear memory one instance may use.
    memory_bytes: usize,
    /// Bounds the HTTP requests running in this component at once.
    pub admission: Admission,
    /// Shares the CPU between this component's long-running guests and everything else.
    turns: Turns,
}

impl Service {
    pub fn new(config: &ComponentConfig, limits: &Limits, code: Code, database: Arc<dyn Database>) -> Self {
        Self {
            name: config.name.clone(),
            log_name: config.name.as_str().into(),
            route: config.route.clone(),
            database,
            outbound: Arc::new(Outbound {
                source: config.name.clone(),
                topics: config.publishes.iter().cloned().collect(),
                wakeup: tokio::sync::Notify::new(),
            }),
            subscriptions: config.subscriptions.clone(),
            code: ArcSwap::from_pointee(code),
            memory_bytes: (limits.memory_mib * 1024 * 1024) as usize,
            admission: Admission::new(config.max_concurrency, config.max_queued),
            turns: Turns::new(),
        }
    }

    /// The code requests starting now run on.
    pub fn code(&self) -> Arc<Code> {
        self.code.load_full()
    }

    /// Replaces the code; requests already running finish on the old one.
    pub fn swap(&self, code: Code) {
        self.code.store(Arc::new(code));
    }

    /// A fresh store for one unit of work that must end by `deadline`.
    ///
    /// At every epoch tick the guest yields its worker thread and waits for a turn (see
    /// [`turns`]); once the deadline has passed it traps instead. So a guest that loops or
    /// computes for long neither starves other requests nor outlives its unit of work.
    pub fn new_store(&self, runtime: &Runtime, deadline: Instant) -> Store<StoreState> {
        let state = StoreState::new(
            &self.log_name,
            SqlCtx::new(self.database.clone(), deadline),
            MessagingCtx::new(self.outbound.clone()),
            self.memory_bytes,
        );
        let mut store = Store::new(&runtime.engine, state);
        store.limiter(|state| &mut state.limits);
        self.turns.install(&mut store, deadline);
        store
    }
}
