//! The Orders API's OpenAPI document, served at `GET /openapi.json`. Generated from the types
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
        title = "Orders",
        description = "Takes orders. Each new order is announced as `orders.created`; Invoices \
            issues its invoice and the order becomes `invoiced`. Errors are RFC 9457 problems \
            (`application/problem+json`) naming the field at fault in `errors`.",
    ),
    paths(api::create, api::get, api::list, api::health),
    tags(
        (name = "orders", description = "Orders and their status."),
        (name = "health", description = "Readiness of the service."),
    ),
)]
struct Document;

/// The document, checked against `routes`, the table that serves.
pub fn serve(routes: &[Route], request: &Request) -> Response {
    openapi::serve(Document::openapi(), routes, request)
}
