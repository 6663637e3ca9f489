//! What one `Store` holds: created for one HTTP request (or, with messaging, one delivered event)
//! and dropped when it is answered.
//!
//! The WASI context grants nothing a service should not have: no environment, no arguments, no
//! preopened folders, no sockets, no name lookups, no outgoing HTTP. Stdout and stderr become
//! the host's log lines, tagged with the component (see [`crate::capabilities::logging`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::capabilities::logging::{GuestLog, Stream};
use crate::capabilities::{Capabilities, HasCapabilities, InStore};
use crate::config::GuestLimits;
use crate::turns::TurnSlot;

/// The data of one `Store`: the WASI contexts and each capability's state for one unit of work.
pub struct StoreState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    /// Resources handed to the guest (streams, requests, responses); dies with the store. Holds
    /// at most `max_resources`: past that, the call that would add one fails (for most, a trap).
    table: ResourceTable,
    hooks: crate::capabilities::http::DenyOutgoing,
    /// Caps linear memory and table growth of this instance, and remembers how far it grew.
    pub limits: GuestMemory,
    /// Each capability's context for this unit of work.
    pub capabilities: InStore,
    /// The guest's turn on the CPU, handed back whenever it calls `sql` or `messaging`.
    pub turn: TurnSlot,
    /// Counts this unit of work among its component's in flight while the store lives.
    _in_flight: InFlight,
}

/// One unit of work counted in its component's in-flight count, for as long as it lives.
struct InFlight(Arc<AtomicU64>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl StoreState {
    /// The state of a new store of a component with `capabilities`, for a unit of work that
    /// must be over by `deadline`, counted in `in_flight` until it is dropped.
    pub fn new(
        capabilities: &Capabilities,
        deadline: Instant,
        memory_bytes: usize,
        limits: &GuestLimits,
        in_flight: Arc<AtomicU64>,
    ) -> Self {
        in_flight.fetch_add(1, Ordering::Relaxed);
        let (component, log_rate) = &capabilities.logging;
        let wasi = WasiCtxBuilder::new()
            .stdout(GuestLog::new(
                component.clone(),
                Stream::Stdout,
                log_rate.clone(),
            ))
            .stderr(GuestLog::new(
                component.clone(),
                Stream::Stderr,
                log_rate.clone(),
            ))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(limits.max_header_bytes);
        let mut table = ResourceTable::new();
        table.set_max_capacity(limits.max_resources);
        Self {
            wasi,
            http,
            table,
            hooks: crate::capabilities::http::DenyOutgoing,
            limits: GuestMemory {
                limits: StoreLimitsBuilder::new()
                    .memory_size(memory_bytes)
                    .instances(64)
                    .build(),
                largest: 0,
            },
            capabilities: capabilities.for_store(deadline),
            turn: TurnSlot::default(),
            _in_flight: InFlight(in_flight),
        }
    }
}

/// Linear memory past which a store is dropped on a blocking thread rather than on the async
/// workers: giving a slot back makes the kernel free every page the guest wrote beyond what the
/// pool keeps resident, which takes milliseconds for tens of megabytes.
const RETIRE_INLINE_BYTES: usize = 4 << 20;

/// The store's memory and table limits (wasmtime's own), and the largest memory it asked for.
pub struct GuestMemory {
    limits: StoreLimits,
    largest: usize,
}

impl ResourceLimiter for GuestMemory {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            self.largest = self.largest.max(desired);
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// Drops a store whose unit of work is over: where it is when its guest stayed small, on a
/// blocking thread when the guest grew its memory far (see [`RETIRE_INLINE_BYTES`]), so one
/// component's big guests do not hold up the threads every request runs on.
pub fn retire(store: Store<StoreState>) {
    if store.data().limits.largest <= RETIRE_INLINE_BYTES {
        drop(store);
        return;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(move || drop(store))),
        Err(_) => drop(store),
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for StoreState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl HasCapabilities for StoreState {
    fn capabilities(&mut self) -> &mut InStore {
        &mut self.capabilities
    }

    fn about_to_wait(&mut self) {
        self.turn.release();
    }
}
