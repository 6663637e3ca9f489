//! The AMQP consumer: delivers the events a component subscribes to into its `message-handler`.
//!
//! One task per subscribing component. While the broker is up it declares each subscription's
//! queues ([`topology`]), consumes them with a bounded prefetch, and handles deliveries
//! concurrently up to that bound. Each delivery is one unit of work ([`delivery::deliver`]), and
//! is acknowledged only after it is settled:
//!
//! | outcome | then |
//! | --- | --- |
//! | handled, or a duplicate | ack |
//! | retry, attempts left | copy to the retry queue with `x-attempt + 1`, then ack |
//! | retry exhausted, reject, undecodable, forged | copy to the dead-letter queue with the reason, then ack |
//! | database unreachable, or no free instance | pause, then nack with requeue: the attempt does not count |
//! | the copy refused (a full dead-letter queue) or unconfirmed | pause, then nack with requeue |
//!
//! An event is accepted only from its topic's publisher (the manifest says which component that
//! is): one whose AMQP `user_id` is not that component's broker user (see
//! [`topology::published_by`]) is forged (one with no `user_id` too, unless
//! `messaging.accept_events_without_user` is on, for events queued before an upgrade), and so
//! is one whose CloudEvents `source` or `type` does not match its subscription; neither reaches
//! the handler. A message over the subscriber's `max_event_bytes`, or with an envelope field
//! over its bound, is undecodable. What a delivery makes the host copy into a header, a log line
//! or a span is bounded; a delivery's log lines share its component's `log_lines_per_second`.
//!
//! A copy is confirmed by the broker before the original is acknowledged, so a crash in between
//! delivers the event again rather than losing it. When the connection drops, unacknowledged
//! deliveries return to the queue and the task starts over on the next connection.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::capabilities::messaging::broker::Broker;
use crate::capabilities::messaging::cloudevent;
use crate::engine::Runtime;
use crate::service::Service;
use crate::telemetry::{propagation, truncated};

pub mod delivery;
pub mod topology;

use delivery::Outcome;
use topology::{Stamp, Subscription};

/// How long a consumer waits before handing back a delivery it could not handle because the
/// database was away, so an outage is not a busy loop.
const UNAVAILABLE_PAUSE: Duration = Duration::from_secs(1);

/// The consumer of one subscribing component: built at start, then run as a background task
/// until shutdown.
pub struct MessageTrigger {
    runtime: Arc<Runtime>,
    service: Arc<Service>,
    broker: Arc<Broker>,
    subscriptions: Vec<Subscription>,
    /// Deadline of one handler call, database included.
    deadline: Duration,
}

impl MessageTrigger {
    /// The consumer of `service`'s subscriptions over `broker`, each delivery's handler call
    /// given `deadline`; it connects and declares nothing until [`MessageTrigger::run`].
    pub fn new(
        runtime: Arc<Runtime>,
        service: Arc<Service>,
        broker: Arc<Broker>,
        deadline: Duration,
    ) -> Self {
        let config = broker.config();
        let subscriptions = service
            .subscriptions()
            .iter()
            .map(|topic| {
                // Every subscribed topic has a publisher: the configuration refuses one without.
                let publisher = config.publishers.get(topic).map_or("", String::as_str);
                Subscription::new(
                    &config.exchange,
                    service.name(),
                    topic,
                    publisher,
                    &config.retry_delays,
                )
            })
            .collect();
        Self {
            runtime,
            service,
            broker,
            subscriptions,
            deadline,
        }
    }

    /// The component it delivers to.
    pub fn component(&self) -> &str {
        self.service.name()
    }

    /// Consumes until `shutdown`, starting over on each new connection; waits for deliveries in
    /// progress to settle before returning.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let in_flight = TaskTracker::new();
        while let Some(connection) = self.broker.connected(&shutdown).await {
            match self.consume(&connection, &in_flight, &shutdown).await {
                Ok(()) => break,
                Err(err) => {
                    tracing::debug!(
                        component = %self.service.name(),
                        error = %err,
                        "consumer stopped; will start over"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(250)) => {}
                        () = shutdown.cancelled() => break,
                    }
                }
            }
        }
        in_flight.close();
        in_flight.wait().await;
    }

    async fn consume(
        self: &Arc<Self>,
        connection: &lapin::Connection,
        in_flight: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let config = self.broker.config();
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        channel
            .basic_qos(config.prefetch, BasicQosOptions::default())
            .await?;
        let mut consumers = Vec::new();
        for (index, subscription) in self.subscriptions.iter().enumerate() {
            subscription
                .declare(
                    connection,
                    &channel,
                    &config.exchange,
                    config.dead_letter_max,
                )
                .await?;
            let consumer = channel
                .basic_consume(
                    subscription.queue.as_str().into(),
                    format!("{}-{}-{index}", self.service.name(), std::process::id()).into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            consumers.push(consumer.map(move |delivery| (index, delivery)));
        }
        tracing::info!(
            component = %self.service.name(),
            topics = ?self.service.subscriptions(),
            "consuming"
        );
        let mut deliveries = futures::stream::select_all(consumers);
        let permits = Arc::new(Semaphore::new(usize::from(config.prefetch)));
        loop {
            let next = tokio::select! {
                next = deliveries.next() => next,
                () = shutdown.cancelled() => {
                    // Unacknowledged deliveries go back to the queue when the channel closes;
                    // the ones being handled finish first.
                    in_flight.close();
                    in_flight.wait().await;
                    let _ = channel.close(200, "host stopping".into()).await;
                    return Ok(());
                }
            };
            let (index, delivery) = match next {
                Some((index, Ok(delivery))) => (index, delivery),
                Some((_, Err(err))) => return Err(err.into()),
                None => anyhow::bail!("the broker cancelled the consumers"),
            };
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return Ok(());
            };
            let trigger = self.clone();
            let channel = channel.clone();
            in_flight.spawn(async move {
                let subscription = &trigger.subscriptions[index];
                if let Err(err) = trigger.settle(&channel, subscription, delivery).await {
                    // Not acknowledged: the broker delivers it again.
                    tracing::warn!(
                        component = %trigger.service.name(),
                        error = %err,
                        "could not settle a delivery"
                    );
                }
                drop(permit);
            });
        }
    }

    /// Whether a delivery published by broker user `published_by` comes from its topic's
    /// publisher. One that names no user (published before the host stamped users) passes only
    /// while `messaging.accept_events_without_user` is on.
    fn is_from_publisher(&self, published_by: Option<&str>, subscription: &Subscription) -> bool {
        match published_by {
            Some(user) => user == subscription.publisher,
            None => self.broker.config().accept_events_without_user,
        }
    }

    /// Handles one delivery and acknowledges it as the outcome requires, in a consumer span
    /// that continues the publisher's trace.
    async fn settle(
        &self,
        channel: &Channel,
        subscription: &Subscription,
        delivery: Delivery,
    ) -> anyhow::Result<()> {
        let attempt = topology::attempt_of(&delivery.properties);
        let published_by = topology::published_by(&delivery.properties, self.broker.user());
        let decoded = cloudevent::decode(
            &delivery.data,
            attempt,
            self.service.limits().max_event_bytes,
        );
        let traceparent = decoded
            .as_ref()
            .ok()
            .and_then(|(_, traceparent)| traceparent.as_deref());
        let span = self.consumer_span(subscription, &delivery, traceparent, attempt);
        let (settled, outcome) = async {
            let outcome = match decoded {
                _ if !self.is_from_publisher(published_by.as_deref(), subscription) => {
                    Outcome::Reject(format!(
                        "forged event: published by broker user {}, not {:?}, the publisher of {}",
                        published_by.as_deref().map_or_else(
                            || "(none named)".to_owned(),
                            |user| format!("{:?}", truncated(user, 64))
                        ),
                        subscription.publisher,
                        subscription.topic
                    ))
                }
                Ok((event, _)) if event.source != subscription.publisher => {
                    Outcome::Reject(format!(
                        "forged event: its source {:?} is not {:?}, the publisher of {}",
                        event.source, subscription.publisher, subscription.topic
                    ))
                }
                Ok((event, _)) if event.topic != subscription.topic => Outcome::Reject(format!(
                    "forged event: its type {:?} is not the topic {} it was routed on",
                    event.topic, subscription.topic
                )),
                Ok((event, _)) => {
                    tracing::Span::current().record("messaging.message.id", event.id.as_str());
                    let written = event.time;
                    let outcome =
                        delivery::deliver(&self.runtime, &self.service, event, self.deadline).await;
                    if outcome == Outcome::Handled {
                        let now = chrono::Utc::now().timestamp_micros();
                        self.service
                            .metrics
                            .event_lag(&subscription.topic, (now - written) as f64 / 1e6);
                    }
                    outcome
                }
                Err(reason) => Outcome::Reject(format!("undecodable message: {reason}")),
            };
            self.act_on(
                channel,
                subscription,
                &delivery,
                attempt,
                published_by.as_deref(),
                outcome,
            )
            .await
        }
        .instrument(span.clone())
        .await;
        span.record("outcome", outcome);
        if matches!(outcome, "dead_lettered") || settled.is_err() {
            span.record("otel.status_code", "error");
        }
        if settled.is_ok() {
            self.service.metrics.delivery(&subscription.topic, outcome);
        }
        settled
    }

    /// The span of one delivery: a consumer span whose parent is the relay's publish (from the
    /// message's `traceparent` header, else the event's attribute).
    fn consumer_span(
        &self,
        subscription: &Subscription,
        delivery: &Delivery,
        traceparent: Option<&str>,
        attempt: u32,
    ) -> tracing::Span {
        let span = tracing::info_span!(
            "message.process",
            otel.name = %format_args!("process {}", subscription.topic),
            otel.kind = "consumer",
            otel.status_code = tracing::field::Empty,
            component = %self.service.name(),
            messaging.system = "rabbitmq",
            messaging.operation.type = "process",
            messaging.destination.name = %subscription.topic,
            messaging.consumer.group.name = %subscription.queue,
            messaging.message.id = tracing::field::Empty,
            attempt,
            outcome = tracing::field::Empty,
        );
        // Only for a span something records; fails without an OpenTelemetry layer.
        if !span.is_disabled() {
            let _ = span.set_parent(propagation::from_amqp(
                delivery.properties.headers().as_ref(),
                traceparent,
            ));
        }
        span
    }

    /// Acknowledges, retries, dead-letters or requeues the delivery as `outcome` says; what was
    /// done, as the `outcome` label of `messaging_deliveries_total`.
    async fn act_on(
        &self,
        channel: &Channel,
        subscription: &Subscription,
        delivery: &Delivery,
        attempt: u32,
        published_by: Option<&str>,
        outcome: Outcome,
    ) -> (anyhow::Result<()>, &'static str) {
        let component = self.service.name();
        let stamp = Stamp {
            own: self.broker.user(),
            published_by,
        };
        let copied = match outcome {
            Outcome::Handled => Ok("handled"),
            Outcome::Duplicate => Ok("duplicate"),
            Outcome::Retry(reason) => match subscription.retry_queue(attempt) {
                Some(retry) => {
                    if self.service.log_rate().allows_line() {
                        tracing::info!(
                            %component,
                            topic = %subscription.topic,
                            attempt,
                            %reason,
                            "handler failed; retrying later"
                        );
                    }
                    let headers = [
                        (
                            topology::ATTEMPT,
                            AMQPValue::LongInt(i32::try_from(attempt + 1).unwrap_or(i32::MAX)),
                        ),
                        (topology::REASON, topology::text(&reason)),
                    ];
                    topology::send_to(
                        channel,
                        retry,
                        &delivery.data,
                        &delivery.properties,
                        &stamp,
                        &headers,
                    )
                    .await
                    .map(|()| "retried")
                }
                None => {
                    let reason = format!("gave up after {attempt} attempts: {reason}");
                    self.dead_letter(channel, subscription, delivery, attempt, &stamp, &reason)
                        .await
                        .map(|()| "dead_lettered")
                }
            },
            Outcome::Reject(reason) => self
                .dead_letter(channel, subscription, delivery, attempt, &stamp, &reason)
                .await
                .map(|()| "dead_lettered"),
            Outcome::Unavailable(reason) => {
                tracing::warn!(
                    %component,
                    %reason,
                    "database unavailable; the delivery goes back to the queue"
                );
                return (self.requeue(delivery).await, "requeued");
            }
            Outcome::Busy(reason) => {
                if self.service.log_rate().allows_line() {
                    tracing::warn!(
                        %component,
                        %reason,
                        "no free instance; the delivery goes back to the queue"
                    );
                }
                return (self.requeue(delivery).await, "requeued");
            }
        };
        match copied {
            Ok(done) => (
                delivery
                    .ack(BasicAckOptions::default())
                    .await
                    .map(drop)
                    .map_err(Into::into),
                done,
            ),
            Err(err) => {
                // Not copied, so not acknowledged: it stays in its queue and comes back.
                if self.service.log_rate().allows_line() {
                    tracing::warn!(
                        %component,
                        topic = %subscription.topic,
                        error = %err,
                        "could not copy a delivery; it goes back to its queue"
                    );
                }
                (self.requeue(delivery).await, "requeued")
            }
        }
    }

    /// Hands `delivery` back to its queue after a pause, so a message that cannot be settled now
    /// is not a busy loop.
    async fn requeue(&self, delivery: &Delivery) -> anyhow::Result<()> {
        tokio::time::sleep(UNAVAILABLE_PAUSE).await;
        let requeued = delivery
            .nack(BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            })
            .await;
        requeued.map(drop).map_err(Into::into)
    }

    async fn dead_letter(
        &self,
        channel: &Channel,
        subscription: &Subscription,
        delivery: &Delivery,
        attempt: u32,
        stamp: &Stamp<'_>,
        reason: &str,
    ) -> anyhow::Result<()> {
        if self.service.log_rate().allows_line() {
            tracing::warn!(
                component = %self.service.name(),
                queue = %subscription.dead,
                reason = %crate::telemetry::truncated(reason, topology::MAX_REASON),
                "delivery dead-lettered"
            );
        }
        let headers = [
            (topology::REASON, topology::text(reason)),
            (
                topology::ATTEMPT,
                AMQPValue::LongInt(i32::try_from(attempt).unwrap_or(i32::MAX)),
            ),
        ];
        topology::send_to(
            channel,
            &subscription.dead,
            &delivery.data,
            &delivery.properties,
            stamp,
            &headers,
        )
        .await
    }
}
