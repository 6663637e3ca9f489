//! The one `bindgen!` of the host: Rust types and traits for the `platform:service` WIT package
//! in `wit/` (the `subscriber` world: the `sql`, `messaging` and `http-route` imports and
//! the `message-handler` export). `wasi:*` interfaces, HTTP included, come from `wasmtime-wasi` and
//! `wasmtime-wasi-http`, which generate their own.
//!
//! Every import is async (it awaits PostgreSQL or the broker) and trappable: a guest mistake
//! comes back as the interface's WIT error, a host bug as a trap.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "platform:service/subscriber",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use exports::platform::service::message_handler;

pub use platform::service::{http_route, messaging, sql};
