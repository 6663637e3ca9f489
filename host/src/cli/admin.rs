//! `host admin`: the admin API of a running host from the command line, with the token from
//! `HOST_ADMIN_TOKEN`. Each call is one request; a refusal (an RFC 9457 problem) is an error
//! carrying the problem's status, title and detail.

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, header};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

use super::client;

/// A running host's admin API.
#[derive(Debug, Clone)]
pub struct Admin {
    /// `http://host:port`, without a trailing `/`.
    base: String,
    token: Option<String>,
}

impl Admin {
    /// The admin API at `url` (such as `http://127.0.0.1:9000`), called with `token` when given.
    pub fn new(url: &str, token: Option<String>) -> Self {
        Self {
            base: url.trim_end_matches('/').to_owned(),
            token: token.filter(|token| !token.is_empty()),
        }
    }

    /// `GET /components`: every component with the code serving it.
    pub async fn components(&self) -> anyhow::Result<Value> {
        self.call(Method::GET, "/components", Bytes::new()).await
    }

    /// `GET /components/{name}`.
    pub async fn component(&self, name: &str) -> anyhow::Result<Value> {
        self.call(
            Method::GET,
            &format!("/components/{}", segment(name)),
            Bytes::new(),
        )
        .await
    }

    /// `PUT /components/{name}/wasm`: `wasm` replaces the component's code once it is checked
    /// and its migrations ran; answers with the code now serving.
    pub async fn swap(&self, name: &str, wasm: Bytes) -> anyhow::Result<Value> {
        self.call(
            Method::PUT,
            &format!("/components/{}/wasm", segment(name)),
            wasm,
        )
        .await
    }

    /// `POST /components/{name}/reload`: the component's `.wasm` file read again.
    pub async fn reload(&self, name: &str) -> anyhow::Result<Value> {
        let path = format!("/components/{}/reload", segment(name));
        self.call(Method::POST, &path, Bytes::new()).await
    }

    /// `GET /components/{name}/dead-letters`: a subscription's dead letters, left in place.
    pub async fn dead_letters(
        &self,
        name: &str,
        topic: Option<&str>,
        limit: Option<usize>,
    ) -> anyhow::Result<Value> {
        let limit = limit.map(|limit| limit.to_string());
        let query = query(&[("topic", topic), ("limit", limit.as_deref())]);
        let path = format!("/components/{}/dead-letters{query}", segment(name));
        self.call(Method::GET, &path, Bytes::new()).await
    }

    /// `POST /components/{name}/dead-letters/replay`: one dead letter (`id`), or all, back on
    /// the subscription's queue.
    pub async fn replay(
        &self,
        name: &str,
        topic: Option<&str>,
        id: Option<&str>,
    ) -> anyhow::Result<Value> {
        let query = query(&[("topic", topic), ("id", id)]);
        let path = format!("/components/{}/dead-letters/replay{query}", segment(name));
        self.call(Method::POST, &path, Bytes::new()).await
    }

    /// `GET /components/{name}/outbox/unsendable`: outbox rows the relay set aside, and why.
    pub async fn unsendable(&self, name: &str, limit: Option<usize>) -> anyhow::Result<Value> {
        let limit = limit.map(|limit| limit.to_string());
        let query = query(&[("limit", limit.as_deref())]);
        let path = format!("/components/{}/outbox/unsendable{query}", segment(name));
        self.call(Method::GET, &path, Bytes::new()).await
    }

    async fn call(&self, method: Method, path: &str, body: Bytes) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut headers = vec![(header::ACCEPT, HeaderValue::from_static("application/json"))];
        if let Some(token) = &self.token {
            let value = HeaderValue::try_from(format!("Bearer {token}"))
                .context("HOST_ADMIN_TOKEN holds characters a header cannot carry")?;
            headers.push((header::AUTHORIZATION, value));
        }
        if !body.is_empty() {
            headers.push((
                HeaderName::from_static("content-type"),
                HeaderValue::from_static("application/wasm"),
            ));
        }
        let answer = client::send(method.clone(), &url, &headers, body)
            .await
            .with_context(|| format!("{method} {url}"))?;
        let json: Option<Value> = if answer.is_json() {
            serde_json::from_slice(&answer.body).ok()
        } else {
            None
        };
        if answer.status.is_success() {
            return json.with_context(|| {
                format!("{method} {url} answered {} without JSON", answer.status)
            });
        }
        let why = match &json {
            Some(problem) => describe_problem(problem),
            None => String::from_utf8_lossy(&answer.body).trim().to_owned(),
        };
        let hint = if answer.status == http::StatusCode::UNAUTHORIZED && self.token.is_none() {
            " (set HOST_ADMIN_TOKEN to the host's admin token)"
        } else {
            ""
        };
        bail!("{method} {url}: {}: {why}{hint}", answer.status)
    }
}

/// A problem's title and detail, in one line.
fn describe_problem(problem: &Value) -> String {
    let text = |key: &str| problem.get(key).and_then(Value::as_str).unwrap_or_default();
    match (text("title"), text("detail")) {
        ("", "") => problem.to_string(),
        (title, "") => title.to_owned(),
        ("", detail) => detail.to_owned(),
        (title, detail) => format!("{title}: {detail}"),
    }
}

/// `name` as one path segment.
fn segment(name: &str) -> String {
    utf8_percent_encode(name, NON_ALPHANUMERIC).to_string()
}

/// `?a=1&b=2` of the parameters given, or nothing.
fn query(parameters: &[(&str, Option<&str>)]) -> String {
    let pairs: Vec<String> = parameters
        .iter()
        .filter_map(|(key, value)| {
            let value = (*value)?;
            Some(format!(
                "{key}={}",
                utf8_percent_encode(value, NON_ALPHANUMERIC)
            ))
        })
        .collect();
    if pairs.is_empty() {
        String::new()
    } else {
        format!("?{}", pairs.join("&"))
    }
}

/// The components list (`GET /components`) as a table: one row each.
pub fn components_table(list: &Value) -> String {
    let empty = Vec::new();
    let components = list
        .get("components")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let mut rows = vec![[
        "NAME".to_owned(),
        "ROUTE".to_owned(),
        "VERSION".to_owned(),
        "SHA256".to_owned(),
        "LOADED".to_owned(),
        "IN FLIGHT".to_owned(),
        "LAST FAILED LOAD".to_owned(),
    ]];
    for component in components {
        let text = |value: Option<&Value>| match value {
            Some(Value::String(text)) => text.clone(),
            Some(Value::Null) | None => "-".to_owned(),
            Some(other) => other.to_string(),
        };
        let code = component.get("code");
        let sha256 = text(code.and_then(|code| code.get("sha256")));
        let failed = component
            .get("last_failed_load")
            .filter(|failed| !failed.is_null())
            .map_or("-".to_owned(), |failed| {
                text(failed.get("reason")).chars().take(60).collect()
            });
        rows.push([
            text(component.get("name")),
            text(component.get("route")),
            text(code.and_then(|code| code.get("version"))),
            sha256.chars().take(12).collect(),
            text(code.and_then(|code| code.get("loaded_at"))),
            text(component.get("in_flight")),
            failed,
        ]);
    }
    let mut widths = [0usize; 7];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut table = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        table.push_str(cells.join("  ").trim_end());
        table.push('\n');
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_parameters_are_encoded_and_absent_ones_left_out() {
        assert_eq!(segment("orders"), "orders");
        assert_eq!(segment("a/b"), "a%2Fb");
        assert_eq!(query(&[("topic", None), ("limit", None)]), "");
        assert_eq!(
            query(&[("topic", Some("orders.created")), ("id", Some("a b"))]),
            "?topic=orders%2Ecreated&id=a%20b"
        );
    }

    #[test]
    fn the_components_table_has_a_row_each_with_the_failed_load_cut_short() {
        let list = serde_json::json!({ "components": [
            { "name": "orders", "route": "/orders", "in_flight": 2,
              "code": { "sha256": "0123456789abcdef0123", "version": 3,
                        "loaded_at": "2026-12-03T10:00:00Z" },
              "last_failed_load": null },
            { "name": "invoices", "route": "/invoices", "in_flight": 0,
              "code": { "sha256": "fedcba9876543210", "version": 1,
                        "loaded_at": "2026-12-03T09:00:00Z" },
              "last_failed_load": { "reason": "x".repeat(100) } },
        ]});
        let table = components_table(&list);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("NAME"), "{table}");
        assert!(
            lines[1].contains("orders") && lines[1].contains("0123456789ab "),
            "{table}"
        );
        assert!(lines[2].ends_with(&"x".repeat(60)), "{table}");
    }

    #[test]
    fn a_problem_reads_as_its_title_and_detail() {
        let problem = serde_json::json!({ "title": "Not Found", "detail": "no component `x`" });
        assert_eq!(describe_problem(&problem), "Not Found: no component `x`");
    }
}
