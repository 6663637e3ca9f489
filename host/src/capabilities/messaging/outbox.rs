//! The outbox and its relay.
//!
//! `publish` inserts into `platform_outbox` inside the unit of work; the [`Relay`] (one task per
//! publishing component, started with the host) moves committed rows to the broker:
//!
//! 1. In a transaction, lock a batch of unsent rows with `FOR UPDATE SKIP LOCKED`, so replicas
//!    relaying the same database take different rows.
//! 2. Publish each as a persistent CloudEvent, `mandatory`, on a channel with publisher confirms.
//! 3. Mark the rows the broker confirmed and routed as sent, and commit.
//! 4. Go on after the batch's last row until no unsent row is left behind it: rows held back
//!    (unrouted, refused) never block the rows after them; they are tried again next pass.
//!
//! The outbox table lies in the component's own database, where its SQL could write rows
//! directly; so the relay publishes only rows of the topics the component may publish, always
//! with the component's own name as `source`, whatever the row says. Writing the table by hand
//! gains a component nothing that `publish` would not give it.
//!
//! A row is marked sent only after the broker confirmed it, so a crash or outage in between
//! publishes it again later (at least once; consumers de-duplicate by id). A row no queue is
//! bound for yet comes back from the broker unrouted and stays unsent until a subscriber's queue
//! exists, so an event published before its consumer first started is not lost.
//!
//! The relay runs when a commit wakes it, when the broker connection comes back (so it catches
//! up at once after an outage), and every `relay_interval` besides, which picks up rows written
//! by another replica or left by a host that stopped.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use crate::capabilities::sql::postgres::{Object, Pool};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation};
use tokio_util::sync::CancellationToken;

use super::broker::Broker;
use super::{Outbound, cloudevent};
use crate::telemetry::metrics::ComponentMetrics;
use crate::telemetry::propagation;

/// Tables the host keeps in every database of a component that uses messaging. Created at start,
/// under the same advisory lock as the component's migrations.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS platform_outbox (
    seq          bigserial   PRIMARY KEY,
    id           text        NOT NULL,
    topic        text        NOT NULL,
    source       text        NOT NULL,
    content_type text        NOT NULL,
    data_schema  text,
    data         bytea       NOT NULL,
    traceparent  text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    sent_at      timestamptz
);
CREATE INDEX IF NOT EXISTS platform_outbox_unsent ON platform_outbox (seq) WHERE sent_at IS NULL;
CREATE TABLE IF NOT EXISTS platform_inbox (
    source     text        NOT NULL,
    event_id   text        NOT NULL,
    topic      text        NOT NULL,
    handled_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, event_id)
);
";

/// The statement `publish` runs in the unit of work; `traceparent` is the context of the span
/// that wrote the event, which the relay's publish continues.
pub const INSERT: &str = "INSERT INTO platform_outbox (id, topic, source, content_type, data_schema, data, traceparent) \
                          VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// Rows published per transaction.
const BATCH: i64 = 100;

/// How long the relay waits for the broker to confirm a publish before giving the batch up.
const CONFIRM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub struct Relay {
    component: String,
    pool: Pool,
    broker: Arc<Broker>,
    outbound: Arc<Outbound>,
    /// Topics found with no queue bound, so the warning is logged once per topic.
    unrouted: HashSet<String>,
    /// The topics the component may publish: rows of any other topic are never relayed.
    topics: Vec<String>,
    /// The component's metrics: events relayed.
    metrics: ComponentMetrics,
}

/// Why a batch stopped.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("database: {0}")]
    Database(String),
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("broker: no confirmation within {CONFIRM_TIMEOUT:?}")]
    Unconfirmed,
}

impl From<tokio_postgres::Error> for RelayError {
    fn from(err: tokio_postgres::Error) -> Self {
        Self::Database(err.to_string())
    }
}

impl From<deadpool::managed::PoolError<crate::capabilities::sql::postgres::ConnectError>> for RelayError {
    fn from(err: deadpool::managed::PoolError<crate::capabilities::sql::postgres::ConnectError>) -> Self {
        Self::Database(err.to_string())
    }
}

impl Relay {
    pub fn new(
        component: String,
        pool: Pool,
        broker: Arc<Broker>,
        outbound: Arc<Outbound>,
        metrics: ComponentMetrics,
    ) -> Self {
        let topics = outbound.topics.iter().cloned().collect();
        Self { component, pool, broker, outbound, unrouted: HashSet::new(), topics, metrics }
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let interval = self.broker.config().relay_interval;
        let mut channel: Option<Channel> = None;
        let mut failing = false;
        let mut connections = self.broker.changes();
        loop {
            tokio::select! {
                () = self.outbound.wakeup.notified() => {}
                Ok(()) = connections.changed() => {}
                () = tokio::time::sleep(interval) => {}
                () = shutdown.cancelled() => return,
            }
            let Some(connection) = self.broker.connection() else { continue };
            if !channel.as_ref().is_some_and(|c| c.status().connected()) {
                channel = match open_channel(&connection).await {
                    Ok(opened) => Some(opened),
                    Err(err) => {
                        tracing::debug!(component = %self.component, error = %err, "cannot open a relay channel");
                        continue;
                    }
                };
            }
            let Some(open) = &channel else { continue };
            let mut after = 0;
            loop {
                match self.relay_batch(open, after).await {
                    Ok(Batch { sent, last, full }) => {
                        if failing {
                            tracing::info!(component = %self.component, "outbox relay working again");
                            failing = false;
                        }
                        if sent > 0 {
                            tracing::debug!(component = %self.component, sent, "outbox rows published");
                        }
                        match last {
                            Some(last) if full => after = last,
                            _ => break,
                        }
                    }
                    Err(err) => {
                        if !failing {
                            tracing::warn!(component = %self.component, error = %err, "outbox relay failed; will retry");
                            failing = true;
                        }
                        if matches!(err, RelayError::Broker(_) | RelayError::Unconfirmed) {
                            channel = None;
                        }
                        break;
                    }
                }
            }
        }
    }

    /// Publishes one batch of the unsent rows after `after`.
    async fn relay_batch(&mut self, channel: &Channel, after: i64) -> Result<Batch, RelayError> {
        let transaction = OpenTransaction(Some(self.pool.get().await?));
        let client = transaction.client()?;
        // Prepared once per connection (both in one round trip), then taken from its cache.
        let (select, update) = futures::future::try_join(
            client.prepare_cached(
                "SELECT seq, id, topic, content_type, data_schema, data, traceparent, created_at \
                 FROM platform_outbox WHERE sent_at IS NULL AND seq > $2 AND topic = ANY($3) \
                 ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
            ),
            client.prepare_cached("UPDATE platform_outbox SET sent_at = now() WHERE seq = ANY($1)"),
        )
        .await?;
        // `BEGIN` and the select in one round trip (a select after a failed `BEGIN` fails too).
        let (begun, rows) = futures::future::join(
            client.batch_execute("BEGIN"),
            client.query(&select, &[&BATCH, &after, &self.topics]),
        )
        .await;
        begun?;
        let rows = rows?;
        let Some(last) = rows.last().map(|row| row.get::<_, i64>("seq")) else {
            client.batch_execute("COMMIT").await?;
            transaction.close();
            return Ok(Batch { sent: 0, last: None, full: false });
        };
        let exchange = self.broker.config().exchange.as_str();
        let mut pending = Vec::with_capacity(rows.len());
        for row in &rows {
            let seq: i64 = row.get("seq");
            let topic: &str = row.get("topic");
            let id: &str = row.get("id");
            let created_at: DateTime<Utc> = row.get("created_at");
            let publishing = Publishing { span: publish_span(&self.component, topic, id, row.get("traceparent")), confirmed: false };
            // The consumer's span continues this one; with no exporter, the writer's context
            // passes through, if it is a valid one (the component's SQL can write the column).
            let traceparent = propagation::traceparent_of(&publishing.span)
                .or_else(|| propagation::valid_traceparent(row.get("traceparent")));
            let event = cloudevent::Outgoing {
                id,
                topic,
                source: &self.outbound.source,
                time: created_at,
                content_type: row.get("content_type"),
                data_schema: row.get("data_schema"),
                traceparent: traceparent.as_deref(),
                data: row.get("data"),
            };
            let body = match cloudevent::encode(&event) {
                Ok(body) => body,
                Err(err) => {
                    // `publish` checked the data; a row that is not JSON was written by hand.
                    tracing::error!(component = %self.component, seq, error = %err, "outbox row is not JSON; skipping it");
                    continue;
                }
            };
            let properties = BasicProperties::default()
                .with_message_id(id.into())
                .with_type(topic.into())
                .with_app_id(self.component.as_str().into())
                .with_content_type(cloudevent::CONTENT_TYPE.into())
                .with_timestamp(created_at.timestamp().max(0) as u64)
                .with_delivery_mode(2)
                .with_headers(trace_headers(traceparent.as_deref()));
            let confirm = channel
                .basic_publish(
                    exchange.into(),
                    topic.into(),
                    BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() },
                    &body,
                    properties,
                )
                .await?;
            pending.push((seq, topic.to_owned(), confirm, publishing));
        }
        let mut sent = Vec::with_capacity(pending.len());
        let mut sent_topics = Vec::with_capacity(pending.len());
        for (seq, topic, confirm, mut publishing) in pending {
            let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
                .await
                .map_err(|_| RelayError::Unconfirmed)??;
            match confirmation {
                Confirmation::Ack(None) | Confirmation::NotRequested => {
                    publishing.succeeded();
                    self.unrouted.remove(&topic);
                    sent.push(seq);
                    sent_topics.push(topic);
                }
                Confirmation::Ack(Some(_returned)) => {
                    if self.unrouted.insert(topic.clone()) {
                        tracing::warn!(
                            component = %self.component,
                            topic = %topic,
                            "no queue is bound for this topic yet; its events stay in the outbox until a subscriber starts"
                        );
                    }
                }
                Confirmation::Nack(_) => {
                    tracing::warn!(component = %self.component, seq, "the broker refused an event; it stays in the outbox");
                }
            }
        }
        // The update and `COMMIT` in one round trip: after a failed update, `COMMIT` rolls back.
        let (updated, committed) = futures::future::join(
            client.execute(&update, &[&sent]),
            client.batch_execute("COMMIT"),
        )
        .await;
        updated?;
        committed?;
        transaction.close();
        for topic in &sent_topics {
            self.metrics.relayed(topic);
        }
        Ok(Batch { sent: sent.len(), last: Some(last), full: rows.len() as i64 == BATCH })
    }
}

/// The producer span of one event's publish: a child of the span that wrote the event (its
/// outbox row's `traceparent`), attributed to the host rather than to the component. It ends
/// when the broker confirms.
fn publish_span(component: &str, topic: &str, id: &str, written_in: Option<&str>) -> tracing::Span {
    let span = tracing::info_span!(
        "relay.publish",
        otel.name = %format_args!("publish {topic}"),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "rabbitmq",
        messaging.operation.type = "send",
        messaging.destination.name = %topic,
        messaging.message.id = %id,
        outbox.component = %component,
    );
    // Only for a span something records; fails without an OpenTelemetry layer.
    if !span.is_disabled() {
        let _ = tracing_opentelemetry::OpenTelemetrySpanExt::set_parent(&span, propagation::from_traceparent(written_in));
    }
    span
}

/// A publish's span until the broker confirms it: one that ends otherwise (refused, unrouted,
/// or abandoned with its batch) is marked failed.
struct Publishing {
    span: tracing::Span,
    confirmed: bool,
}

impl Publishing {
    fn succeeded(&mut self) {
        self.confirmed = true;
    }
}

impl Drop for Publishing {
    fn drop(&mut self) {
        if !self.confirmed {
            self.span.record("otel.status_code", "error");
        }
    }
}

/// AMQP headers carrying `traceparent`, when there is one.
fn trace_headers(traceparent: Option<&str>) -> lapin::types::FieldTable {
    let mut headers = lapin::types::FieldTable::default();
    if let Some(traceparent) = traceparent {
        headers.insert("traceparent".into(), lapin::types::AMQPValue::LongString(traceparent.into()));
    }
    headers
}

/// A pooled connection inside a transaction the relay began. Dropped before [`Self::close`]
/// (an error, or the relay stopped midway), the connection is closed rather than pooled, which
/// rolls the transaction back.
struct OpenTransaction(Option<Object>);

impl OpenTransaction {
    fn client(&self) -> Result<&Object, RelayError> {
        self.0.as_ref().ok_or_else(|| RelayError::Database("the transaction has ended".into()))
    }

    /// The transaction ended: the connection goes back to the pool.
    fn close(mut self) {
        drop(self.0.take());
    }
}

impl Drop for OpenTransaction {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            drop(Object::take(client));
        }
    }
}

struct Batch {
    sent: usize,
    /// The last row looked at, sent or not.
    last: Option<i64>,
    /// Whether the batch was full, so more rows may follow.
    full: bool,
}

async fn open_channel(connection: &lapin::Connection) -> lapin::Result<Channel> {
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(channel)
}
