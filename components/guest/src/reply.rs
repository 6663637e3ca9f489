//! Responses: JSON bodies and RFC 9457 problems.

use contracts::Problem;
use serde::Serialize;
use spin_sdk::http::{Method, Request, Response};

/// The body of a component's `GET /health` when its database answers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `up`.
    #[schema(example = "up")]
    pub status: &'static str,
}

impl Health {
    pub const UP: Self = Self { status: "up" };
}

pub fn json(status: u16, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(bytes)
            .build(),
        Err(err) => problem(&Problem::new(
            500,
            format!("cannot serialize the response: {err}"),
        )),
    }
}

pub fn problem(problem: &Problem) -> Response {
    Response::builder()
        .status(problem.status)
        .header("content-type", contracts::problem::CONTENT_TYPE)
        .body(problem.to_json())
        .build()
}

/// 405 with the `Allow` header.
pub fn method_not_allowed(method: &Method, allow: &str) -> Response {
    let mut response = problem(&Problem::new(
        405,
        format!("{method} is not allowed here; allowed: {allow}"),
    ));
    response.set_header("allow", allow);
    response
}

/// 404 for a path the component has nothing at.
pub fn not_found(request: &Request) -> Response {
    problem(&Problem::new(
        404,
        format!("no resource at {}", request.path()),
    ))
}

/// The path prefix the host serves this component under (`X-Forwarded-Prefix`), for links.
/// Empty when absent or not a plain path.
pub fn prefix(request: &Request) -> &str {
    request
        .header("x-forwarded-prefix")
        .and_then(|value| value.as_str())
        .filter(|prefix| {
            prefix.starts_with('/')
                && prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b))
        })
        .map_or("", |prefix| prefix.trim_end_matches('/'))
}

/// The path split into segments, without a trailing slash: `/orders/1` → `["orders", "1"]`.
pub fn segments(request: &Request) -> Vec<&str> {
    request
        .path()
        .trim_end_matches('/')
        .split('/')
        .skip(1)
        .collect()
}

/// A store failure as a problem: 503 when the database is away, 500 otherwise. The cause goes
/// to the host's log, not to the client.
pub fn failed(service: &str, err: crate::rows::StoreError) -> Response {
    match err {
        crate::rows::StoreError::Unavailable(why) => {
            eprintln!("{service}: database unavailable: {why}");
            problem(&Problem::new(
                503,
                format!("the {service} database is unavailable; try again shortly"),
            ))
        }
        crate::rows::StoreError::Failed(why) => {
            eprintln!("{service}: {why}");
            problem(&Problem::new(500, "the request could not be processed"))
        }
    }
}
