//! Calls a component's `wasi:http/incoming-handler` for one request, as one unit of work.
//!
//! 1. A fresh store and instance from the service's current code (pooling allocator).
//! 2. `handle` runs while the response body is collected, up to `max_response_bytes`. Both are
//!    driven together because the guest may block writing a body nobody reads yet.
//! 3. The unit of work ends: commit when the guest answered below 500 and did not trap,
//!    rollback otherwise. Only then does the client see the response, so a 201 means durable.
//!
//! The whole call, database included, is bounded by `request_timeout`; guest code alone is also
//! bounded by the store's epoch deadline, so a loop in the guest traps instead of spinning.

use std::convert::Infallible;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use tracing::Instrument;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use crate::capabilities::sql::{FinishError, Outcome};
use crate::config::HttpConfig;
use crate::engine::Runtime;
use crate::problem::Problem;
use crate::service::Service;

pub async fn call(
    runtime: &Runtime,
    service: &Service,
    request: Request<Full<Bytes>>,
    config: &HttpConfig,
) -> Response<Full<Bytes>> {
    let span = tracing::info_span!(
        "component.call",
        component = %service.name,
        http.request.method = %request.method(),
        url.path = %request.uri().path(),
        http.response.status_code = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    let started = Instant::now();
    let response = async {
        let mut store = service.new_store(runtime, Runtime::ticks(config.request_timeout));
        let answer = tokio::time::timeout(config.request_timeout, run_guest(&mut store, service, request, config)).await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(_elapsed) => {
                // No orderly rollback: it would wait behind the statement that is too slow.
                // Dropping the store closes the connection, which rolls the transaction back.
                drop(store);
                tracing::Span::current().record("outcome", "timed out");
                return Problem::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("the {} service did not answer within {:?}", service.name, config.request_timeout),
                )
                .into_response();
            }
        };
        let succeeded = matches!(&answer, Ok(response) if !response.status().is_server_error());
        let finished = store.data_mut().sql.finish(succeeded).await;
        if matches!(finished, Ok(Outcome::Committed)) {
            store.data().messaging.committed();
        }
        tracing::Span::current().record("outcome", tracing::field::debug(&finished));
        match (answer, finished) {
            (Ok(response), Ok(Outcome::Committed | Outcome::NoStatements | Outcome::RolledBack)) => response,
            (Err(problem), _) => problem.into_response(),
            (Ok(_), Err(err @ FinishError::StatementFailed(_))) => {
                tracing::warn!(error = %err, "component answered success after a failed statement");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the {} service could not save its work", service.name),
                )
                .into_response()
            }
            (Ok(_), Err(err @ FinishError::Commit(_))) => {
                tracing::error!(error = %err, "commit failed");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the {} service could not save its work; try again", service.name),
                )
                .into_response()
            }
        }
    }
    .instrument(span.clone())
    .await;
    span.record("http.response.status_code", response.status().as_u16());
    tracing::debug!(parent: &span, elapsed_us = started.elapsed().as_micros() as u64, "request done");
    response
}

/// Instantiates the component and runs its handler; the answer or the problem to send instead.
async fn run_guest(
    store: &mut wasmtime::Store<crate::state::StoreState>,
    service: &Service,
    request: Request<Full<Bytes>>,
    config: &HttpConfig,
) -> Result<Response<Full<Bytes>>, Problem> {
    let failed = |what: &str, err: &dyn std::fmt::Display| {
        tracing::error!(component = %service.name, error = %err, "{what}");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the {} service failed while handling the request", service.name),
        )
    };
    let code = service.code();
    let request = request.map(|body| body.map_err(|never: Infallible| -> wasmtime_wasi_http::Error { match never {} }));
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let (incoming, outparam) = {
        let mut http = store.data_mut().http();
        let incoming = http.new_incoming_request(Scheme::Http, request);
        let outparam = http.new_response_outparam(sender);
        match (incoming, outparam) {
            (Ok(incoming), Ok(outparam)) => (incoming, outparam),
            (Err(err), _) | (_, Err(err)) => return Err(failed("cannot pass the request", &err)),
        }
    };
    let proxy = code
        .proxy
        .instantiate_async(&mut *store)
        .await
        .map_err(|err| failed("instantiation failed", &format_args!("{err:#}")))?;

    let handle = proxy.wasi_http_incoming_handler().call_handle(&mut *store, incoming, outparam);
    let collect = async {
        let response = receiver.await.map_err(|_| "the component set no response".to_owned())?;
        let response = response.map_err(|code| format!("the component answered with error {code:?}"))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, config.max_response_bytes)
            .collect()
            .await
            .map_err(|err| format!("cannot read the component's response body: {err}"))?
            .to_bytes();
        Ok::<_, String>(Response::from_parts(parts, Full::new(body)))
    };
    let (handled, collected) = tokio::join!(handle, collect);
    if let Err(trap) = handled {
        return Err(failed("the component trapped", &format_args!("{trap:#}")));
    }
    collected.map_err(|err| failed("bad response", &err))
}
