//! A component's code: compiled (through the [`crate::cache::CompileCache`]), checked against
//! the world and the component's manifest entry, and ready to instantiate; with its identity
//! (digest, source, version), which the admin API shows.
//!
//! Built at start and at each reload; requests hold the `Arc<Code>` they started on.

use std::time::{Instant, SystemTime};

use wasmtime::error::Context;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::bindings::SubscriberPre;
use crate::engine::Runtime;
use crate::state::StoreState;

/// Code checked against the world and ready to instantiate.
pub struct Code {
    /// Instantiates the component as a `wasi:http` proxy.
    pub proxy: ProxyPre<StoreState>,
    /// Instantiates it as an event consumer; present when it has subscriptions.
    pub subscriber: Option<SubscriberPre<StoreState>>,
    /// Which code it is, for the admin API and the logs.
    pub identity: Identity,
}

/// Which code this is and where it came from.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Identity {
    /// sha256 of the `.wasm`, in hex.
    pub sha256: String,
    /// The file it was read from, or `upload` for code sent to the admin API.
    pub source: String,
    /// When it was compiled (or read from the cache) and checked; RFC 3339 in the admin API.
    #[serde(with = "crate::rfc3339")]
    pub loaded_at: SystemTime,
    /// 1 for the code loaded at start, one more at each swap.
    pub version: u64,
    /// Whether the compiled code came from the compile cache.
    pub from_cache: bool,
    /// How long compiling (or loading from the cache) and checking took.
    pub load_ms: u64,
}

impl Code {
    /// Compiles `wasm` and checks it against what the host provides and what the component's
    /// manifest entry requires (a route needs the HTTP export, subscriptions the handler).
    /// CPU-heavy: run it off the async threads.
    /// `sha256` is the digest of `wasm` ([`crate::cache::digest`]).
    pub fn load(
        runtime: &Runtime,
        name: &str,
        wasm: &[u8],
        sha256: String,
        source: String,
        subscribes: bool,
    ) -> anyhow::Result<Self> {
        let started = Instant::now();
        let compiled = runtime
            .cache
            .load(&runtime.engine, &sha256, wasm)
            .with_context(|| format!("{source} is not a valid WebAssembly component"))?;
        let pre = runtime.linker.instantiate_pre(&compiled.component).with_context(|| {
            format!(
                "component `{name}` ({source}) needs an import this host does not provide; build \
                 it against the platform:service/service world in wit/"
            )
        })?;
        let subscriber = if subscribes {
            Some(SubscriberPre::new(pre.clone()).with_context(|| {
                format!(
                    "component `{name}` ({source}) has subscriptions but does not export \
                     platform:service/message-handler"
                )
            })?)
        } else {
            None
        };
        let proxy = ProxyPre::new(pre).with_context(|| {
            format!(
                "component `{name}` ({source}) does not export wasi:http/incoming-handler@0.2.x, \
                 which a component with a route must"
            )
        })?;
        let identity = Identity {
            sha256,
            source,
            loaded_at: SystemTime::now(),
            version: 0,
            from_cache: compiled.cached,
            load_ms: started.elapsed().as_millis() as u64,
        };
        tracing::info!(
            component = name,
            source = %identity.source,
            sha256 = %identity.sha256,
            from_cache = identity.from_cache,
            load_ms = identity.load_ms,
            "component compiled"
        );
        Ok(Self {
            proxy,
            subscriber,
            identity,
        })
    }
}
