//! A component's route table: method and path template to handler.
//!
//! The one table drives dispatch (a 404 problem for a path no entry matches, a 405 with `Allow`
//! for a method none takes) and names the matched entry to the host through
//! `platform:service/http-route`, which uses it as `http.route` in span names and metric
//! labels. So the routes a component serves and the routes its telemetry shows cannot drift.
//!
//! A template is a path of literal segments and `{name}` segments, each of which matches any
//! one segment: `/orders/{id}`. Entries are tried in order.

use spin_sdk::http::{Method, Request, Response};

use crate::bindings::platform::service::http_route;
use crate::reply;

/// What a handler is given: the request and the segments its template's `{name}`s matched, in
/// order.
pub type Handler = fn(&Request, &[&str]) -> Response;

/// One entry of a route table.
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub handler: Handler,
}

/// Calls the handler of the first entry matching the request's method and path.
pub fn dispatch(routes: &[Route], request: &Request) -> Response {
    let segments = reply::segments(request);
    let method = request.method();
    let mut allowed: Vec<String> = Vec::new();
    let mut path_matched = None;
    for route in routes {
        let Some(params) = capture(route.path, &segments) else {
            continue;
        };
        if route.method == *method {
            http_route::matched(route.path);
            return (route.handler)(request, &params);
        }
        path_matched.get_or_insert(route.path);
        allowed.push(route.method.to_string());
    }
    match path_matched {
        Some(template) => {
            http_route::matched(template);
            reply::method_not_allowed(method, &allowed.join(", "))
        }
        None => reply::not_found(request),
    }
}

/// The segments `template`'s `{name}`s match in `segments`, or `None` if it does not match.
fn capture<'a>(template: &str, segments: &[&'a str]) -> Option<Vec<&'a str>> {
    let wanted: Vec<&str> = template.trim_end_matches('/').split('/').skip(1).collect();
    if wanted.len() != segments.len() {
        return None;
    }
    let mut params = Vec::new();
    for (want, got) in wanted.iter().zip(segments) {
        if want.starts_with('{') && want.ends_with('}') {
            if got.is_empty() {
                return None;
            }
            params.push(*got);
        } else if want != got {
            return None;
        }
    }
    Some(params)
}

#[cfg(test)]
mod tests {
    use super::capture;

    #[test]
    fn a_template_captures_its_named_segments_in_order() {
        assert_eq!(capture("/orders/{id}", &["orders", "42"]), Some(vec!["42"]));
        assert_eq!(capture("/orders", &["orders"]), Some(vec![]));
        assert_eq!(capture("/health", &["health"]), Some(vec![]));
        assert_eq!(capture("/orders/{id}", &["orders"]), None);
        assert_eq!(capture("/orders/{id}", &["orders", ""]), None);
        assert_eq!(capture("/orders/{id}", &["invoices", "42"]), None);
    }
}
