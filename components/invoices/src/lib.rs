//! The Invoices service, a `wasm32-wasip2` component.
//!
//! It exports `wasi:http/incoming-handler` (through `spin-sdk`) and
//! `platform:service/message-handler`, and imports `platform:service/sql` and `messaging`.
//! For each `orders.created` it issues exactly one invoice and publishes `invoices.issued`, in
//! one unit of work; over HTTP it serves the invoices.
//!
//! # Layout
//! - [`routes`]: method and path to handler.
//! - [`api`]: `GET /invoices/{id}`, `GET /invoices`, `GET /health`.
//! - [`docs`]: the OpenAPI document, `GET /openapi.json`.
//! - [`events`]: the `message-handler` export: `orders.created` → invoice.
//! - [`store`]: the SQL, and rows back into [`store::Invoice`].

mod api;
mod docs;
mod events;
mod routes;
mod store;

/// The exports; their generated glue is `unsafe`.
#[allow(unsafe_code)]
mod export {
    #[spin_sdk::http_component]
    fn handle(request: spin_sdk::http::Request) -> spin_sdk::http::Response {
        crate::routes::dispatch(&request)
    }

    use crate::events::Handler;
    service_guest::export!(Handler);
}
