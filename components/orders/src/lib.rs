//! The Orders service, a `wasm32-wasip2` component.
//!
//! It exports `wasi:http/incoming-handler` (through `spin-sdk`) and imports
//! `platform:service/sql` (through `wit-bindgen`), nothing else: the host gives it its own
//! database and runs each request as one transaction, committed when the answer is below 500.
//!
//! # Layout
//! - [`routes`]: method and path to handler; 404 and 405 as problems.
//! - [`api`]: the handlers: create, get, list, health.
//! - [`input`]: parsing requests into domain values; every refusal names the field.
//! - [`store`]: the SQL, and rows back into [`store::Order`].
//! - [`reply`]: JSON and problem responses.

mod api;
mod input;
mod reply;
mod routes;
mod store;

/// Bindings for the platform's imports (`sql`, `messaging`). Generated code is the only
/// `unsafe` in this crate.
#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "platform:service/capabilities",
    });

    pub use platform::service::sql;
}

/// The `wasi:http/incoming-handler` export; its generated glue is `unsafe`.
#[allow(unsafe_code)]
mod export {
    #[spin_sdk::http_component]
    fn handle(request: spin_sdk::http::Request) -> spin_sdk::http::Response {
        crate::routes::dispatch(&request)
    }
}
