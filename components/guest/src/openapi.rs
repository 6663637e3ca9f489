//! A component's OpenAPI document, served at `GET /openapi.json`.
//!
//! The document comes from the component's own types (utoipa derives on the request, query and
//! response types, and `#[utoipa::path]` on each handler); this module adds what every
//! operation of every component shares, and the `servers` entry the request came through:
//!
//! - `servers` is the prefix the component is served under (`X-Forwarded-Prefix`, set by the
//!   host), so "Try it out" in Swagger UI and generated clients call the right paths however
//!   the request arrived: straight at the host, or through a gateway route;
//! - every operation may answer 500 (the component failed or trapped), 503 with `Retry-After`
//!   (its database is away, or it is at its limit of requests) and 504 (it ran out of time):
//!   the host answers these for any component, as `application/problem+json`;
//! - every operation that takes a body may answer 413 and 408: the host refuses bodies over its
//!   limit, or that do not arrive in time, before the component runs.
//!
//! The document must describe exactly the routes the component serves: [`serve`] compares it
//! with the route table and answers 500, naming the difference, when they disagree, so a route
//! added without its `#[utoipa::path]` (or the reverse) fails every test that reads the document.

use std::collections::BTreeSet;

use contracts::Problem;
use spin_sdk::http::{Request, Response};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder, Server};
use utoipa::{PartialSchema, ToSchema};

use crate::reply;
use crate::router::Route;

/// The media type of every error response.
pub const PROBLEM: &str = contracts::problem::CONTENT_TYPE;

/// Where the document itself is served; not an operation of the API.
pub const PATH: &str = "/openapi.json";

/// `GET /openapi.json`: `document` with the shared responses and the request's server, once it
/// is checked against `routes`.
pub fn serve(mut document: OpenApi, routes: &[Route], request: &Request) -> Response {
    let served: BTreeSet<String> = routes
        .iter()
        .filter(|route| route.path != PATH)
        .map(|route| format!("{} {}", route.method, route.path))
        .collect();
    let documented = operations(&document);
    if served != documented {
        let undocumented: Vec<&String> = served.difference(&documented).collect();
        let unserved: Vec<&String> = documented.difference(&served).collect();
        let detail = format!(
            "the API document and the route table disagree: undocumented {undocumented:?}, \
             documented but not served {unserved:?}"
        );
        eprintln!("{detail}");
        return reply::problem(&Problem::new(500, detail));
    }
    let prefix = reply::prefix(request);
    document.servers = Some(vec![Server::new(if prefix.is_empty() {
        "/"
    } else {
        prefix
    })]);
    add_shared_responses(&mut document);
    reply::json(200, &document)
}

/// Adds the responses the host may give for any operation, and the `Problem` schema they use.
pub fn add_shared_responses(document: &mut OpenApi) {
    let components = document.components.get_or_insert_with(Default::default);
    components
        .schemas
        .entry(Problem::name().into_owned())
        .or_insert_with(Problem::schema);
    for (name, schema) in problem_schemas() {
        components.schemas.entry(name).or_insert(schema);
    }
    for item in document.paths.paths.values_mut() {
        let operations = [
            item.get.as_mut(),
            item.post.as_mut(),
            item.put.as_mut(),
            item.patch.as_mut(),
            item.delete.as_mut(),
        ];
        for operation in operations.into_iter().flatten() {
            let mut shared = vec![
                ("500", "The component failed, or trapped."),
                (
                    "503",
                    "The database is away or the service is at its limit of requests; retry \
                     after `Retry-After`.",
                ),
                (
                    "504",
                    "The request ran out of time: its unit of work was rolled back, or, when \
                     its commit got no answer, its outcome is unknown.",
                ),
            ];
            if operation.request_body.is_some() {
                shared.push(("413", "The body is over the size limit."));
                shared.push(("408", "The body did not arrive in time."));
            }
            for (status, description) in shared {
                let response = operation.responses.responses.entry(status.to_owned());
                let RefOr::T(response) = response.or_insert_with(|| problem_response(description))
                else {
                    continue;
                };
                if status == "503" {
                    let seconds = ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(0))
                        .build();
                    let header = HeaderBuilder::new()
                        .schema(seconds)
                        .description(Some("Seconds to wait before retrying."))
                        .build();
                    response
                        .headers
                        .entry("Retry-After".into())
                        .or_insert(header);
                }
            }
        }
    }
}

/// The document's operations, as `GET /orders/{id}`.
fn operations(document: &OpenApi) -> BTreeSet<String> {
    let mut operations = BTreeSet::new();
    for (path, item) in &document.paths.paths {
        let methods = [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PUT", &item.put),
            ("PATCH", &item.patch),
            ("DELETE", &item.delete),
        ];
        for (method, operation) in methods {
            if operation.is_some() {
                operations.insert(format!("{method} {path}"));
            }
        }
    }
    operations
}

/// A response whose body is a problem, for the `responses(...)` of a handler's path.
pub fn problem_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(Problem::name())))
                .build(),
        )
        .into()
}

/// The schemas `Problem` refers to.
fn problem_schemas() -> Vec<(String, RefOr<Schema>)> {
    let mut schemas = Vec::new();
    <Problem as ToSchema>::schemas(&mut schemas);
    schemas
}
