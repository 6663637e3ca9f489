//! RFC 9457 problem details (`application/problem+json`), the one shape every error response of
//! every service has. Each invalid input is listed in `errors` with the field at fault and where
//! it was (`body`, `query`, `header` or `path`), so a client can point at it.

use serde::{Deserialize, Serialize};

pub const CONTENT_TYPE: &str = "application/problem+json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    /// `about:blank`: the status says what kind of problem it is.
    #[serde(rename = "type")]
    pub kind: String,
    /// The status's standard reason phrase.
    pub title: String,
    /// The HTTP status, repeated.
    pub status: u16,
    /// What went wrong, for a person.
    pub detail: String,
    /// Each input at fault, when the request was refused for its input.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// One input at fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    /// The field, parameter or header name: `amount`, `limit`, `Idempotency-Key`.
    pub field: String,
    /// Where it was: `body`, `query`, `header` or `path`.
    #[serde(rename = "in")]
    pub location: Location,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Location {
    Body,
    Query,
    Header,
    Path,
}

impl Problem {
    /// A problem with the standard title for `status` and no listed fields.
    pub fn new(status: u16, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank".into(),
            title: title(status).into(),
            status,
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    /// A 400 for one input at fault; `detail` reads "amount: must be greater than 0".
    pub fn invalid(
        location: Location,
        field: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self::invalid_with_status(400, location, field, detail)
    }

    /// Like [`Problem::invalid`] with another status (409 for a conflicting idempotency key).
    pub fn invalid_with_status(
        status: u16,
        location: Location,
        field: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        let error = FieldError {
            field: field.into(),
            location,
            detail: detail.into(),
        };
        let mut problem = Self::new(status, format!("{}: {}", error.field, error.detail));
        problem.errors.push(error);
        problem
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Strings and numbers only: serialization cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

fn title(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_field_is_named_in_detail_and_in_errors() {
        let problem = Problem::invalid(Location::Body, "amount", "must be greater than 0");
        let json: serde_json::Value = serde_json::from_slice(&problem.to_json()).expect("json");
        assert_eq!(json["status"], 400);
        assert_eq!(json["title"], "Bad Request");
        assert_eq!(json["detail"], "amount: must be greater than 0");
        assert_eq!(json["errors"][0]["field"], "amount");
        assert_eq!(json["errors"][0]["in"], "body");
    }

    #[test]
    fn a_problem_without_fields_has_no_errors_member() {
        let json: serde_json::Value =
            serde_json::from_slice(&Problem::new(404, "no such order").to_json()).expect("json");
        assert!(json.get("errors").is_none());
        assert_eq!(json["type"], "about:blank");
    }
}
