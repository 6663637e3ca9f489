//! Calls a component's `wasi:http/incoming-handler` for one request, as one unit of work.
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
//! that never returns. A failure the database caused (an outage, a
//! deadlock) is answered 503 with `Retry-After`, whatever the component made of it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tracing::Instrument;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use crate::capabilities::memory::{Held, HostMemory};
use crate::capabilities::sql::{Fault, FinishError, Outcome};
use crate::config::HttpConfig;
use crate::engine::Runtime;
use crate::problem;
use crate::service::Service;
use crate::state::StoreState;
use crate::telemetry::metrics::ComponentMetrics;

/// What the client is told to wait before retrying after a 503.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why the guest gave no usable response.
enum Failure {
    /// It trapped: a panic, `unreachable`, out of memory, a stack overflow.
    Trapped(String),
    /// It was still running at its deadline.
    TimedOut,
    /// No instance could be had: the host runs as many as it may at once.
    Busy(String),
    /// It returned without a valid response, or with one too large.
    BadResponse(String),
}

/// Runs the request as one unit of work: the response, and the route the component named.
pub async fn call(
    runtime: &Runtime,
    service: &Service,
    request: Request<Full<Bytes>>,
    config: &HttpConfig,
) -> (Response<Full<Bytes>>, Option<Arc<str>>) {
    let span = tracing::info_span!(
        "component.call",
        component = %service.name,
        http.request.method = %request.method(),
        url.path = crate::telemetry::truncated(request.uri().path(), 2048),
        http.response.status_code = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    let started = Instant::now();
    let mut unit = UnitOfWork {
        metrics: &service.metrics,
        counted: false,
    };
    let (response, route) = async {
        let deadline = started + config.request_timeout;
        let mut store = service.new_store(runtime, deadline);
        store.data_mut().route.serving(request.uri().path());
        let answer = match tokio::time::timeout_at(
            deadline.into(),
            run_guest(&mut store, service, request, config),
        )
        .await
        {
            Ok(answer) => answer,
            Err(_elapsed) => Err(Failure::TimedOut),
        };
        let route = store.data().route.matched().cloned();
        if matches!(answer, Err(Failure::TimedOut | Failure::Trapped(_))) {
            service.metrics.trap("http");
        }
        if matches!(answer, Err(Failure::TimedOut)) {
            // No orderly rollback: it would wait behind the statement that is too slow.
            // Dropping the store cancels that statement and closes the connection.
            crate::state::retire(store);
            tracing::Span::current().record("outcome", "timed out");
            unit.count("rolled_back");
            return (
                respond(service, answer, Ok(Outcome::RolledBack), None),
                route,
            );
        }
        let succeeded = matches!(&answer, Ok(response) if !response.status().is_server_error());
        let finished = store.data_mut().sql.finish(succeeded).await;
        if matches!(finished, Ok(Outcome::Committed)) {
            store.data().messaging.committed();
        }
        unit.count(unit_of_work_label(&finished));
        tracing::Span::current().record("outcome", tracing::field::debug(&finished));
        let fault = store.data().sql.fault();
        crate::state::retire(store);
        (respond(service, answer, finished, fault), route)
    }
    .instrument(span.clone())
    .await;
    span.record("http.response.status_code", response.status().as_u16());
    tracing::debug!(parent: &span, elapsed_us = started.elapsed().as_micros() as u64, "request done");
    (response, route)
}

/// Counts the request's unit of work once: as it ended, or, when the call is dropped first (the
/// client went away; dropping the store rolls the work back), as rolled back.
struct UnitOfWork<'a> {
    metrics: &'a ComponentMetrics,
    counted: bool,
}

impl UnitOfWork<'_> {
    fn count(&mut self, outcome: &'static str) {
        self.metrics.unit_of_work("http", outcome);
        self.counted = true;
    }
}

impl Drop for UnitOfWork<'_> {
    fn drop(&mut self) {
        if !self.counted {
            self.metrics.unit_of_work("http", "rolled_back");
        }
    }
}

/// How a unit of work ended, as the `outcome` label of `units_of_work_total`.
pub fn unit_of_work_label(finished: &Result<Outcome, FinishError>) -> &'static str {
    match finished {
        Ok(Outcome::Committed) => "committed",
        Ok(Outcome::NoStatements) => "empty",
        Ok(Outcome::RolledBack) | Err(_) => "rolled_back",
    }
}

/// The response the client gets, from what the guest answered, how the unit of work ended, and
/// the gravest database fault it met.
fn respond(
    service: &Service,
    answer: Result<Response<Full<Bytes>>, Failure>,
    finished: Result<Outcome, FinishError>,
    fault: Option<Fault>,
) -> Response<Full<Bytes>> {
    let database_failed = matches!(fault, Some(Fault::Outage | Fault::Conflict));
    match (answer, finished) {
        (Ok(response), Ok(_)) if !response.status().is_server_error() => response,
        (Err(Failure::TimedOut), _) => problem::response(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "the {} service did not answer in time; its work was rolled back",
                service.name
            ),
        ),
        (_, Err(FinishError::OutcomeUnknown(why))) => {
            tracing::error!(component = %service.name, error = %why, "the commit's outcome is unknown");
            problem::response(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "the {} service could not confirm that its work was saved; look before retrying, or retry \
                     with the same Idempotency-Key",
                    service.name
                ),
            )
        }
        // The database failed the unit of work, whatever the component made of it.
        _ if fault == Some(Fault::Outage) => unavailable(format!(
            "the {} database is unavailable; try again shortly",
            service.name
        )),
        // A serialization failure or deadlock, or the component's memory held by its other
        // units of work: the same request may well succeed in a moment.
        _ if database_failed => unavailable(format!(
            "the {} service is busy with other work that conflicts or holds its memory; try again \
             shortly",
            service.name
        )),
        // The component declined (4xx) after a statement failed: the rollback is what it meant.
        (Ok(response), Err(FinishError::StatementFailed(_)))
            if response.status().is_client_error() =>
        {
            response
        }
        // A 5xx of the component's own, rolled back.
        (Ok(response), Ok(_)) => response,
        (Err(Failure::Trapped(trap)), _) => {
            if service.log_rate().allows_line() {
                tracing::error!(component = %service.name, error = %trap, "the component trapped");
            }
            problem::response(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "the {} service failed while handling the request",
                    service.name
                ),
            )
        }
        (Err(Failure::Busy(why)), _) => unavailable(format!(
            "the {} service {why}; try again shortly",
            service.name
        )),
        (Err(Failure::BadResponse(why)), _) => {
            if service.log_rate().allows_line() {
                tracing::error!(component = %service.name, error = %why, "the component gave no usable response");
            }
            problem::response(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the {} service gave no usable response", service.name),
            )
        }
        (Ok(_), Err(err)) => {
            tracing::warn!(component = %service.name, error = %err, "the unit of work could not be committed");
            problem::response(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the {} service could not save its work", service.name),
            )
        }
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
    store: &mut wasmtime::Store<StoreState>,
    service: &Service,
    request: Request<Full<Bytes>>,
    config: &HttpConfig,
) -> Result<Response<Full<Bytes>>, Failure> {
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
                return Err(Failure::BadResponse(format!(
                    "cannot pass the request: {err}"
                )));
            }
        }
    };
    let proxy = code
        .proxy
        .instantiate_async(&mut *store)
        .await
        .map_err(|err| {
            if err.is::<wasmtime::PoolConcurrencyLimitError>() {
                Failure::Busy(format!("has no free instance: {err}"))
            } else {
                trapped("instantiation failed", &err)
            }
        })?;

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
        let body = collect_body(body, config.max_response_bytes, &service.host_memory).await?;
        Ok::<_, String>(Response::from_parts(parts, Full::new(body)))
    };
    tokio::pin!(handle, collect);
    // Both run together; a trap ends the call at once, without waiting for a body that the
    // trapped guest will never finish.
    let mut handled = false;
    let collected = loop {
        tokio::select! {
            result = &mut handle, if !handled => {
                result.map_err(|trap| trapped("the handler trapped", &trap))?;
                handled = true;
            }
            collected = &mut collect => break collected,
        }
    };
    if !handled {
        handle
            .await
            .map_err(|trap| trapped("the handler trapped", &trap))?;
    }
    collected.map_err(Failure::BadResponse)
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

/// A trap, or the deadline when the epoch callback interrupted the guest for it.
fn trapped(what: &str, err: &wasmtime::Error) -> Failure {
    match err.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => Failure::TimedOut,
        _ => Failure::Trapped(format!("{what}: {err:#}")),
    }
}
