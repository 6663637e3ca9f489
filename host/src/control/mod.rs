//! The control plane: the admin listener, hot swap of component code, the file watcher, and the
//! dead-letter queues.
//!
//! The admin listener serves JSON on its own port (`admin.listen`, loopback by default). When
//! `HOST_ADMIN_TOKEN` is set, every call must carry `Authorization: Bearer <token>`; the
//! configuration refuses a non-loopback address without one. Without a token, a call must name
//! a loopback host and come from no web page (no `Origin`), so a browser on the machine cannot
//! be made to call it. Errors are RFC 9457 problems.
//!
//! | call | what |
//! | --- | --- |
//! | `GET /livez` | the process answers (no database involved) |
//! | `GET /readyz` | what `/health` checks; 503 while stopping |
//! | `GET /metrics` | Prometheus metrics (OpenMetrics text); see [`crate::telemetry::metrics`] |
//! | `GET /components` | each component: route, subscriptions, the code serving (sha256, source, when, version), units of work in flight, the last failed load |
//! | `GET /components/{name}` | one of them |
//! | `POST /components/{name}/reload` | loads the component's `.wasm` again; answers once the new code serves |
//! | `PUT /components/{name}/wasm` | the body is a new `.wasm`; answers once it serves |
//! | `GET /components/{name}/dead-letters?topic=&limit=` | the subscription's dead letters, left in place |
//! | `POST /components/{name}/dead-letters/replay?topic=&id=` | puts one (`id`) or all back in the subscription's queue |
//! | `GET /components/{name}/outbox/unsendable?limit=` | outbox rows the relay set aside for good, and why |
//!
//! Built by [`crate::startup::Host::build`] (which binds it); runs in the last phase, so it
//! answers readiness 503 while the rest drains.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::capabilities::messaging::broker::Broker;
use crate::config::Token;
use crate::problem;
use crate::registry::Registry;
use crate::service::{Code, FailedLoad, Identity, Service};
use crate::triggers::messaging::topology::Subscription;

pub mod dead_letters;
mod metrics;
pub mod reload;
pub mod watch;

use reload::{Reloaded, Source};

/// Largest `.wasm` the upload call takes.
const MAX_UPLOAD_BYTES: usize = 64 * 1024 * 1024;
/// Dead letters listed when the call names no limit, and the most it may name.
const DEFAULT_LIST: usize = 50;
const MAX_LIST: usize = 1000;

#[derive(Clone)]
struct Admin {
    registry: Arc<Registry>,
    token: Option<Token>,
}

/// The admin API's router.
pub fn router(registry: Arc<Registry>, token: Option<Token>) -> Router {
    let admin = Admin { registry, token };
    Router::new()
        .route(
            "/livez",
            get(|| async { axum::Json(serde_json::json!({ "status": "alive" })) }),
        )
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics::scrape))
        .route("/components", get(list))
        .route("/components/{name}", get(one))
        .route("/components/{name}/reload", post(reload_file))
        .route(
            "/components/{name}/wasm",
            put(upload).layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES)),
        )
        .route("/components/{name}/dead-letters", get(dead_letters_list))
        .route(
            "/components/{name}/dead-letters/replay",
            post(dead_letters_replay),
        )
        .route("/components/{name}/outbox/unsendable", get(unsendable))
        .fallback(|| async {
            fail(
                StatusCode::NOT_FOUND,
                "no such admin call; see docs/operations.md, the admin API",
            )
        })
        .method_not_allowed_fallback(|| async {
            fail(
                StatusCode::METHOD_NOT_ALLOWED,
                "that method is not allowed here",
            )
        })
        .layer(middleware::from_fn_with_state(admin.clone(), authorize))
        .with_state(admin)
}

/// Serves the admin API on `listener` until `stop`.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    token: Option<Token>,
    stop: CancellationToken,
) {
    let address = listener
        .local_addr()
        .map(|address| address.to_string())
        .unwrap_or_default();
    tracing::info!(%address, "admin API listening");
    let served = axum::serve(listener, router(registry, token))
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(err) = served {
        tracing::error!(error = %err, "the admin listener failed");
    }
}

async fn authorize(State(admin): State<Admin>, request: Request, next: Next) -> Response {
    let Some(token) = &admin.token else {
        return match local_caller(&request) {
            Ok(()) => next.run(request).await,
            Err(why) => fail(StatusCode::FORBIDDEN, why),
        };
    };
    let offered = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    if offered.is_some_and(|offered| token.matches(offered)) {
        return next.run(request).await;
    }
    let mut refused = fail(
        StatusCode::UNAUTHORIZED,
        "this call needs Authorization: Bearer <HOST_ADMIN_TOKEN>",
    );
    refused
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    refused
}

/// Without a token, only a local program may call: the `Host` is loopback (a page served from a
/// name that rebinds to 127.0.0.1 sends its own name) and no `Origin` is sent (browsers send one
/// on every call a page makes that could change something).
fn local_caller(request: &Request) -> Result<(), &'static str> {
    if request.headers().contains_key(header::ORIGIN) {
        return Err("the admin API takes no calls from web pages");
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    match name {
        "localhost" | "127.0.0.1" | "[::1]" => Ok(()),
        _ => Err("without HOST_ADMIN_TOKEN, the admin API answers only calls to localhost"),
    }
}

async fn ready(State(admin): State<Admin>) -> Answer {
    if admin.registry.is_stopping() {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the host is stopping",
        ));
    }
    let reasons = crate::triggers::http::health::Detail::Reasons;
    Ok(
        crate::triggers::http::health::check(admin.registry.services(), reasons)
            .await
            .map(Body::new),
    )
}

/// A component as the admin API shows it.
#[derive(Serialize)]
struct ComponentView {
    name: String,
    route: String,
    wasm: String,
    subscriptions: Vec<String>,
    publishes: Vec<String>,
    code: Identity,
    in_flight: u64,
    last_failed_load: Option<FailedLoad>,
}

fn view(service: &Service) -> ComponentView {
    view_of(service, &service.code())
}

/// `service` as it serves `code`.
fn view_of(service: &Service, code: &Code) -> ComponentView {
    ComponentView {
        name: service.name().to_owned(),
        route: service.route().to_owned(),
        wasm: service.config.wasm.display().to_string(),
        subscriptions: service.subscriptions().to_vec(),
        publishes: service.config.publishes.clone(),
        code: code.identity.clone(),
        in_flight: service.in_flight(),
        last_failed_load: service.last_failure(),
    }
}

async fn list(State(admin): State<Admin>) -> Response {
    let components: Vec<ComponentView> = admin
        .registry
        .services()
        .iter()
        .map(|service| view(service))
        .collect();
    axum::Json(serde_json::json!({ "components": components })).into_response()
}

async fn one(State(admin): State<Admin>, Path(name): Path<String>) -> Answer {
    Ok(axum::Json(view(service(&admin, &name)?)).into_response())
}

async fn reload_file(State(admin): State<Admin>, Path(name): Path<String>) -> Answer {
    swap(&admin, &name, Source::File).await
}

async fn upload(State(admin): State<Admin>, Path(name): Path<String>, body: Bytes) -> Answer {
    if body.is_empty() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "the body must be the component's .wasm file",
        ));
    }
    swap(&admin, &name, Source::Upload(body)).await
}

async fn swap(admin: &Admin, name: &str, source: Source) -> Answer {
    let service = service(admin, name)?.clone();
    // In a task of its own: a caller that hangs up does not cut a reload short.
    let (runtime, reloading) = (admin.registry.runtime().clone(), service.clone());
    let reloaded =
        tokio::spawn(async move { reload::reload(&runtime, &reloading, source).await }).await;
    let reloaded = reloaded
        .unwrap_or_else(|err| Err(format!("the reload failed: {err}")))
        .map_err(|why| {
            refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("nothing changed: {why}"),
            )
        })?;
    Ok(match reloaded {
        Reloaded::Swapped(code) => axum::Json(view_of(&service, &code)).into_response(),
        Reloaded::Unchanged(code) => {
            let mut unchanged = axum::Json(view_of(&service, &code)).into_response();
            unchanged.headers_mut().insert(
                "x-unchanged",
                HeaderValue::from_static("this code was already serving"),
            );
            unchanged
        }
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    topic: Option<String>,
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayQuery {
    topic: Option<String>,
    id: Option<String>,
}

async fn dead_letters_list(
    State(admin): State<Admin>,
    Path(name): Path<String>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Answer {
    let query = parameters(query)?;
    let limit = query.limit.unwrap_or(DEFAULT_LIST).clamp(1, MAX_LIST);
    let (_, connection, subscription) = subscription(&admin, &name, query.topic.as_deref())?;
    let letters = dead_letters::list(&connection, &subscription, limit)
        .await
        .map_err(|err| {
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read {}: {err}", subscription.dead),
            )
        })?;
    Ok(
        axum::Json(serde_json::json!({ "queue": subscription.dead, "messages": letters }))
            .into_response(),
    )
}

async fn dead_letters_replay(
    State(admin): State<Admin>,
    Path(name): Path<String>,
    query: Result<Query<ReplayQuery>, QueryRejection>,
) -> Answer {
    let query = parameters(query)?;
    let (broker, connection, subscription) = subscription(&admin, &name, query.topic.as_deref())?;
    let id = query.id.as_deref();
    let replayed = dead_letters::replay(&connection, broker.user(), &subscription, id)
        .await
        .map_err(|err| {
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot replay from {}: {err:#}", subscription.dead),
            )
        })?;
    if replayed == 0 && id.is_some() {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            format!("no dead letter with that id in {}", subscription.dead),
        ));
    }
    Ok(
        axum::Json(serde_json::json!({ "replayed": replayed, "to": subscription.queue }))
            .into_response(),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnsendableQuery {
    limit: Option<usize>,
}

/// The outbox rows the relay set aside as unsendable, oldest first, with why.
async fn unsendable(
    State(admin): State<Admin>,
    Path(name): Path<String>,
    query: Result<Query<UnsendableQuery>, QueryRejection>,
) -> Answer {
    let query = parameters(query)?;
    let service = service(&admin, &name)?;
    let limit = query.limit.unwrap_or(DEFAULT_LIST).clamp(1, MAX_LIST) as i64;
    let rows =
        crate::capabilities::messaging::tables::unsendable(service.reach.database.as_ref(), limit)
            .await
            .map_err(|err| {
                refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot read the outbox of `{name}`: {err}"),
                )
            })?;
    Ok(axum::Json(serde_json::json!({ "component": name, "unsendable": rows })).into_response())
}

/// The query parameters, or a problem naming what is wrong with them.
fn parameters<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, Refused> {
    query
        .map(|Query(query)| query)
        .map_err(|rejected| refuse(StatusCode::BAD_REQUEST, rejected.body_text()))
}

/// The component called `name`, or a 404 naming the ones there are.
fn service<'a>(admin: &'a Admin, name: &str) -> Result<&'a Arc<Service>, Refused> {
    admin.registry.service(name).ok_or_else(|| {
        let names: Vec<&str> = admin
            .registry
            .services()
            .iter()
            .map(|service| service.name())
            .collect();
        refuse(
            StatusCode::NOT_FOUND,
            format!("no component `{name}`; this host runs {}", names.join(", ")),
        )
    })
}

/// The component's broker, its live connection, and its subscription to `topic` (or to its one
/// topic).
fn subscription(
    admin: &Admin,
    name: &str,
    topic: Option<&str>,
) -> Result<(Arc<Broker>, Arc<lapin::Connection>, Subscription), Refused> {
    let service = service(admin, name)?;
    let topic = match (topic, service.subscriptions()) {
        (Some(topic), subscribed) if subscribed.iter().any(|t| t == topic) => topic.to_owned(),
        (None, [only]) => only.clone(),
        (_, []) => {
            return Err(refuse(
                StatusCode::NOT_FOUND,
                format!("`{name}` subscribes to no topic"),
            ));
        }
        (_, subscribed) => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                format!(
                    "topic: name one of the topics `{name}` subscribes to: {}",
                    subscribed.join(", ")
                ),
            ));
        }
    };
    let Some(broker) = &service.reach.broker else {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            format!("`{name}` has no broker connection"),
        ));
    };
    let Some(connection) = broker.connection() else {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the broker is unreachable; try again shortly",
        ));
    };
    let config = broker.config();
    let publisher = config.publishers.get(&topic).map_or("", String::as_str);
    let subscription = Subscription::new(
        &config.exchange,
        name,
        &topic,
        publisher,
        &config.retry_delays,
    );
    Ok((broker.clone(), connection, subscription))
}

/// A problem answer outside a handler (the fallbacks, authorization).
fn fail(status: StatusCode, detail: impl Into<String>) -> Response {
    problem::response(status, detail).map(Body::new)
}

/// What an admin call answers: its JSON, or why it was refused.
type Answer = Result<Response, Refused>;

/// An admin call refused or failed: its status and what to do about it, answered as a problem.
#[derive(Debug)]
struct Refused {
    status: StatusCode,
    detail: String,
}

fn refuse(status: StatusCode, detail: impl Into<String>) -> Refused {
    Refused {
        status,
        detail: detail.into(),
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        fail(self.status, self.detail)
    }
}
