//! The handlers of the Orders API.
//!
//! - `POST /orders` `{customerId, amount}` → 201 with the order and `Location`, and
//!   `orders.created` published in the same unit of work. With an
//!   `Idempotency-Key`, a retry (same key, same body) gets the same order again, marked
//!   `Idempotent-Replayed: true`; the same key with another body is a 409.
//! - `GET /orders/{id}` → 200 or 404.
//! - `GET /orders?customerId=&status=&limit=&cursor=` → a page, newest first, and `nextCursor`.
//! - `GET /health` → 200 when the database answers, 503 otherwise.

use contracts::events::OrderCreated;
use contracts::{Location, OrderId, Problem};
use serde_json::json;
use service_guest::{events, messaging::PublishError, reply};
use spin_sdk::http::{Request, Response};

use crate::input::{self, ListQuery, NewOrder};
use crate::store::{self, Created, Order, StoreError};

/// A page of `GET /orders`.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Page {
    items: Vec<Order>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    next_cursor: Option<OrderId>,
}

pub fn create(request: &Request) -> Response {
    let parsed = NewOrder::from_request(request).and_then(|order| Ok((order, input::idempotency_key(request)?)));
    let (order, key) = match parsed {
        Ok(parsed) => parsed,
        Err(problem) => return reply::problem(&problem),
    };
    let id = OrderId::from_uuid(uuid::Uuid::now_v7());
    let (order, replayed) = match store::create(id, &order, key.as_deref()) {
        Ok(Created::New(created)) => {
            if let Err(err) = announce(&created) {
                return failed(err);
            }
            (created, false)
        }
        Ok(Created::Existing(existing)) if existing.customer_id == order.customer_id && existing.amount == order.amount => {
            (existing, true)
        }
        Ok(Created::Existing(_)) => {
            return reply::problem(&Problem::invalid_with_status(
                409,
                Location::Header,
                "Idempotency-Key",
                "was already used for an order with a different body",
            ));
        }
        Err(err) => return failed(err),
    };
    let mut response = reply::json(201, &order);
    response.set_header("location", format!("{}/orders/{}", reply::prefix(request), order.id));
    if replayed {
        response.set_header("idempotent-replayed", "true");
    }
    response
}

pub fn get(id: &str) -> Response {
    let id = match input::order_id(id) {
        Ok(id) => id,
        Err(problem) => return reply::problem(&problem),
    };
    match store::get(id) {
        Ok(Some(order)) => reply::json(200, &order),
        Ok(None) => reply::problem(&Problem::new(404, format!("no order {id}"))),
        Err(err) => failed(err),
    }
}

pub fn list(request: &Request) -> Response {
    let query = match ListQuery::parse(request.query()) {
        Ok(query) => query,
        Err(problem) => return reply::problem(&problem),
    };
    match store::list(&query) {
        Ok((items, next_cursor)) => reply::json(200, &Page { items, next_cursor }),
        Err(err) => failed(err),
    }
}

pub fn health() -> Response {
    match store::ping() {
        Ok(()) => reply::json(200, &json!({ "status": "up" })),
        Err(err) => failed(err),
    }
}

/// Publishes `orders.created` for a new order.
fn announce(order: &Order) -> Result<(), StoreError> {
    let event = OrderCreated {
        order_id: order.id,
        customer_id: order.customer_id,
        amount: order.amount,
        created_at: order.created_at,
    };
    events::publish(&event).map_err(|err| match err {
        PublishError::Unavailable(why) => StoreError::Unavailable(why),
        other => StoreError::Failed(format!("cannot publish orders.created: {other:?}")),
    })
}

fn failed(err: StoreError) -> Response {
    reply::failed("orders", err)
}
