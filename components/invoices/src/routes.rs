//! The route table: method and path template to handler. Paths start at the service's own
//! root. The table also names each request's route to the host for its spans and metrics (see
//! `service_guest::router`).

use service_guest::router::{self, Route};
use spin_sdk::http::{Method, Request, Response};

use crate::{api, docs};

const ROUTES: &[Route] = &[
    Route {
        method: Method::Get,
        path: "/health",
        handler: |_, _| api::health(),
    },
    Route {
        method: Method::Get,
        path: "/openapi.json",
        handler: |request, _| docs::serve(ROUTES, request),
    },
    Route {
        method: Method::Get,
        path: "/invoices",
        handler: |request, _| api::list(request),
    },
    Route {
        method: Method::Get,
        path: "/invoices/{id}",
        handler: |_, params| api::get(params.first().copied().unwrap_or_default()),
    },
];

pub fn dispatch(request: &Request) -> Response {
    router::dispatch(ROUTES, request)
}
