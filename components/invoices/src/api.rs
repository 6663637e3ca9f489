//! The HTTP handlers of the Invoices API.
//!
//! - `GET /invoices/{id}` → 200 or 404.
//! - `GET /invoices?orderId=&customerId=&limit=&cursor=` → a page, newest first, and
//!   `nextCursor`.
//! - `GET /health` → 200 when the database answers, 503 otherwise.

use contracts::{CustomerId, InvoiceId, Location, OrderId, ParseIdError, Problem};
use serde_json::json;
use service_guest::query::Query;
use service_guest::reply;
use spin_sdk::http::{Request, Response};

use crate::store::{self, Filter, Invoice, StoreError};

/// A page of `GET /invoices`.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Page {
    items: Vec<Invoice>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    next_cursor: Option<InvoiceId>,
}

pub fn get(id: &str) -> Response {
    let id: InvoiceId = match id.parse() {
        Ok(id) => id,
        Err(err @ ParseIdError) => return reply::problem(&Problem::invalid(Location::Path, "id", err.to_string())),
    };
    match store::get(id) {
        Ok(Some(invoice)) => reply::json(200, &invoice),
        Ok(None) => reply::problem(&Problem::new(404, format!("no invoice {id}"))),
        Err(err) => failed(err),
    }
}

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

pub fn health() -> Response {
    match store::ping() {
        Ok(()) => reply::json(200, &json!({ "status": "up" })),
        Err(err) => failed(err),
    }
}

fn failed(err: StoreError) -> Response {
    reply::failed("invoices", err)
}
