//! The outbox and its relay.
//!
//! `publish` inserts into `platform_outbox` inside the unit of work; the [`Relay`] (one task per
//! publishing component, started with the host) moves committed events to the broker, each as a
//! persistent CloudEvent, `mandatory`, on a channel with publisher confirms, stamped with the
//! component's broker user (AMQP `user_id`, which RabbitMQ checks against the connection's login,
//! and consumers against the topic's publisher). A row is marked sent only after the broker
//! confirmed and routed its event. It takes them two ways:
//!
//! - **Just committed, from memory** ([`super::fresh`]): a unit of work that published hands its
//!   events over as it commits and wakes the relay, which publishes them at once, waits for the
//!   confirms, and marks their rows sent by id, all the events taken at once in one statement.
//!   Nothing is read back from the database.
//! - **A pass over the outbox**, for what did not get out that way (the broker away, a publish
//!   unconfirmed or unrouted, more events waiting than the relay holds, the rows of a host that
//!   stopped, of another replica, or written by hand):
//!   1. in a transaction, lock a batch of unsent rows with `FOR UPDATE SKIP LOCKED`, so replicas
//!      relaying the same database take different rows ([`rows`]);
//!   2. publish each;
//!   3. mark the rows the broker confirmed and routed as sent, and the rows that can never be
//!      sent as such, and commit;
//!   4. go on after the batch's last row until no unsent row is left behind it: rows held back
//!      (unrouted, refused) never block the rows after them; they are tried again next pass.
//!
//!   A pass runs at start, when the broker connection comes back (so it catches up at once
//!   after an outage), at once after events did not get out from memory, and every
//!   `relay_interval` besides; that last one leaves alone the rows written in the last
//!   [`PASS_GRACE`], which their own host is still sending from memory.
//!
//! Its statements go through the component's [`Database`], as the guests' do, so a host runs
//! its relays whatever its databases are.
//!
//! The outbox table lies in the component's own database, where its SQL could write rows
//! directly; so the pass trusts no row ([`rows`]): lengths are read before values, and a row
//! with a value out of bounds, a topic the component may not publish, or data that is not
//! JSON is set aside for good (`platform_outbox.unsendable` says why; counted in
//! `messaging_events_unsendable_total`, listed by the admin API) instead of being read again on
//! every pass. Events go out with the component's own name as `source`, whatever the row says.
//! Writing the table by hand gains a component nothing that `publish` would not give it.
//!
//! A crash or outage between the publish and the mark publishes the event again later (at
//! least once; consumers de-duplicate by id). A row no queue is bound for yet comes back from
//! the broker unrouted and stays unsent until a subscriber's queue exists, so an event published
//! before its consumer first started is not lost.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::PublisherConfirm;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation};
use tokio_util::sync::CancellationToken;

use super::broker::Broker;
use super::fresh::{Event, FreshEvent};
use super::{Outbound, cloudevent};
use crate::capabilities::sql::{self, CommitError, Database, ResultBudget, Transaction, Value};
use crate::telemetry::metrics::ComponentMetrics;
use crate::telemetry::propagation;

mod rows;

use rows::{Bounds, Row};

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

/// How old a row must be before the pass every `relay_interval` takes it: younger ones are
/// still being sent from memory by the host whose unit of work wrote them (this one's own
/// failures are caught up with at once, by a pass that waits for nothing).
pub const PASS_GRACE: Duration = Duration::from_secs(2);

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

/// Which row an event came from: a pass knows its seq, an event sent from memory its id.
enum RowKey {
    Seq(i64),
    Id(String),
}

/// An event on its way to the broker: its row, and the confirmation to wait for.
struct InFlight {
    row: RowKey,
    topic: String,
    confirm: PublisherConfirm,
    publishing: Publishing,
}

/// What the broker made of a set of publishes.
struct Confirmed {
    /// The rows it took and routed, with their topics.
    sent: Vec<(RowKey, String)>,
    /// Whether it refused or could not route any.
    held_back: bool,
}

/// Whether a pass over the outbox is due, and which rows it takes (a later variant takes more).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Pass {
    /// None is due.
    None,
    /// The pass every `relay_interval`: rows older than [`PASS_GRACE`].
    Interval,
    /// Catching up: every unsent row, now.
    CatchUp,
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

    /// The component whose outbox it relays.
    pub fn component(&self) -> &str {
        &self.component
    }

    /// Relays until `shutdown`: on each wake-up (a commit that published), the events handed
    /// over from memory; a pass over the outbox when one is due (see the module's
    /// documentation); over a channel it opens again whenever the broker connection is new.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let interval = self.broker.config().relay_interval;
        let mut channel: Option<Channel> = None;
        let mut failing = false;
        let mut connections = self.broker.changes();
        // Rows a host that stopped left behind are caught up with at start.
        let mut pass = Pass::CatchUp;
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.outbound.wakeup.notified() => {}
                Ok(()) = connections.changed() => pass = Pass::CatchUp,
                _ = ticks.tick() => pass = pass.max(Pass::Interval),
                () = shutdown.cancelled() => return,
            }
            let (fresh, left_behind) = self.outbound.fresh.take();
            if left_behind {
                pass = Pass::CatchUp;
            }
            let open = match self.channel(&mut channel).await {
                Some(open) => open,
                None => {
                    // No broker: what was handed over waits in the outbox for the pass that
                    // follows the connection's return.
                    if !fresh.is_empty() {
                        pass = Pass::CatchUp;
                    }
                    continue;
                }
            };
            let mut outcome = Ok(());
            if !fresh.is_empty() {
                outcome = self.relay_fresh(&open, fresh).await.map(|caught_up| {
                    if !caught_up {
                        pass = Pass::CatchUp;
                    }
                });
            }
            if outcome.is_ok() && pass != Pass::None {
                outcome = self.relay_pass(&open, pass).await;
                pass = Pass::None;
            }
            match outcome {
                Ok(()) if failing => {
                    tracing::info!(component = %self.component, "outbox relay working again");
                    failing = false;
                }
                Ok(()) => {}
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
                    pass = Pass::CatchUp;
                }
            }
        }
    }

    /// The relay's channel, opened on the current broker connection if it is not open; `None`
    /// without a connection.
    async fn channel(&self, channel: &mut Option<Channel>) -> Option<Channel> {
        let connection = self.broker.connection()?;
        if !channel.as_ref().is_some_and(|c| c.status().connected()) {
            match open_channel(&connection).await {
                Ok(opened) => *channel = Some(opened),
                Err(err) => {
                    tracing::debug!(
                        component = %self.component,
                        error = %err,
                        "cannot open a relay channel",
                    );
                    return None;
                }
            }
        }
        channel.clone()
    }

    /// Publishes events handed over from memory and marks their rows sent, in one statement
    /// with its transaction; whether every one of them got out (if not, the rest wait for a
    /// pass).
    async fn relay_fresh(
        &mut self,
        channel: &Channel,
        events: Vec<FreshEvent>,
    ) -> Result<bool, RelayError> {
        let mut in_flight = Vec::with_capacity(events.len());
        let mut refused = false;
        for fresh in &events {
            let row = RowKey::Id(fresh.event.id.clone());
            match self.publish(channel, row, &fresh.event).await? {
                Ok(sending) => in_flight.push(sending),
                // Checked at `publish`: cannot happen, and the pass sets its row aside.
                Err(_) => refused = true,
            }
        }
        let Confirmed { sent, held_back } = self.confirmed(in_flight).await?;
        // Their memory is free once the broker has them.
        drop(events);
        let ids: Vec<&str> = sent
            .iter()
            .filter_map(|(row, _)| match row {
                RowKey::Id(id) => Some(id.as_str()),
                RowKey::Seq(_) => None,
            })
            .collect();
        if !ids.is_empty() {
            let ids = serde_json::to_string(&ids).unwrap_or_default();
            let mut transaction = self.database.begin(Instant::now() + BATCH_TIMEOUT).await?;
            transaction
                .defer(rows::MARK_SENT_IDS, vec![Value::Json(ids)])
                .await?;
            commit(transaction).await?;
        }
        for (_, topic) in &sent {
            self.metrics.relayed(topic);
        }
        Ok(!held_back && !refused)
    }

    /// One pass over the outbox: batch after batch while there are rows.
    async fn relay_pass(&mut self, channel: &Channel, pass: Pass) -> Result<(), RelayError> {
        let grace = if pass == Pass::CatchUp {
            Duration::ZERO
        } else {
            PASS_GRACE
        };
        let mut after = 0;
        loop {
            let Batch { sent, last, full } = self.relay_batch(channel, after, grace).await?;
            if sent > 0 {
                tracing::debug!(component = %self.component, sent, "outbox rows published");
            }
            match last {
                Some(last) if full => after = last,
                _ => return Ok(()),
            }
        }
    }

    /// Publishes one batch of the unsent rows after `after`, written at least `grace` ago.
    async fn relay_batch(
        &mut self,
        channel: &Channel,
        after: i64,
        grace: Duration,
    ) -> Result<Batch, RelayError> {
        // Dropped before it ends (an error, the relay stopped midway), the transaction is rolled
        // back with its connection, and its rows are unlocked for the next pass.
        let mut transaction = self.database.begin(Instant::now() + BATCH_TIMEOUT).await?;
        let rows = self.lock_batch(transaction.as_mut(), after, grace).await?;
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
                Row::Pending(pending) => {
                    let row = RowKey::Seq(pending.seq);
                    match self.publish(channel, row, &pending.event).await? {
                        Ok(sending) => in_flight.push(sending),
                        Err(why) => unsendable.push((pending.seq, why)),
                    }
                }
                Row::Unsendable { seq, reason } => unsendable.push((seq, reason)),
            }
        }
        let sent = self.confirmed(in_flight).await?.sent;
        let seqs: Vec<(i64, &str)> = sent
            .iter()
            .filter_map(|(row, topic)| match row {
                RowKey::Seq(seq) => Some((*seq, topic.as_str())),
                RowKey::Id(_) => None,
            })
            .collect();
        self.mark(transaction, &seqs, &unsendable).await?;
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
        grace: Duration,
    ) -> Result<Vec<Row>, RelayError> {
        let mut params = vec![Value::Int64(self.batch), Value::Int64(after)];
        params.extend(self.bounds.params().map(Value::Int32));
        params.push(Value::Int32(
            i32::try_from(grace.as_millis()).unwrap_or(i32::MAX),
        ));
        let mut budget = ResultBudget::for_host(self.bounds.batch_bytes(self.batch));
        let rows = transaction.query(rows::SELECT, params, &mut budget).await?;
        let topics = &self.outbound.topics;
        rows.rows
            .iter()
            .map(|row| rows::classify(row, topics, &self.bounds, &self.component))
            .collect::<Result<_, _>>()
            .map_err(RelayError::Database)
    }

    /// Publishes one event: its confirmation to wait for, or why it can never be sent.
    async fn publish(
        &mut self,
        channel: &Channel,
        row: RowKey,
        event: &Event,
    ) -> Result<Result<InFlight, String>, RelayError> {
        let written_in = event.traceparent.as_deref();
        let publishing = Publishing {
            span: publish_span(&self.component, &event.topic, &event.id, written_in),
            confirmed: false,
        };
        // The consumer's span continues this one; with no exporter, the writer's context
        // passes through, if it is a valid one (the component's SQL can write the column).
        let traceparent = propagation::traceparent_of(&publishing.span)
            .or_else(|| propagation::valid_traceparent(written_in));
        let message = cloudevent::Outgoing {
            id: &event.id,
            topic: &event.topic,
            source: &self.outbound.source,
            time: event.time,
            content_type: &event.content_type,
            data_schema: event.data_schema.as_deref(),
            traceparent: traceparent.as_deref(),
            data: &event.data,
        };
        let body = match cloudevent::encode(&message) {
            Ok(body) => body,
            // `publish` checked the data; a row that is not JSON was written by hand.
            Err(err) => return Ok(Err(format!("data is not JSON: {err}"))),
        };
        let properties = BasicProperties::default()
            .with_message_id(event.id.as_str().into())
            .with_type(event.topic.as_str().into())
            .with_app_id(self.component.as_str().into())
            .with_user_id(self.broker.user().into())
            .with_content_type(cloudevent::CONTENT_TYPE.into())
            .with_timestamp(event.time.timestamp().max(0) as u64)
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
                event.topic.as_str().into(),
                mandatory,
                &body,
                properties,
            )
            .await?;
        Ok(Ok(InFlight {
            row,
            topic: event.topic.clone(),
            confirm,
            publishing,
        }))
    }

    /// Waits for each publish's confirmation: the rows the broker took and routed, with their
    /// topics. A refused or unrouted one stays in the outbox for a later pass.
    async fn confirmed(&mut self, in_flight: Vec<InFlight>) -> Result<Confirmed, RelayError> {
        let mut sent = Vec::with_capacity(in_flight.len());
        let mut held_back = false;
        for InFlight {
            row,
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
                    sent.push((row, topic));
                }
                Confirmation::Ack(Some(_returned)) => {
                    held_back = true;
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
                    held_back = true;
                    tracing::warn!(
                        component = %self.component,
                        topic = %topic,
                        "the broker refused an event; it stays in the outbox",
                    );
                }
            }
        }
        Ok(Confirmed { sent, held_back })
    }

    /// Marks the rows sent and the ones set aside, and commits, in one round trip: the updates
    /// are deferred to the commit, and after a failed one the commit fails.
    async fn mark(
        &self,
        mut transaction: Box<dyn Transaction>,
        sent: &[(i64, &str)],
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
        commit(transaction).await?;
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

/// Commits one of the relay's transactions.
async fn commit(transaction: Box<dyn Transaction>) -> Result<(), RelayError> {
    transaction.commit().await.map_err(|err| match err {
        CommitError::Failed(err) => RelayError::from(err),
        CommitError::Unknown(why) => RelayError::Database(why),
    })
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
