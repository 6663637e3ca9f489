//! The HTTP trigger's adapter to [`UnitOfWork`]: calls a component's
//! `wasi:http/incoming-handler` for one request, and answers from the unit of work's [`Verdict`].
//!
//! 1. A fresh store and instance from the service's current code (pooling allocator).
//! 2. `handle` runs while the response body is collected, up to `max_response_bytes`. Both are
//!    driven together because the guest may block writing a body nobody reads yet; a trap ends
//!    both at once, whether or not the guest had set a response.
//! 3. The unit of work ends: commit when the guest answered below 500 and did not trap,
//!    rollback otherwise. Only then does the client see the response, so a 201 means durable.
//!
//! The guest and its statements are bounded by `request_timeout`, the commit after it by its
//! own timeout (see [`crate::capabilities::sql::postgres`]). Guest code yields its worker at epoch
//! ticks and traps once the deadline has passed, so the timeout fires on time even for a guest
//! that never returns. A failure the database caused (an outage, a deadlock) is answered 503
//! with `Retry-After`, whatever the component made of it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tracing::Instrument;
use wasmtime::Store;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use crate::capabilities::memory::{Held, HostMemory};
use crate::config::HttpConfig;
use crate::engine::Runtime;
use crate::problem;
use crate::service::Service;
use crate::service::unit_of_work::{Call, Ended, GuestFailure, UnitOfWork, Verdict};
use crate::state::StoreState;

/// What the client is told to wait before retrying after a 503.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Runs the request as one unit of work: the response, and the route the component named.
pub async fn call(
    runtime: &Runtime,
    service: &Service,
    request: Request<Full<Bytes>>,
    config: &HttpConfig,
) -> (Response<Full<Bytes>>, Option<Arc<str>>) {
    let span = tracing::info_span!(
        "component.call",
        component = %service.name(),
        http.request.method = %request.method(),
        url.path = crate::telemetry::truncated(request.uri().path(), 2048),
        http.response.status_code = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    let started = Instant::now();
    let handle = Handle {
        service,
        request,
        config,
    };
    let ended = UnitOfWork::new(service, "http", config.request_timeout)
        .run(runtime, handle)
        .instrument(span.clone())
        .await;
    let route = ended.route.clone();
    let response = respond(service, ended);
    span.record("http.response.status_code", response.status().as_u16());
    tracing::debug!(
        parent: &span,
        elapsed_us = started.elapsed().as_micros() as u64,
        "request done"
    );
    (response, route)
}

/// The call into `wasi:http/incoming-handler.handle` for one request.
struct Handle<'a> {
    service: &'a Service,
    request: Request<Full<Bytes>>,
    config: &'a HttpConfig,
}

impl Call for Handle<'_> {
    type Answer = Response<Full<Bytes>>;

    async fn run(self, store: &mut Store<StoreState>) -> Result<Self::Answer, GuestFailure> {
        store
            .data_mut()
            .capabilities
            .route
            .serving(self.request.uri().path());
        run_guest(store, self.service, self.request, self.config).await
    }

    fn commits(response: &Self::Answer) -> bool {
        !response.status().is_server_error()
    }
}

/// The response the client gets, from how the unit of work ended and what the guest answered.
fn respond(service: &Service, ended: Ended<Response<Full<Bytes>>>) -> Response<Full<Bytes>> {
    let name = service.name();
    match (ended.verdict, ended.answer) {
        // The component's own answer: a success, or a 4xx or 5xx it chose (rolled back).
        (Verdict::Committed | Verdict::Empty | Verdict::RolledBack, Some(response)) => response,
        // The component declined (4xx) after a statement failed: the rollback is what it meant.
        (
            Verdict::Failed {
                at_commit: false, ..
            },
            Some(response),
        ) if response.status().is_client_error() => response,
        (Verdict::TimedOut, _) => problem::response(
            StatusCode::GATEWAY_TIMEOUT,
            format!("the {name} service did not answer in time; its work was rolled back"),
        ),
        (Verdict::OutcomeUnknown(_), _) => problem::response(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "the {name} service could not confirm that its work was saved; look before \
                 retrying, or retry with the same Idempotency-Key"
            ),
        ),
        (Verdict::Outage(_), _) => unavailable(format!(
            "the {name} database is unavailable; try again shortly"
        )),
        // A serialization failure or deadlock, or the component's memory held by its other
        // units of work: the same request may well succeed in a moment.
        (Verdict::Conflict(_), _) => unavailable(format!(
            "the {name} service is busy with other work that conflicts or holds its memory; try \
             again shortly"
        )),
        (Verdict::Busy(why), _) => {
            unavailable(format!("the {name} service {why}; try again shortly"))
        }
        (Verdict::Trapped(_), _) => problem::response(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the {name} service failed while handling the request"),
        ),
        (
            Verdict::Committed
            | Verdict::Empty
            | Verdict::RolledBack
            | Verdict::Duplicate
            | Verdict::Failed { .. }
            | Verdict::Refused(_),
            _,
        ) => problem::response(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the {name} service could not save its work"),
        ),
    }
}

/// 503 with `Retry-After`.
pub fn unavailable(detail: String) -> Response<Full<Bytes>> {
    let mut response = problem::response(StatusCode::SERVICE_UNAVAILABLE, detail);
    response
        .headers_mut()
        .insert(http::header::RETRY_AFTER, RETRY_AFTER.as_secs().into());
    response
}

/// Instantiates the component and runs its handler; its response, or why there is none.
async fn run_guest(
    store: &mut Store<StoreState>,
    service: &Service,
    request: Request<Full<Bytes>>,
    config: &HttpConfig,
) -> Result<Response<Full<Bytes>>, GuestFailure> {
    let code = service.code();
    let request = request.map(|body| {
        body.map_err(|never: Infallible| -> wasmtime_wasi_http::Error { match never {} })
    });
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let (incoming, outparam) = {
        let mut http = store.data_mut().http();
        let incoming = http.new_incoming_request(Scheme::Http, request);
        let outparam = http.new_response_outparam(sender);
        match (incoming, outparam) {
            (Ok(incoming), Ok(outparam)) => (incoming, outparam),
            (Err(err), _) | (_, Err(err)) => {
                return Err(GuestFailure::Trapped(format!(
                    "cannot pass the request: {err}"
                )));
            }
        }
    };
    let proxy = code
        .proxy
        .instantiate_async(&mut *store)
        .await
        .map_err(|err| GuestFailure::of("instantiation failed", &err))?;

    // Set once `handle` has returned: a response not set by then never will be.
    let (returned, handle_returned) = tokio::sync::oneshot::channel::<()>();
    let handle = async {
        let handled = proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut *store, incoming, outparam)
            .await;
        drop(returned);
        handled
    };
    let collect = async {
        let mut receiver = receiver;
        let response = tokio::select! {
            biased;
            response = &mut receiver => response.ok(),
            _ = handle_returned => receiver.try_recv().ok(),
        };
        let response = response.ok_or("the component returned without setting a response")?;
        let response =
            response.map_err(|code| format!("the component answered with error {code:?}"))?;
        let (parts, body) = response.into_parts();
        let body = collect_body(body, config.max_response_bytes, service.host_memory()).await?;
        Ok::<_, String>(Response::from_parts(parts, Full::new(body)))
    };
    tokio::pin!(handle, collect);
    // Both run together; a trap ends the call at once, without waiting for a body that the
    // trapped guest will never finish.
    let mut handled = false;
    let collected = loop {
        tokio::select! {
            result = &mut handle, if !handled => {
                result.map_err(|trap| GuestFailure::of("the handler trapped", &trap))?;
                handled = true;
            }
            collected = &mut collect => break collected,
        }
    };
    if !handled {
        handle
            .await
            .map_err(|trap| GuestFailure::of("the handler trapped", &trap))?;
    }
    collected.map_err(GuestFailure::Trapped)
}

/// The component's response body, up to `max` bytes, each chunk reserved from the component's
/// share of host memory while it is collected.
async fn collect_body<B>(body: B, max: usize, memory: &HostMemory) -> Result<Bytes, String>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let mut body = std::pin::pin!(body);
    let (mut chunks, mut held, mut total) = (Vec::new(), Held::default(), 0usize);
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|err| format!("cannot read the component's response body: {err}"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len();
        if total > max {
            return Err(format!(
                "the component's response body is over {max} bytes (http.max_response_bytes)"
            ));
        }
        held.merge(
            memory
                .reserve(data.len())
                .map_err(|spent| spent.to_string())?,
        );
        chunks.push(data);
    }
    Ok(match chunks.len() {
        1 => chunks.pop().unwrap_or_default(),
        _ => chunks.concat().into(),
    })
}
