//! Method and path to handler. Paths start at the service's own root: `/invoices`,
//! `/invoices/{id}`, `/health`.

use service_guest::reply;
use spin_sdk::http::{Method, Request, Response};

use crate::api;

pub fn dispatch(request: &Request) -> Response {
    let method = request.method();
    match (reply::segments(request).as_slice(), method) {
        (["health"], Method::Get) => api::health(),
        (["invoices"], Method::Get) => api::list(request),
        (["invoices", id], Method::Get) => api::get(id),
        (["health"] | ["invoices"] | ["invoices", _], _) => reply::method_not_allowed(method, "GET"),
        _ => reply::not_found(request),
    }
}
