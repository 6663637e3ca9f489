//! The HTTP handlers of the Invoices API.
//!
//! - `GET /invoices/{id}` → 200 or 404.
//! - `GET /invoices?orderId=&customerId=&limit=&cursor=` → a page, newest first, and
//!   `nextCursor`.
//! - `GET /health` → 200 when the database answers, 503 otherwise.

//!
//! Each handler's `#[utoipa::path]` documents it for `GET /openapi.json` (see [`crate::docs`]).

use contracts::{CustomerId, InvoiceId, Location, OrderId, ParseIdError, Problem};
use service_guest::query::Query;
use service_guest::reply::{self, Health};
use spin_sdk::http::{Request, Response};

use crate::store::{self, Filter, Invoice, StoreError};

/// A page of `GET /invoices`.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = InvoicePage)]
pub struct Page {
    /// Newest first.
    items: Vec<Invoice>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    next_cursor: Option<InvoiceId>,
}

#[utoipa::path(
    get,
    path = "/invoices/{id}",
    tag = "invoices",
    summary = "Get an invoice",
    params(("id" = InvoiceId, Path, description = "The invoice's id.")),
    responses(
        (status = 200, description = "The invoice.", body = Invoice),
        (
            status = 400,
            description = "`id` is not a UUID.",
            body = Problem,
            content_type = "application/problem+json",
        ),
        (
            status = 404,
            description = "There is no such invoice.",
            body = Problem,
            content_type = "application/problem+json",
        ),
    ),
)]
pub fn get(id: &str) -> Response {
    let id: InvoiceId = match id.parse() {
        Ok(id) => id,
        Err(err @ ParseIdError) => {
            return reply::problem(&Problem::invalid(Location::Path, "id", err.to_string()));
        }
    };
    match store::get(id) {
        Ok(Some(invoice)) => reply::json(200, &invoice),
        Ok(None) => reply::problem(&Problem::new(404, format!("no invoice {id}"))),
        Err(err) => failed(err),
    }
}

#[utoipa::path(
    get,
    path = "/invoices",
    tag = "invoices",
    summary = "List invoices",
    description = "Newest first, paged with `nextCursor`. `orderId` finds the one invoice of an \
        order. A page is a snapshot, not a change feed.",
    params(Filter),
    responses(
        (status = 200, description = "One page of invoices.", body = Page),
        (
            status = 400,
            description = "A parameter is malformed, unknown or repeated; `errors` names it.",
            body = Problem,
            content_type = "application/problem+json",
        ),
    ),
)]
pub fn list(request: &Request) -> Response {
    let filter = match parse_filter(request.query()) {
        Ok(filter) => filter,
        Err(problem) => return reply::problem(&problem),
    };
    match store::list(&filter) {
        Ok((items, next_cursor)) => reply::json(200, &Page { items, next_cursor }),
        Err(err) => failed(err),
    }
}

fn parse_filter(query: &str) -> Result<Filter, Problem> {
    let query = Query::parse(query, &["orderId", "customerId"])?;
    Ok(Filter {
        order_id: query.get("orderId", str::parse::<OrderId>)?,
        customer_id: query.get("customerId", str::parse::<CustomerId>)?,
        limit: query.limit()?,
        cursor: query.cursor()?,
    })
}

#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    summary = "Whether the service and its database answer",
    responses((status = 200, description = "The database answers.", body = Health)),
)]
pub fn health() -> Response {
    match store::ping() {
        Ok(()) => reply::json(200, &Health::UP),
        Err(err) => failed(err),
    }
}

fn failed(err: StoreError) -> Response {
    reply::failed("invoices", err)
}
