//! `GET /health` on the host: ready only when every component's database answers.
//!
//! 200 `{"status":"up","checks":{"orders.database":"up","orders.broker":"up"}}`, or 503 as an
//! RFC 9457 problem whose `checks` member has the failing checks and their reasons. A load
//! balancer takes a host out of rotation on 503 and back in when the database returns; nothing
//! needs a restart.
//!
//! The broker is reported but does not make the host unready: while it is away orders are still
//! accepted into the outbox, so the status is `degraded` with 200.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, header};
use http_body_util::Full;

use crate::problem;
use crate::service::Service;

/// How long one check may take before it counts as down.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What the answer says of a check that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// `down` alone: the data port's `/health`, which clients and load balancers see.
    Status,
    /// `down: <why>`, the dependency's own error: the admin listener's `/readyz`.
    Reasons,
}

/// Each component's database, and its broker connection when it has one (`<name>.broker`).
/// `GET /health/live`: 200 while the process serves, whatever its databases and broker do.
/// What restarts a container asks this, so a dependency's outage restarts no host.
pub fn live() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(br#"{"status":"alive"}"#)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

pub async fn check(services: &[Arc<Service>], detail: Detail) -> Response<Full<Bytes>> {
    let down = |why: String| match detail {
        Detail::Status => "down".to_owned(),
        Detail::Reasons => format!("down: {why}"),
    };
    let checks = futures::future::join_all(services.iter().map(|service| async move {
        let state = match tokio::time::timeout(CHECK_TIMEOUT, service.reach.database.ping()).await {
            Ok(Ok(())) => "up".to_owned(),
            Ok(Err(why)) => down(why),
            Err(_) => down(format!("no answer within {CHECK_TIMEOUT:?}")),
        };
        (format!("{}.database", service.name()), state)
    }))
    .await;
    let up = checks.iter().all(|(_, state)| state == "up");
    let mut checks: BTreeMap<String, String> = checks.into_iter().collect();
    let mut brokers_up = true;
    for service in services {
        let Some(broker) = &service.reach.broker else {
            continue;
        };
        let state = match broker.state() {
            Ok(()) => "up".to_owned(),
            Err(why) => {
                brokers_up = false;
                down(why)
            }
        };
        checks.insert(format!("{}.broker", service.name()), state);
    }
    if !up {
        let down: Vec<&str> = checks
            .iter()
            .filter(|(_, state)| *state != "up")
            .map(|(name, _)| name.as_str())
            .collect();
        let not_ready = problem::Problem::new(503, format!("not ready: {} down", down.join(", ")));
        return problem::into_response(&not_ready, Some(("checks", serde_json::json!(checks))));
    }
    let status = if brokers_up { "up" } else { "degraded" };
    let body = serde_json::json!({ "status": status, "checks": checks });
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
