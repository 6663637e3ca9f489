//! The outbox and its relay.
//!
//! `publish` inserts into `platform_outbox` inside the unit of work; the [`Relay`] (one task per
//! publishing component, started with the host) moves committed rows to the broker:
//!
//! 1. In a transaction, lock a batch of unsent rows with `FOR UPDATE SKIP LOCKED`, so replicas
//!    relaying the same database take different rows ([`rows`]).
//! 2. Publish each as a persistent CloudEvent, `mandatory`, on a channel with publisher confirms,
//!    stamped with the component's broker user (AMQP `user_id`, which RabbitMQ checks against
//!    the connection's login, and consumers against the topic's publisher).
//! 3. Mark the rows the broker confirmed and routed as sent, and the rows that can never be
//!    sent as such, and commit.
//! 4. Go on after the batch's last row until no unsent row is left behind it: rows held back
//!    (unrouted, refused) never block the rows after them; they are tried again next pass.
//!
//! Its statements go through the component's [`Database`], as the guests' do, so a host runs
//! its relays whatever its databases are.
//!
//! The outbox table lies in the component's own database, where its SQL could write rows
//! directly; so the relay trusts no row ([`rows`]): lengths are read before values, and a row
//! with a value out of bounds, a topic the component may not publish, or data that is not
//! JSON is set aside for good (`platform_outbox.unsendable` says why; counted in
//! `messaging_events_unsendable_total`, listed by the admin API) instead of being read again on
//! every pass. Events go out with the component's own name as `source`, whatever the row says.
//! Writing the table by hand gains a component nothing that `publish` would not give it.
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
use std::time::{Duration, Instant};

use lapin::PublisherConfirm;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation};
use tokio_util::sync::CancellationToken;

use super::broker::Broker;
use super::{Outbound, cloudevent};
use crate::capabilities::sql::{self, CommitError, Database, ResultBudget, Transaction, Value};
use crate::telemetry::metrics::ComponentMetrics;
use crate::telemetry::propagation;

mod rows;

use rows::{Bounds, Pending, Row};

/// The statement `publish` runs in the unit of work; `traceparent` is the context of the span
/// that wrote the event, which the relay's publish continues.
pub const INSERT: &str = "INSERT INTO platform_outbox \
                          (id, topic, source, content_type, data_schema, data, traceparent) \
                          VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// Rows published per transaction, at most.
const BATCH: i64 = 100;

/// Bytes of data one batch holds at most: a component whose events may be large relays fewer
/// of them a batch.
const BATCH_BYTES: usize = 4 << 20;

/// How long the relay waits for the broker to confirm a publish before giving the batch up.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one batch's transaction may last: the database's part, and the broker's
/// confirmations.
const BATCH_TIMEOUT: Duration = Duration::from_secs(60);

/// What a batch's answer may hold beside its data: ids, topics and the rest, a few KiB a row.
const BATCH_OVERHEAD_BYTES: usize = 1 << 20;

/// Relays one component's outbox; cloned afresh when the supervisor restarts it.
#[derive(Clone)]
pub struct Relay {
    component: String,
    database: Arc<dyn Database>,
    broker: Arc<Broker>,
    outbound: Arc<Outbound>,
    /// Topics found with no queue bound, so the warning is logged once per topic.
    unrouted: HashSet<String>,
    /// The longest value of each column it reads.
    bounds: Bounds,
    /// Rows a batch takes: at most [`BATCH`], and fewer for large events ([`BATCH_BYTES`]).
    batch: i64,
    /// The component's metrics: events relayed, rows set aside.
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

impl From<sql::Error> for RelayError {
    fn from(err: sql::Error) -> Self {
        Self::Database(sql::describe(&err))
    }
}

/// An event on its way to the broker: its row, and the confirmation to wait for.
struct InFlight {
    seq: i64,
    topic: String,
    confirm: PublisherConfirm,
    publishing: Publishing,
}

impl Relay {
    /// A relay for `component`, whose events carry at most `max_data` bytes of data.
    pub fn new(
        component: String,
        database: Arc<dyn Database>,
        broker: Arc<Broker>,
        outbound: Arc<Outbound>,
        metrics: ComponentMetrics,
        max_data: usize,
    ) -> Self {
        let batch = (BATCH_BYTES / max_data.max(1)).clamp(1, BATCH as usize) as i64;
        Self {
            component,
            database,
            broker,
            outbound,
            unrouted: HashSet::new(),
            bounds: Bounds::new(max_data),
            batch,
            metrics,
        }
    }
    /// The component it relays for.
    /// The component whose outbox it relays.
    pub fn component(&self) -> &str {
        &self.component
    }

    /// Relays until `shutdown`: on each wake-up (a commit that published) or each
    /// `relay_interval`, batch after batch while there are rows, over a channel it opens again
    /// whenever the broker connection is new.
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
            let Some(connection) = self.broker.connection() else {
                continue;
            };
            if !channel.as_ref().is_some_and(|c| c.status().connected()) {
                channel = match open_channel(&connection).await {
                    Ok(opened) => Some(opened),
                    Err(err) => {
                        tracing::debug!(
                            component = %self.component,
                            error = %err,
                            "cannot open a relay channel",
                        );
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
                            tracing::info!(
                                component = %self.component,
                                "outbox relay working again",
                            );
                            failing = false;
                        }
                        if sent > 0 {
                            tracing::debug!(
                                component = %self.component,
                                sent,
                                "outbox rows published",
                            );
                        }
                        match last {
                            Some(last) if full => after = last,
                            _ => break,
                        }
                    }
                    Err(err) => {
                        if !failing {
                            tracing::warn!(
                                component = %self.component,
                                error = %err,
                                "outbox relay failed; will retry",
                            );
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
        // Dropped before it ends (an error, the relay stopped midway), the transaction is rolled
        // back with its connection, and its rows are unlocked for the next pass.
        let mut transaction = self.database.begin(Instant::now() + BATCH_TIMEOUT).await?;
        let rows = self.lock_batch(transaction.as_mut(), after).await?;
        let Some(last) = rows.last().map(Row::seq) else {
            transaction.rollback().await;
            return Ok(Batch {
                sent: 0,
                last: None,
                full: false,
            });
        };
        let full = rows.len() as i64 == self.batch;
        let mut unsendable = Vec::new();
        let mut in_flight = Vec::with_capacity(rows.len());
        for row in rows {
            match row {
                Row::Pending(pending) => match self.publish(channel, pending).await? {
                    Ok(sending) => in_flight.push(sending),
                    Err(set_aside) => unsendable.push(set_aside),
                },
                Row::Unsendable { seq, reason } => unsendable.push((seq, reason)),
            }
        }
        let sent = self.confirmed(in_flight).await?;
        self.mark(transaction, &sent, &unsendable).await?;
        for (_, topic) in &sent {
            self.metrics.relayed(topic);
        }
        Ok(Batch {
            sent: sent.len(),
            last: Some(last),
            full,
        })
    }

    /// Locks the next batch of rows in the transaction, in one round trip with its `BEGIN`.
    async fn lock_batch(
        &self,
        transaction: &mut dyn Transaction,
        after: i64,
    ) -> Result<Vec<Row>, RelayError> {
        let mut params = vec![Value::Int64(self.batch), Value::Int64(after)];
        params.extend(self.bounds.params().map(Value::Int32));
        let mut budget = ResultBudget::for_host(self.bounds.batch_bytes(self.batch));
        let rows = transaction.query(rows::SELECT, params, &mut budget).await?;
        let topics = &self.outbound.topics;
        rows.rows
            .iter()
            .map(|row| rows::classify(row, topics, &self.bounds, &self.component))
            .collect::<Result<_, _>>()
            .map_err(RelayError::Database)
    }

    /// Publishes one row's event: its confirmation to wait for, or why the row can never be sent.
    async fn publish(
        &mut self,
        channel: &Channel,
        row: Pending,
    ) -> Result<Result<InFlight, (i64, String)>, RelayError> {
        let publishing = Publishing {
            span: publish_span(
                &self.component,
                &row.topic,
                &row.id,
                row.traceparent.as_deref(),
            ),
            confirmed: false,
        };
        // The consumer's span continues this one; with no exporter, the writer's context
        // passes through, if it is a valid one (the component's SQL can write the column).
        let traceparent = propagation::traceparent_of(&publishing.span)
            .or_else(|| propagation::valid_traceparent(row.traceparent.as_deref()));
        let event = cloudevent::Outgoing {
            id: &row.id,
            topic: &row.topic,
            source: &self.outbound.source,
            time: row.created_at,
            content_type: &row.content_type,
            data_schema: row.data_schema.as_deref(),
            traceparent: traceparent.as_deref(),
            data: &row.data,
        };
        let body = match cloudevent::encode(&event) {
            Ok(body) => body,
            // `publish` checked the data; a row that is not JSON was written by hand.
            Err(err) => return Ok(Err((row.seq, format!("data is not JSON: {err}")))),
        };
        let properties = BasicProperties::default()
            .with_message_id(row.id.as_str().into())
            .with_type(row.topic.as_str().into())
            .with_app_id(self.component.as_str().into())
            .with_user_id(self.broker.user().into())
            .with_content_type(cloudevent::CONTENT_TYPE.into())
            .with_timestamp(row.created_at.timestamp().max(0) as u64)
            .with_delivery_mode(2)
            .with_headers(trace_headers(traceparent.as_deref()));
        let exchange = self.broker.config().exchange.as_str();
        let mandatory = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let confirm = channel
            .basic_publish(
                exchange.into(),
                row.topic.as_str().into(),
                mandatory,
                &body,
                properties,
            )
            .await?;
        Ok(Ok(InFlight {
            seq: row.seq,
            topic: row.topic,
            confirm,
            publishing,
        }))
    }

    /// Waits for each publish's confirmation: the rows the broker took and routed, with their
    /// topics. A refused or unrouted one stays in the outbox for the next pass.
    async fn confirmed(
        &mut self,
        in_flight: Vec<InFlight>,
    ) -> Result<Vec<(i64, String)>, RelayError> {
        let mut sent = Vec::with_capacity(in_flight.len());
        for InFlight {
            seq,
            topic,
            confirm,
            mut publishing,
        } in in_flight
        {
            let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
                .await
                .map_err(|_| RelayError::Unconfirmed)??;
            match confirmation {
                Confirmation::Ack(None) | Confirmation::NotRequested => {
                    publishing.succeeded();
                    self.unrouted.remove(&topic);
                    sent.push((seq, topic));
                }
                Confirmation::Ack(Some(_returned)) => {
                    if self.unrouted.insert(topic.clone()) {
                        tracing::warn!(
                            component = %self.component,
                            topic = %topic,
                            "no queue is bound for this topic yet; its events stay in the outbox \
                             until a subscriber starts"
                        );
                    }
                }
                Confirmation::Nack(_) => {
                    tracing::warn!(
                        component = %self.component,
                        seq,
                        "the broker refused an event; it stays in the outbox",
                    );
                }
            }
        }
        Ok(sent)
    }

    /// Marks the rows sent and the ones set aside, and commits, in one round trip: the updates
    /// are deferred to the commit, and after a failed one the commit fails.
    async fn mark(
        &self,
        mut transaction: Box<dyn Transaction>,
        sent: &[(i64, String)],
        unsendable: &[(i64, String)],
    ) -> Result<(), RelayError> {
        if !sent.is_empty() {
            let seqs: Vec<i64> = sent.iter().map(|(seq, _)| *seq).collect();
            let seqs = serde_json::to_string(&seqs).unwrap_or_default();
            transaction
                .defer(rows::MARK_SENT, vec![Value::Json(seqs)])
                .await?;
        }
        if !unsendable.is_empty() {
            let aside: Vec<_> = unsendable
                .iter()
                .map(|(seq, reason)| serde_json::json!({ "seq": seq, "reason": reason }))
                .collect();
            let aside = serde_json::to_string(&aside).unwrap_or_default();
            transaction
                .defer(rows::MARK_UNSENDABLE, vec![Value::Json(aside)])
                .await?;
        }
        transaction.commit().await.map_err(|err| match err {
            CommitError::Failed(err) => RelayError::from(err),
            CommitError::Unknown(why) => RelayError::Database(why),
        })?;
        if let Some((seq, reason)) = unsendable.first() {
            self.metrics.unsendable(unsendable.len() as u64);
            tracing::warn!(
                component = %self.component,
                rows = unsendable.len(),
                first_seq = seq,
                first_reason = %reason,
                "outbox rows that can never be sent were set aside \
                 (platform_outbox.unsendable); the admin API lists them"
            );
        }
        Ok(())
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
        let _ = tracing_opentelemetry::OpenTelemetrySpanExt::set_parent(
            &span,
            propagation::from_traceparent(written_in),
        );
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
        headers.insert(
            "traceparent".into(),
            lapin::types::AMQPValue::LongString(traceparent.into()),
        );
    }
    headers
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
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}
