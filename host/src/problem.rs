//! RFC 9457 problem responses the host sends itself: no route for a path, a body too large,
//! the database down, a component that failed. They use the platform's one problem type,
//! [`contracts::Problem`], as the components do for their own errors.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

pub use contracts::Problem;
use contracts::problem::CONTENT_TYPE;

/// A problem with `status` and `detail`, as a response.
pub fn response(status: StatusCode, detail: impl Into<String>) -> Response<Full<Bytes>> {
    into_response(&Problem::new(status.as_u16(), detail), None)
}

/// `problem` as a response, with one extension member (RFC 9457 §3.2) when given.
pub fn into_response(
    problem: &Problem,
    extension: Option<(&str, serde_json::Value)>,
) -> Response<Full<Bytes>> {
    let body = match extension {
        None => problem.to_json(),
        Some((name, value)) => {
            // A problem serializes to a JSON object of strings and numbers.
            let mut members = serde_json::to_value(problem).unwrap_or_default();
            if let Some(members) = members.as_object_mut() {
                members.insert(name.to_owned(), value);
            }
            members.to_string().into_bytes()
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn an_extension_member_sits_beside_the_standard_ones() {
        let problem = Problem::new(503, "not ready");
        let response = into_response(
            &problem,
            Some(("checks", serde_json::json!({ "broker": "down" }))),
        );
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(json["title"], "Service Unavailable");
        assert_eq!(json["detail"], "not ready");
        assert_eq!(json["checks"]["broker"], "down");
    }
}
