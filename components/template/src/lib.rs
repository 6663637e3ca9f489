//! A new service's starting point: copy this crate, rename it, and replace `notes` with your own
//! resource (the README's "Add a third service" walks through it).
//!
//! It has what every service here has, in one file:
//! - a route table ([`ROUTES`]) that dispatches and names each route to the host;
//! - handlers that parse input into typed values, refusing bad input with a problem naming the
//!   field, and answer JSON;
//! - SQL through `platform:service/sql`, inside the unit of work the host opens per request;
//! - an OpenAPI document from the same types, at `GET /openapi.json` (the host serves Swagger
//!   UI for it at `<route>/docs`);
//! - `GET /health`.
//!
//! To publish events, add the topic to `publishes` in the manifest and call
//! `service_guest::events::publish`; to receive them, list topics in `subscriptions` and export
//! a handler with `service_guest::export!` (see `components/orders`).

use contracts::{Location, Problem, Timestamp};
use service_guest::openapi;
use service_guest::reply::{self, Health};
use service_guest::router::Route;
use service_guest::rows::{self, BadColumn, StoreError};
use service_guest::sql::{self, Value};
use spin_sdk::http::{Method, Request, Response};
use utoipa::OpenApi;

/// The `wasi:http/incoming-handler` export; its generated glue is `unsafe`.
#[allow(unsafe_code)]
mod export {
    #[spin_sdk::http_component]
    fn handle(request: spin_sdk::http::Request) -> spin_sdk::http::Response {
        service_guest::router::dispatch(crate::ROUTES, &request)
    }
}

/// The service's name, in what it logs.
const SERVICE: &str = "template";

/// Method and path template to handler; paths start at the service's own root (the host strips
/// its route).
const ROUTES: &[Route] = &[
    Route {
        method: Method::Get,
        path: "/health",
        handler: |_, _| health(),
    },
    Route {
        method: Method::Get,
        path: "/openapi.json",
        handler: |request, _| openapi::serve(Document::openapi(), ROUTES, request),
    },
    Route {
        method: Method::Post,
        path: "/notes",
        handler: |request, _| create(request),
    },
    Route {
        method: Method::Get,
        path: "/notes/{id}",
        handler: |_, params| get(params.first().copied().unwrap_or_default()),
    },
];

#[derive(OpenApi)]
#[openapi(
    info(title = "Template", description = "Notes: a service's starting point."),
    paths(create, get, health)
)]
struct Document;

/// A note as the API shows it.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct Note {
    id: uuid::Uuid,
    text: String,
    created_at: Timestamp,
}

/// A `POST /notes` body.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewNote {
    /// 1 to 1000 characters.
    #[schema(min_length = 1, max_length = 1000)]
    text: String,
}

#[utoipa::path(
    post,
    path = "/notes",
    request_body(content = NewNote, content_type = "application/json"),
    responses(
        (
            status = 201,
            description = "The note, stored.",
            body = Note,
            headers(("Location" = String, description = "The note's URL.")),
        ),
        (
            status = 400,
            description = "The body is not a note; `errors` names the field.",
            body = Problem,
            content_type = "application/problem+json",
        ),
    ),
)]
fn create(request: &Request) -> Response {
    let note: NewNote = match serde_json::from_slice(request.body()) {
        Ok(note) => note,
        Err(err) => {
            return reply::problem(&Problem::invalid(Location::Body, "text", err.to_string()));
        }
    };
    let length = note.text.chars().count();
    if !(1..=1000).contains(&length) {
        return reply::problem(&Problem::invalid(
            Location::Body,
            "text",
            "must be 1 to 1000 characters",
        ));
    }
    let id = uuid::Uuid::now_v7();
    let inserted = sql::query(
        "INSERT INTO notes (id, text) VALUES ($1, $2) RETURNING id, text, created_at",
        &[Value::Uuid(id.to_string()), Value::Text(note.text)],
    );
    match inserted
        .map_err(StoreError::from)
        .and_then(|rows| first_note(rows.rows))
    {
        Ok(Some(note)) => {
            let mut response = reply::json(201, &note);
            response.set_header(
                "location",
                format!("{}/notes/{}", reply::prefix(request), note.id),
            );
            response
        }
        Ok(None) => reply::failed(
            SERVICE,
            StoreError::Failed("the insert returned no row".into()),
        ),
        Err(err) => reply::failed(SERVICE, err),
    }
}

#[utoipa::path(
    get,
    path = "/notes/{id}",
    params(("id" = uuid::Uuid, Path, description = "The note's id.")),
    responses(
        (status = 200, description = "The note.", body = Note),
        (
            status = 400,
            description = "`id` is not a UUID.",
            body = Problem,
            content_type = "application/problem+json",
        ),
        (
            status = 404,
            description = "There is no such note.",
            body = Problem,
            content_type = "application/problem+json",
        ),
    ),
)]
fn get(id: &str) -> Response {
    let Ok(id) = uuid::Uuid::try_parse(id) else {
        return reply::problem(&Problem::invalid(Location::Path, "id", "must be a UUID"));
    };
    let found = sql::query(
        "SELECT id, text, created_at FROM notes WHERE id = $1",
        &[Value::Uuid(id.to_string())],
    );
    match found
        .map_err(StoreError::from)
        .and_then(|rows| first_note(rows.rows))
    {
        Ok(Some(note)) => reply::json(200, &note),
        Ok(None) => reply::problem(&Problem::new(404, format!("no note {id}"))),
        Err(err) => reply::failed(SERVICE, err),
    }
}

#[utoipa::path(
    get,
    path = "/health",
    responses((status = 200, description = "The database answers.", body = Health)),
)]
fn health() -> Response {
    match sql::query("SELECT 1", &[]) {
        Ok(_) => reply::json(200, &Health::UP),
        Err(err) => reply::failed(SERVICE, err.into()),
    }
}

/// The first row as a note.
fn first_note(rows: Vec<Vec<Value>>) -> Result<Option<Note>, StoreError> {
    let Some(row) = rows.into_iter().next() else {
        return Ok(None);
    };
    let read = || -> Result<Note, BadColumn> {
        let [id, text, created_at] = rows::columns(row)?;
        Ok(Note {
            id: rows::id(id, "id")?,
            text: rows::text(text, "text")?,
            created_at: rows::timestamp(created_at, "created_at")?,
        })
    };
    Ok(Some(read()?))
}
