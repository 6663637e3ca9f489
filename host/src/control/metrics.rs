//! `GET /metrics`: the host's metrics, with each service's state read at the scrape (see
//! [`crate::telemetry::metrics`]).

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::Admin;
use crate::service::Service;
use crate::telemetry;
use crate::telemetry::metrics::{ServiceSnapshot, Snapshot};
use crate::triggers::messaging::topology::Subscription;

/// Every metric, with the state gauges read now (the databases' within a bound).
pub(super) async fn scrape(State(admin): State<Admin>) -> Response {
    let registry = &admin.registry;
    let services =
        futures::future::join_all(registry.services().iter().map(|service| snapshot(service)))
            .await;
    let text = registry.metrics().encode(&Snapshot { services });
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(telemetry::metrics::CONTENT_TYPE),
        )],
        text,
    )
        .into_response()
}

/// A service's state, for a scrape: instances, pool connections, its dead-letter queues' depths,
/// and (when it uses messaging) its outbox backlog and inbox size, read from its database now.
async fn snapshot(service: &Service) -> ServiceSnapshot {
    let subscriptions = &service.subscriptions();
    let uses_messaging = !service.reach.outbound.topics.is_empty() || !subscriptions.is_empty();
    let dead_letters = match &service.reach.broker {
        Some(broker) if !subscriptions.is_empty() => {
            let config = broker.config();
            let queues: Vec<String> = subscriptions
                .iter()
                .map(|topic| {
                    Subscription::new(&config.exchange, service.name(), topic, "", &[]).dead
                })
                .collect();
            let depths = broker.queue_depths(&queues).await.unwrap_or_default();
            subscriptions
                .iter()
                .zip(depths)
                .map(|(topic, depth)| (topic.clone(), depth, config.dead_letter_max))
                .collect()
        }
        _ => Vec::new(),
    };
    ServiceSnapshot {
        dead_letters,
        component: service.metrics.name().clone(),
        instances: service.in_flight(),
        connections: service.reach.database.connections(),
        broker_connected: service
            .reach
            .broker
            .as_ref()
            .map(|broker| broker.connection().is_some()),
        messaging: if uses_messaging {
            crate::capabilities::messaging::tables::sample(
                service.reach.database.as_ref(),
                &service.config.publishes,
            )
            .await
        } else {
            None
        },
    }
}
