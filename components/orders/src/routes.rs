//! Method and path to handler. The host strips the route prefix, so paths here start at the
//! service's own root: `/orders`, `/orders/{id}`, `/health`.

use contracts::Problem;
use spin_sdk::http::{Method, Request, Response};

use crate::{api, reply};

pub fn dispatch(request: &Request) -> Response {
    let path = request.path().trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let method = request.method();
    match (segments.as_slice(), method) {
        (["health"], Method::Get) => api::health(),
        (["orders"], Method::Post) => api::create(request),
        (["orders"], Method::Get) => api::list(request),
        (["orders", id], Method::Get) => api::get(id),
        (["health"], _) => not_allowed(method, "GET"),
        (["orders"], _) => not_allowed(method, "GET, POST"),
        (["orders", _], _) => not_allowed(method, "GET"),
        _ => reply::problem(&Problem::new(404, format!("no resource at {}", request.path()))),
    }
}

fn not_allowed(method: &Method, allow: &str) -> Response {
    let mut response =
        reply::problem(&Problem::new(405, format!("{method} is not allowed here; allowed: {allow}")));
    response.set_header("allow", allow);
    response
}
