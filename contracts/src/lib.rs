//! Types the Orders and Invoices services share: identifiers, money and (with messaging) the
//! events that cross the broker.
//!
//! Every type here is "parse, don't validate": its constructor is the only way in, so a value
//! that exists is valid. Nothing here does I/O; the crate builds for `wasm32-wasip2` (the
//! components) and natively (the host's tests).
//!
//! # Layout
//! - [`events`]: `orders.created` and `invoices.issued`, in their CloudEvents envelope.
//! - [`ids`]: `OrderId`, `CustomerId`, `InvoiceId`, `EventId` (UUIDs).
//! - [`media`]: which content types are JSON, for requests, responses and events alike.
//! - [`money`]: `Amount`, a positive whole number of minor currency units.
//! - [`problem`]: RFC 9457 problem details, the shape of every error response.
//! - `openapi` (feature `openapi`): the OpenAPI schemas of these types, for API documents.
//! - `schema` (feature `schema`): the events' JSON Schemas, generated from these types.
//! - [`time`]: `Timestamp`, microseconds since the Unix epoch, shown as RFC 3339.

#![forbid(unsafe_code)]

pub mod events;
pub mod ids;
pub mod media;
pub mod money;
#[cfg(feature = "openapi")]
mod openapi;
pub mod problem;
#[cfg(feature = "schema")]
pub mod schema;
pub mod time;

pub use ids::{CustomerId, EventId, InvoiceId, OrderId, ParseIdError};
pub use money::{Amount, AmountError};
pub use problem::{FieldError, Location, Problem};
pub use time::{Timestamp, TimestampError};
