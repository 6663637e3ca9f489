//! A component's OpenAPI document as a contract: every response a test gets is checked against
//! the operation it came from (its status documented, its media type documented, its body valid
//! against the documented schema, its documented `Location` present), and at the end every
//! documented operation must have been exercised, success and error alike.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// One response as received.
pub struct Received {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Received {
    pub async fn of(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.expect("body").to_vec();
        Self {
            status,
            headers,
            body,
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

pub struct Contract {
    pub document: Value,
    /// Per documented operation (`GET /orders/{id}`), the statuses seen.
    seen: BTreeMap<String, BTreeSet<u16>>,
}

impl Contract {
    pub fn new(document: Value) -> Self {
        Self {
            document,
            seen: BTreeMap::new(),
        }
    }

    /// Checks `received` against the documented response of `method` `template` for its status.
    pub fn check(&mut self, method: &str, template: &str, received: &Received) {
        let operation = &self.document["paths"][template][method.to_ascii_lowercase()];
        assert!(
            operation.is_object(),
            "{method} {template} is not a documented operation"
        );
        let at = format!("{method} {template} → {}", received.status);
        let responses = &operation["responses"];
        let documented = &responses[received.status.to_string()];
        let documented_statuses: Vec<&String> = responses
            .as_object()
            .map(|r| r.keys().collect())
            .unwrap_or_default();
        assert!(
            documented.is_object(),
            "{at}: the status is not documented (documented: {documented_statuses:?}); body {}",
            String::from_utf8_lossy(&received.body)
        );
        for (name, _) in documented["headers"].as_object().into_iter().flatten() {
            if name.eq_ignore_ascii_case("location") {
                assert!(
                    received.headers.contains_key("location"),
                    "{at}: the documented Location is missing"
                );
            }
        }
        match documented["content"].as_object() {
            Some(content) if !content.is_empty() => {
                let media = received
                    .headers
                    .get("content-type")
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.split(';').next())
                    .map(str::trim)
                    .unwrap_or_default();
                let Some(described) = content.get(media) else {
                    panic!(
                        "{at}: answered {media:?}, documented {:?}",
                        content.keys().collect::<Vec<_>>()
                    );
                };
                let body: Value = serde_json::from_slice(&received.body).unwrap_or_else(|err| {
                    panic!(
                        "{at}: the body is not JSON ({err}): {}",
                        String::from_utf8_lossy(&received.body)
                    )
                });
                self.validate(&at, &described["schema"], &body);
            }
            _ => assert!(
                received.body.is_empty(),
                "{at}: a body where none is documented"
            ),
        }
        self.seen
            .entry(format!("{method} {template}"))
            .or_default()
            .insert(received.status);
    }

    /// Validates `value` against `schema`, whose `$ref`s point into the document.
    fn validate(&self, at: &str, schema: &Value, value: &Value) {
        let mut schema = schema.clone();
        let Some(object) = schema.as_object_mut() else {
            panic!("{at}: no schema object")
        };
        object.insert("components".into(), self.document["components"].clone());
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&schema)
            .unwrap_or_else(|err| panic!("{at}: the documented schema does not compile: {err}"));
        let errors: Vec<String> = validator
            .iter_errors(value)
            .map(|err| format!("{} at {}", err, err.instance_path))
            .collect();
        assert!(
            errors.is_empty(),
            "{at}: the body does not match the documented schema: {errors:?}\nbody: {value}"
        );
    }

    /// Every documented operation was exercised: a success, and an error when it documents
    /// errors of its own (4xx).
    pub fn assert_every_operation_exercised(&self) {
        let mut missing = Vec::new();
        for (path, item) in self.document["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("path item") {
                let name = format!("{} {path}", method.to_ascii_uppercase());
                let seen = self.seen.get(&name).cloned().unwrap_or_default();
                if !seen.iter().any(|status| (200..300).contains(status)) {
                    missing.push(format!("{name}: no success"));
                }
                let documents_client_errors =
                    operation["responses"].as_object().is_some_and(|responses| {
                        responses
                            .keys()
                            .any(|status| status.starts_with('4') && status != "413")
                    });
                if documents_client_errors && !seen.iter().any(|status| (400..500).contains(status))
                {
                    missing.push(format!("{name}: no client error"));
                }
            }
        }
        assert!(missing.is_empty(), "operations not exercised: {missing:?}");
    }
}
