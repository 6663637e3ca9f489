//! What one `Store` holds: created for one HTTP request (or, with messaging, one delivered event)
//! and dropped when it is answered.
//!
//! The WASI context grants nothing a service should not have: no environment, no arguments, no
//! preopened folders, no sockets, no name lookups, no outgoing HTTP. Stdout and stderr become
//! the host's log lines, tagged with the component (see [`crate::capabilities::logging`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::capabilities::logging::{GuestLog, LogRate, Stream};
use crate::capabilities::messaging::MessagingCtx;
use crate::capabilities::route::RouteCtx;
use crate::capabilities::sql::SqlCtx;
use crate::config::GuestLimits;
use crate::service::turns::TurnSlot;
use crate::telemetry::metrics::ComponentMetrics;

pub struct StoreState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    /// Resources handed to the guest (streams, requests, responses); dies with the store. Holds
    /// at most `max_resources`: past that, the call that would add one fails (for most, a trap).
    table: ResourceTable,
    hooks: crate::capabilities::http::DenyOutgoing,
    /// Caps linear memory and table growth of this instance.
    pub limits: StoreLimits,
    /// This unit of work's database transaction.
    pub sql: SqlCtx,
    /// What this unit of work published (into the same transaction).
    pub messaging: MessagingCtx,
    /// The route the component named for the HTTP request it serves.
    pub route: RouteCtx,
    /// The component's metrics, for its statements.
    pub metrics: ComponentMetrics,
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
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        component: &Arc<str>,
        log_rate: &Arc<LogRate>,
        sql: SqlCtx,
        messaging: MessagingCtx,
        route: RouteCtx,
        metrics: ComponentMetrics,
        memory_bytes: usize,
        limits: &GuestLimits,
        in_flight: Arc<AtomicU64>,
    ) -> Self {
        in_flight.fetch_add(1, Ordering::Relaxed);
        let wasi = WasiCtxBuilder::new()
            .stdout(GuestLog::new(component.clone(), Stream::Stdout, log_rate.clone()))
            .stderr(GuestLog::new(component.clone(), Stream::Stderr, log_rate.clone()))
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
            limits: StoreLimitsBuilder::new().memory_size(memory_bytes).instances(64).build(),
            sql,
            messaging,
            route,
            metrics,
            turn: TurnSlot::default(),
            _in_flight: InFlight(in_flight),
        }
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for StoreState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}
