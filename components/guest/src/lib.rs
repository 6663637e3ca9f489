//! What every service component shares, so each one holds only its own logic.
//!
//! - [`bindings`]: the `platform:service/subscriber` world (imports `sql`, `messaging` and
//!   `http-route`, exports `message-handler`); a component names its handler with [`export!`].
//! - [`router`]: the route table that dispatches requests and names the matched route to the
//!   host, for its spans and metrics.
//! - [`reply`]: JSON and RFC 9457 problem responses, and the prefix the host serves it under.
//! - [`openapi`]: the `GET /openapi.json` answer: a component's document plus what every
//!   component shares (host errors, the server it is reached through).
//! - [`events`]: publishing typed events from `contracts` and reading delivered ones.
//! - [`page`]: one page of a keyset-paginated list.
//! - [`query`]: list parameters, `limit` and `cursor`.
//! - [`rows`]: reading typed values out of `sql` rows.

pub mod events;
pub mod openapi;
pub mod page;
pub mod query;
pub mod reply;
pub mod router;
pub mod rows;

/// Generated bindings; their glue code is the only `unsafe` here.
#[allow(unsafe_code)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "platform:service/subscriber",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "service_guest::bindings",
    });
}

pub use bindings::export;
pub use bindings::exports::platform::service::message_handler::{
    Guest as MessageHandler, HandleError, IncomingEvent,
};
pub use bindings::platform::service::{messaging, sql};
pub use utoipa;
