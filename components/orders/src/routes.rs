//! Method and path to handler. The host strips the route prefix, so paths here start at the
//! service's own root: `/orders`, `/orders/{id}`, `/health`.

use service_guest::reply;
use spin_sdk::http::{Method, Request, Response};

use crate::api;

pub fn dispatch(request: &Request) -> Response {
    let method = request.method();
    match (reply::segments(request).as_slice(), method) {
        (["health"], Method::Get) => api::health(),
        (["orders"], Method::Post) => api::create(request),
        (["orders"], Method::Get) => api::list(request),
        (["orders", id], Method::Get) => api::get(id),
        (["health"], _) => reply::method_not_allowed(method, "GET"),
        (["orders"], _) => reply::method_not_allowed(method, "GET, POST"),
        (["orders", _], _) => reply::method_not_allowed(method, "GET"),
        _ => reply::not_found(request),
    }
}
