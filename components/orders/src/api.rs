//! The handlers of the Orders API.
//!
//! - `POST /orders` `{customerId, amount}` → 201 with the order and `Location`, and
//!   `orders.created` published in the same unit of work. With an
//!   `Idempotency-Key`, a retry (same key, same body) gets the same order again, marked
//!   `Idempotent-Replayed: true`; the same key with another body is a 409.
//! - `GET /orders/{id}` → 200 or 404.
//! - `GET /orders?customerId=&status=&limit=&cursor=` → a page, newest first, and `nextCursor`.
//! - `GET /health` → 200 when the database answers, 503 otherwise.

//!
//! Each handler's `#[utoipa::path]` documents it for `GET /openapi.json` (see [`crate::docs`]).

use contracts::events::OrderCreated;
use contracts::{Location, OrderId, Problem};
use service_guest::reply::{self, Health};
use service_guest::{events, messaging::PublishError};
use spin_sdk::http::{Request, Response};

use crate::domain::{ListQuery, NewOrder, Order};
use crate::input;
use crate::store::{self, Created, StoreError};

/// A page of `GET /orders`.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = OrderPage)]
pub struct Page {
    /// Newest first.
    items: Vec<Order>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    next_cursor: Option<OrderId>,
}

#[utoipa::path(
    post,
    path = "/orders",
    tag = "orders",
    summary = "Place an order",
    description = "Stores the order and, in the same unit of work, publishes `orders.created`; \
        Invoices then issues its invoice and the order becomes `invoiced`. A `201` means the \
        order is durable. With an `Idempotency-Key`, a retry with the same key and body gets \
        the same order again (`Idempotent-Replayed: true`); the same key with another body is \
        a `409`. Keys are global to the service: send a fresh UUID per logical order.",
    request_body(content = NewOrder, content_type = "application/json"),
    params(
        (
            "Idempotency-Key" = Option<String>,
            Header,
            nullable = false,
            min_length = 1,
            max_length = 255,
            pattern = r"^[!-~]+$",
            description = "Makes retries safe: 1 to 255 visible ASCII characters, such as a UUID.",
        ),
    ),
    responses(
        (
            status = 201,
            description = "The order, stored; or, for a replayed `Idempotency-Key`, the order it \
                made before.",
            body = Order,
            headers(
                ("Location" = String, description = "The order's URL."),
                (
                    "Idempotent-Replayed" = String,
                    description = "`true` when the order was made by an earlier request with \
                        the same key."
                ),
            ),
        ),
        (
            status = 400,
            description = "The body is not an order, or `Idempotency-Key` is malformed; `errors` \
                names the field.",
            body = Problem,
            content_type = "application/problem+json",
        ),
        (
            status = 409,
            description = "The `Idempotency-Key` was used for an order with another body.",
            body = Problem,
            content_type = "application/problem+json",
        ),
        (
            status = 413,
            description = "The body is over 16 KiB.",
            body = Problem,
            content_type = "application/problem+json",
        ),
        (
            status = 415,
            description = "The body is not `application/json`.",
            body = Problem,
            content_type = "application/problem+json",
        ),
    ),
)]
pub fn create(request: &Request) -> Response {
    let parsed = NewOrder::from_request(request)
        .and_then(|order| Ok((order, input::idempotency_key(request)?)));
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
        Ok(Created::Existing(existing))
            if existing.customer_id == order.customer_id && existing.amount == order.amount =>
        {
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
    response.set_header(
        "location",
        format!("{}/orders/{}", reply::prefix(request), order.id),
    );
    if replayed {
        response.set_header("idempotent-replayed", "true");
    }
    response
}

#[utoipa::path(
    get,
    path = "/orders/{id}",
    tag = "orders",
    summary = "Get an order",
    params(("id" = OrderId, Path, description = "The order's id.")),
    responses(
        (status = 200, description = "The order.", body = Order),
        (
            status = 400,
            description = "`id` is not a UUID.",
            body = Problem,
            content_type = "application/problem+json",
        ),
        (
            status = 404,
            description = "There is no such order.",
            body = Problem,
            content_type = "application/problem+json",
        ),
    ),
)]
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

#[utoipa::path(
    get,
    path = "/orders",
    tag = "orders",
    summary = "List orders",
    description = "Newest first, paged with `nextCursor`. A page is a snapshot, not a change feed.",
    params(ListQuery),
    responses(
        (status = 200, description = "One page of orders.", body = Page),
        (
            status = 400,
            description = "A parameter is malformed, unknown or repeated; `errors` names it.",
            body = Problem,
            content_type = "application/problem+json",
        ),
    ),
)]
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
