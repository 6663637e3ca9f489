//! The HTTP listener: one port for every component, routed by path prefix.
//!
//! `POST /orders/orders` goes to the component whose route is `/orders`, which sees
//! `POST /orders` (the prefix is stripped, as Kong's `strip_path` does). The host itself answers
//! `GET /health` (ready only when every component's database answers), `GET /health/live` (alive:
//! the process serves, whatever its dependencies do) and a problem 404 for a
//! path no component serves. The component learns its prefix from `X-Forwarded-Prefix`: its
//! route, or the gateway's header when `trust_forwarded_prefix` is on. `<route>/docs` is the
//! host's Swagger UI page for the component's `<route>/openapi.json` (see [`docs`]). Request
//! bodies are read up to `max_body_bytes` before the component runs, so an oversized body costs
//! no instance.
//!
//! Client connections are bounded and idle ones give way to new ones (see [`connections`]). Each
//! component admits at most its `max_concurrency` requests at once and queues a bounded number
//! more for at most `queue_timeout`; beyond that a request gets 503 with `Retry-After` at once,
//! so one component that is slow or stuck cannot take the host's workers from the others. On
//! shutdown the listener stops accepting and in-flight requests get `shutdown_grace` to finish.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::HttpConfig;
use crate::problem;
use crate::registry::Registry;
use crate::service::{Busy, Service};
use crate::telemetry::{metrics, propagation};

mod connections;
mod docs;
pub(crate) mod health;
mod invoke;

use connections::{Connections, Tracked, WriteStall};

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The header telling a component the path prefix it is served under.
pub const FORWARDED_PREFIX: &str = "x-forwarded-prefix";

/// The HTTP listener's side of the host: built at start, shared by `Arc` with every
/// connection's task, and dropped when [`HttpTrigger::serve`] returns.
pub struct HttpTrigger {
    /// The services to route to, their code, and the broker `/health` reports.
    registry: Arc<Registry>,
    /// The `[http]` section: body sizes, timeouts, connection bounds, the forwarded prefix.
    config: HttpConfig,
    /// The open client connections (see [`connections`]).
    connections: Arc<Connections>,
}

impl HttpTrigger {
    /// The listener's state for `registry`'s services under `config`; no port is bound here
    /// (see [`HttpTrigger::serve`]).
    pub fn new(registry: Arc<Registry>, config: HttpConfig) -> Self {
        let connections = Connections::new(config.max_connections, config.connections_per_client());
        Self {
            registry,
            config,
            connections,
        }
    }

    /// Serves `listener` until `shutdown` completes, then lets in-flight requests finish.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let stopping = CancellationToken::new();
        let open = TaskTracker::new();
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        tokio::pin!(shutdown);
        loop {
            // With every connection busy, stop accepting until one closes or goes idle: clients
            // wait in the kernel's backlog rather than in the host's memory.
            tokio::select! {
                () = self.connections.room() => {}
                () = &mut shutdown => break,
            }
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of file descriptors, or a connection reset before accept: wait a
                        // moment rather than spin.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let Some(connection) = self.connections.admit(peer.ip()) else {
                tracing::debug!(
                    client = %peer.ip(),
                    "a client over its share of connections, all busy; closing its new one"
                );
                continue;
            };
            let (trigger, requests) = (self.clone(), connection.requests());
            let handler = service_fn(move |request| {
                let (trigger, active) = (trigger.clone(), requests.begin());
                async move {
                    let response = trigger.handle(request).await;
                    Ok::<_, Infallible>(response.map(|body| Tracked::new(body, active)))
                }
            });
            let stream = WriteStall::new(stream, connections::WRITE_STALL);
            let serving = http.serve_connection(TokioIo::new(stream), handler);
            open.spawn(connections::serve(
                serving,
                connection,
                self.config.first_request_timeout,
                stopping.clone(),
            ));
        }
        drop(listener);
        tracing::info!("no longer accepting connections; waiting for requests in flight");
        stopping.cancel();
        open.close();
        if tokio::time::timeout(self.config.shutdown_grace, open.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                grace = ?self.config.shutdown_grace,
                "requests still running after the grace period"
            );
        }
        Ok(())
    }

    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path();
        if path == "/health/live" {
            return health::live();
        }
        if path == "/health" {
            if self.registry.is_stopping() {
                return problem::response(StatusCode::SERVICE_UNAVAILABLE, "the host is stopping");
            }
            return health::check(self.registry.services(), health::Detail::Status).await;
        }
        let method = request.method().clone();
        let span = server_span(&request);
        let started = Instant::now();
        let (response, served) = self.serve_routed(request).instrument(span.clone()).await;
        let status = response.status().as_u16();
        span.record("http.response.status_code", status);
        if status >= 500 {
            span.record("otel.status_code", "error");
        }
        if let Some((service, route)) = served {
            if let Some(route) = &route {
                span.record("http.route", &**route);
                propagation::rename(&span, format!("{} {route}", metrics::method_label(&method)));
            }
            service.metrics.request(
                route.as_ref(),
                &method,
                status,
                started.elapsed().as_secs_f64(),
            );
        }
        response
    }

    /// Routes the request to its service and calls it: the response, and which service and route
    /// served it (`None` when no service's prefix matched).
    async fn serve_routed(
        &self,
        request: Request<Incoming>,
    ) -> (
        Response<Full<Bytes>>,
        Option<(Arc<Service>, Option<Arc<str>>)>,
    ) {
        let path = request.uri().path();
        let Some((service, rest)) = self.registry.route(path) else {
            // The routes this host serves are the operator's to tell, not a client's to learn.
            return (
                problem::response(StatusCode::NOT_FOUND, "no service serves this path"),
                None,
            );
        };
        let service = service.clone();
        tracing::Span::current().record("component", service.name());
        if docs::is_docs(&rest) {
            let response = self.docs(&service, &request, &rest).await;
            return (response, Some((service, Some(Arc::from(docs::PATH)))));
        }
        let (response, route) = self.call(&service, request, &rest).await;
        (response, Some((service, route)))
    }

    /// The docs page at `path`, when the component has a document.
    async fn docs(
        &self,
        service: &Service,
        request: &Request<Incoming>,
        path: &str,
    ) -> Response<Full<Bytes>> {
        if let Some(refused) = docs::refuse(request.method()) {
            return refused;
        }
        if docs::needs_document(path) {
            let prefix = match self.forwarded_prefix(request.headers(), service) {
                Ok(prefix) => prefix,
                Err(err) => return unprintable_route(&err),
            };
            let (answer, _) = self.admitted(service, docs::document_request(prefix)).await;
            match docs::Document::of(answer) {
                docs::Document::Served => {}
                docs::Document::Absent => return docs::none(service.name()),
                docs::Document::Unknown(answer) => return answer,
            }
        }
        docs::serve(path, service.name())
    }

    /// Reads the request, waits for admission, and calls the component: its response, and the
    /// route it named.
    async fn call(
        &self,
        service: &Service,
        request: Request<Incoming>,
        rest: &str,
    ) -> (Response<Full<Bytes>>, Option<Arc<str>>) {
        // The body is read before taking a permit, within the request timeout, so slow
        // clients cannot hold every permit.
        let reading = self.read_request(request, service, rest);
        let request = match tokio::time::timeout(self.config.request_timeout, reading).await {
            Ok(Ok(request)) => request,
            Ok(Err(refused)) => return (refused, None),
            Err(_) => {
                let timeout = problem::response(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body did not arrive in time",
                );
                return (timeout, None);
            }
        };
        self.admitted(service, request).await
    }

    /// Waits for admission and calls the component: its response, and the route it named.
    async fn admitted(
        &self,
        service: &Service,
        request: Request<Full<Bytes>>,
    ) -> (Response<Full<Bytes>>, Option<Arc<str>>) {
        let _permit = match service.admission.admit(self.config.queue_timeout).await {
            Ok(permit) => permit,
            Err(busy) => {
                let why = match busy {
                    Busy::QueueFull => {
                        "is at its limit of requests at once, with a full queue".to_owned()
                    }
                    Busy::Waited(waited) => format!("had no free turn within {waited:?}"),
                };
                tracing::debug!(component = %service.name(), "request refused: the service {why}");
                return (
                    invoke::unavailable(format!(
                        "the {} service {why}; try again shortly",
                        service.name()
                    )),
                    None,
                );
            }
        };
        invoke::call(self.registry.runtime(), service, request, &self.config).await
    }

    /// Reads the body (within the limit) and rewrites the URI to the path the component sees.
    async fn read_request(
        &self,
        request: Request<Incoming>,
        service: &Service,
        path: &str,
    ) -> Result<Request<Full<Bytes>>, Response<Full<Bytes>>> {
        let limit = self.config.max_body_bytes;
        let too_large = || {
            problem::response(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is over {limit} bytes"),
            )
        };
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|length| length > limit as u64) {
            return Err(too_large());
        }
        let (mut parts, body) = request.into_parts();
        let body = match Limited::new(body, limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(err) if err.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
            Err(err) => {
                tracing::debug!(error = %err, "a request body could not be read");
                return Err(problem::response(
                    StatusCode::BAD_REQUEST,
                    "the request body could not be read",
                ));
            }
        };
        let path_and_query = match parts.uri.query() {
            Some(query) => format!("{path}?{query}"),
            None => path.to_owned(),
        };
        parts.uri = path_and_query.parse::<Uri>().map_err(|_| {
            problem::response(
                StatusCode::BAD_REQUEST,
                "the request target is not a valid path and query",
            )
        })?;
        // wasi:http needs an authority; HTTP/1.0 clients may send no Host.
        parts
            .headers
            .entry(header::HOST)
            .or_insert(HeaderValue::from_static("localhost"));
        let prefix = self
            .forwarded_prefix(&parts.headers, service)
            .map_err(|err| unprintable_route(&err))?;
        parts.headers.insert(FORWARDED_PREFIX, prefix);
        Ok(Request::from_parts(parts, Full::new(body)))
    }

    /// The prefix the component's paths live under, for links it sends back (`Location`, its
    /// API document's server): its route, or, when the host trusts the gateway in front of it,
    /// the gateway's `X-Forwarded-Prefix` if that is a plain path. Never the client's otherwise.
    fn forwarded_prefix(
        &self,
        headers: &HeaderMap,
        service: &Service,
    ) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
        if self.config.trust_forwarded_prefix
            && let Some(prefix) = headers
                .get(FORWARDED_PREFIX)
                .filter(|prefix| is_plain_prefix(prefix.as_bytes()))
        {
            return Ok(prefix.clone());
        }
        HeaderValue::from_str(service.route())
    }
}

/// The answer when a component's route cannot be a header value (the configuration refuses such
/// routes, so this is a host bug).
fn unprintable_route(err: &http::header::InvalidHeaderValue) -> Response<Full<Bytes>> {
    problem::response(StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
}

/// A path prefix of letters, digits and `/-_.`, starting with `/`: nothing that could break out
/// of a link or a header.
fn is_plain_prefix(prefix: &[u8]) -> bool {
    prefix.first() == Some(&b'/')
        && prefix.len() <= 256
        && !prefix.windows(2).any(|pair| pair == b"//")
        && prefix
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(b))
}

/// The server span of one request, continuing the client's trace context when it sent one.
/// Named after the method until the component names its route (OpenTelemetry's convention);
/// never after the path, which may hold ids.
fn server_span(request: &Request<Incoming>) -> tracing::Span {
    let method = metrics::method_label(request.method());
    let span = tracing::info_span!(
        "http.server",
        otel.name = method,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        component = tracing::field::Empty,
        http.request.method = method,
        url.path = crate::telemetry::truncated(request.uri().path(), 2048),
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    // Only for a span something records; fails without an OpenTelemetry layer.
    if !span.is_disabled() {
        let _ = span.set_parent(propagation::from_http(request.headers()));
    }
    span
}
