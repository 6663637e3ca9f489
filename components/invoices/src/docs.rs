//! The Invoices API's OpenAPI document, served at `GET /openapi.json`. Generated from the types
//! the handlers parse and answer with, and from each handler's `#[utoipa::path]`, so it
//! describes what the code does; the host serves Swagger UI for it at `<route>/docs`.

use service_guest::openapi;
use service_guest::router::Route;
use spin_sdk::http::{Request, Response};
use utoipa::OpenApi;

use crate::api;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Invoices",
        description = "Issues one invoice for each order announced as `orders.created`, and \
            announces it as `invoices.issued`. Invoices are read-only here. Errors are RFC 9457 \
            problems (`application/problem+json`) naming the field at fault in `errors`.",
    ),
    paths(api::get, api::list, api::health),
    tags(
        (name = "invoices", description = "Invoices, one per order."),
        (name = "health", description = "Readiness of the service."),
    ),
)]
struct Document;

/// The document, checked against `routes`, the table that serves.
pub fn serve(routes: &[Route], request: &Request) -> Response {
    openapi::serve(Document::openapi(), routes, request)
}
