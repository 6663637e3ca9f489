//! Responses: JSON bodies and RFC 9457 problems.

use contracts::Problem;
use serde::Serialize;
use spin_sdk::http::{Request, Response};

/// The path prefix the host serves this component under (`X-Forwarded-Prefix`), for links.
/// Empty when absent or not a plain path.
pub fn prefix(request: &Request) -> &str {
    request
        .header("x-forwarded-prefix")
        .and_then(|value| value.as_str())
        .filter(|prefix| {
            prefix.starts_with('/')
                && prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b))
        })
        .map_or("", |prefix| prefix.trim_end_matches('/'))
}

pub fn json(status: u16, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(bytes)
            .build(),
        Err(err) => problem(&Problem::new(500, format!("cannot serialize the response: {err}"))),
    }
}

pub fn problem(problem: &Problem) -> Response {
    Response::builder()
        .status(problem.status)
        .header("content-type", contracts::problem::CONTENT_TYPE)
        .body(problem.to_json())
        .build()
}
