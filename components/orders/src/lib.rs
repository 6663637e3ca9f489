//! The Orders service, a `wasm32-wasip2` component.
//!
//! It exports `wasi:http/incoming-handler` (through `spin-sdk`) and
//! `platform:service/message-handler`, and imports `platform:service/sql` and `messaging`,
//! nothing else. The host runs each request and each delivered event as one transaction.
//!
//! `POST /orders` stores the order and publishes `orders.created` in the same unit of work;
//! `invoices.issued` moves the order from `pending` to `invoiced`.
//!
//! # Layout
//! - [`routes`]: method and path to handler; 404 and 405 as problems.
//! - [`api`]: the HTTP handlers: create, get, list, health.
//! - [`domain`]: the order, a new order, a listing's filter.
//! - [`input`]: parsing requests into [`domain`] values; every refusal names the field.
//! - [`store`]: the SQL, and rows back into [`domain::Order`].
//! - [`docs`]: the OpenAPI document, `GET /openapi.json`.
//! - [`events`]: the `message-handler` export.

mod api;
mod docs;
mod domain;
mod events;
mod input;
mod routes;
mod store;

/// The `wasi:http/incoming-handler` export; its generated glue is `unsafe`.
#[allow(unsafe_code)]
mod export {
    #[spin_sdk::http_component]
    fn handle(request: spin_sdk::http::Request) -> spin_sdk::http::Response {
        #[allow(unused_mut)]
        let mut response = crate::routes::dispatch(&request);
        // A build that answers recognisably differently, for the host's hot-swap tests.
        #[cfg(feature = "marked")]
        response.set_header("x-orders-build", "marked");
        response
    }

    use crate::events::Handler;
    service_guest::export!(Handler);
}
