//! Queues of one subscription (component, topic), declared by every host that consumes it, so
//! replicas share them as competing consumers:
//!
//! - `{exchange}.{component}.{topic}`: durable, bound to the exchange on the topic.
//! - `….retry.{ms}ms`, one per configured delay: a failed delivery waits there (queue TTL), then
//!   dead-letters back to the main queue with its attempt count in `x-attempt`.
//! - `….dead`: deliveries rejected, exhausted, or undecodable, with the reason in
//!   `x-dead-reason`. Nothing consumes it: people look at it. It holds at most
//!   `messaging.dead_letter_max` messages (`x-max-length`); past that RabbitMQ refuses new ones
//!   (`x-overflow: reject-publish`) rather than drop old ones, and the consumer leaves the
//!   poison in its queue (see [`super`]).
//!
//! Who published a delivery is the AMQP `user_id` RabbitMQ checked against the publisher's
//! login ([`published_by`]). The host's copies (retries, dead letters, replays) are published
//! with the consumer's own login, so they carry the original's user in `x-published-by` (empty
//! when it named none), which is believed only on a message the consumer's own user published.
//!
//! A copy carries only the headers the host knows, each bounded, never the original's others:
//! a header table RabbitMQ took from a publisher, plus the host's, could be over the broker's
//! frame size, and a frame too large closes the connection.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};

use crate::telemetry::truncated;

/// Header carrying the attempt number of a retried delivery (1 on the first delivery).
pub const ATTEMPT: &str = "x-attempt";
/// Header carrying why a delivery was dead-lettered or retried.
pub const REASON: &str = "x-dead-reason";
/// Header carrying the broker user that published the original of a host's copy.
pub const PUBLISHED_BY: &str = "x-published-by";

/// Headers of the original a copy keeps (trace context), and the longest value of each.
const KEPT_HEADERS: [&str; 2] = ["traceparent", "tracestate"];
const MAX_KEPT_HEADER: usize = 512;

/// Longest reason a copy carries, in bytes.
pub const MAX_REASON: usize = 1024;

/// Longest user name believed, in bytes: an AMQP short string, which a `user_id` is.
const MAX_USER: usize = 255;

/// The names of one subscription's queues, and the publisher its events must come from; made
/// once per subscription at start (and again for a scrape or a replay, which only need names).
#[derive(Debug, Clone)]
pub struct Subscription {
    /// The topic it receives: the routing key its queue is bound to the exchange with.
    pub topic: String,
    /// The component whose events on `topic` are accepted: the CloudEvents `source` they carry.
    pub publisher: String,
    /// The queue the consumer reads: `{exchange}.{component}.{topic}`.
    pub queue: String,
    /// Its dead-letter queue: `{queue}.dead`.
    pub dead: String,
    /// The retry queue for each delay, in order.
    pub retries: Vec<(String, Duration)>,
}

impl Subscription {
    /// The queues of `component`'s subscription to `topic` on `exchange`, with a retry queue
    /// for each of `delays`; nothing is declared yet.
    pub fn new(
        exchange: &str,
        component: &str,
        topic: &str,
        publisher: &str,
        delays: &[Duration],
    ) -> Self {
        let queue = format!("{exchange}.{component}.{topic}");
        let retries = delays
            .iter()
            .map(|delay| (format!("{queue}.retry.{}ms", delay.as_millis()), *delay))
            .collect();
        Self {
            topic: topic.to_owned(),
            publisher: publisher.to_owned(),
            dead: format!("{queue}.dead"),
            queue,
            retries,
        }
    }

    /// Declares the queues and the binding; safe to repeat, and to run on several hosts. The
    /// dead-letter queue is declared on a channel of its own (see [`declare_dead_letters`]).
    pub async fn declare(
        &self,
        connection: &Connection,
        channel: &Channel,
        exchange: &str,
        dead_letter_max: u32,
    ) -> lapin::Result<()> {
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(self.queue.as_str().into(), durable, FieldTable::default())
            .await?;
        channel
            .queue_bind(
                self.queue.as_str().into(),
                exchange.into(),
                self.topic.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        declare_dead_letters(connection, &self.dead, dead_letter_max).await?;
        for (retry, delay) in &self.retries {
            let mut arguments = FieldTable::default();
            let ttl = i32::try_from(delay.as_millis()).unwrap_or(i32::MAX);
            arguments.insert("x-message-ttl".into(), AMQPValue::LongInt(ttl));
            arguments.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString("".into()),
            );
            arguments.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(self.queue.as_str().into()),
            );
            channel
                .queue_declare(retry.as_str().into(), durable, arguments)
                .await?;
        }
        Ok(())
    }

    /// The retry queue for a delivery that failed on `attempt`, if any are left.
    pub fn retry_queue(&self, attempt: u32) -> Option<&str> {
        let index = usize::try_from(attempt).ok()?.checked_sub(1)?;
        self.retries.get(index).map(|(queue, _)| queue.as_str())
    }
}

/// The attempt number a delivery carries (1 when the header is absent or odd).
pub fn attempt_of(properties: &BasicProperties) -> u32 {
    properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get(ATTEMPT))
        .and_then(AMQPValue::as_long_int)
        .and_then(|attempt| u32::try_from(attempt).ok())
        .filter(|attempt| *attempt >= 1)
        .unwrap_or(1)
}

/// Declares a dead-letter queue bounded to `max` messages, refusing more. A queue an earlier
/// version declared without the bound keeps its arguments (RabbitMQ refuses to change them):
/// it is used as it is, with a warning saying how to bound it.
async fn declare_dead_letters(connection: &Connection, queue: &str, max: u32) -> lapin::Result<()> {
    let mut bounded = FieldTable::default();
    bounded.insert(
        "x-max-length".into(),
        AMQPValue::LongLongInt(i64::from(max)),
    );
    bounded.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    // A refused declaration closes its channel: this one, not the consumer's.
    let channel = connection.create_channel().await?;
    let declared = channel.queue_declare(queue.into(), durable, bounded).await;
    let _ = channel.close(200, "declared".into()).await;
    if declared.is_ok() {
        return Ok(());
    }
    let channel = connection.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let found = channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await;
    let _ = channel.close(200, "declared".into()).await;
    found?;
    tracing::warn!(
        %queue,
        "this dead-letter queue was made without a length limit, which RabbitMQ will not add to \
         it; replay or delete its messages and delete the queue (the host makes it again, \
         bounded), or set a policy with max-length and overflow reject-publish"
    );
    Ok(())
}

/// The broker user that published a delivery: its `user_id` (which RabbitMQ checked against the
/// publisher's login), or, for a copy the consumer's own user (`own`) made, the user that copy
/// says the original had. A message of the consumer's own user that is no copy was published by
/// the consumer's own component. `None` when the message names no user, or its copy says the
/// original named none.
pub fn published_by(properties: &BasicProperties, own: &str) -> Option<String> {
    let user = properties.user_id().as_ref()?.as_str();
    if user != own {
        return Some(user.to_owned());
    }
    let original = match properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get(PUBLISHED_BY))
    {
        None => return Some(own.to_owned()),
        Some(AMQPValue::LongString(text)) => std::str::from_utf8(text.as_bytes()).ok()?,
        Some(AMQPValue::ShortString(text)) => text.as_str(),
        Some(_) => return None,
    };
    // No broker user is named by more than a short string holds, or by nothing.
    (!original.is_empty() && original.len() <= MAX_USER).then(|| original.to_owned())
}

/// How long the broker may take to confirm a retry or dead-letter copy.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// Who a copy is from: the consumer's own broker user, and the user that published the original.
pub struct Stamp<'a> {
    /// The consumer's own broker user, which publishes the copy: its `user_id`.
    pub own: &'a str,
    /// The user that published the original (see [`published_by`]), carried in
    /// `x-published-by`; `None` when it named none.
    pub published_by: Option<&'a str>,
}

/// Publishes `body` straight to `queue` (through the default exchange) as a copy of a message
/// with `original`'s properties: published by `stamp.own`, carrying the original's publisher,
/// its trace headers and `headers`, and nothing else of its headers. Succeeds only when the
/// broker confirmed it (within [`CONFIRM_TIMEOUT`]) and routed it to the queue, so the caller
/// may then acknowledge the original.
pub async fn send_to(
    channel: &Channel,
    queue: &str,
    body: &[u8],
    original: &BasicProperties,
    stamp: &Stamp<'_>,
    headers: &[(&str, AMQPValue)],
) -> anyhow::Result<()> {
    let mut table = FieldTable::default();
    if let Some(originals) = original.headers() {
        for name in KEPT_HEADERS {
            if let Some(AMQPValue::LongString(value)) = originals.inner().get(name)
                && value.as_bytes().len() <= MAX_KEPT_HEADER
            {
                table.insert(name.into(), AMQPValue::LongString(value.clone()));
            }
        }
    }
    // Empty when the original named no user, so the copy does not pass for the consumer's own.
    table.insert(PUBLISHED_BY.into(), text(stamp.published_by.unwrap_or("")));
    for (name, value) in headers {
        table.insert((*name).into(), value.clone());
    }
    let properties = original
        .clone()
        .with_headers(table)
        .with_user_id(ShortString::from(stamp.own))
        .with_delivery_mode(2);
    let mandatory = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let confirm = channel
        .basic_publish("".into(), queue.into(), mandatory, body, properties)
        .await?;
    let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the broker did not confirm the copy to {queue} within {CONFIRM_TIMEOUT:?}"
            )
        })??;
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => anyhow::bail!("queue {queue} does not exist"),
        Confirmation::Nack(_) => anyhow::bail!(
            "the broker refused the copy to {queue} (a full dead-letter queue refuses more)"
        ),
        Confirmation::NotRequested => anyhow::bail!("publisher confirms are off on this channel"),
    }
}

/// A header value from text (a reason is cut to [`MAX_REASON`] bytes).
pub fn text(value: &str) -> AMQPValue {
    let value = truncated(value, MAX_REASON);
    AMQPValue::LongString(LongString::from(value.as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_are_named_after_exchange_component_and_topic() {
        let delays = [Duration::from_millis(100), Duration::from_secs(2)];
        let subscription =
            Subscription::new("events", "invoices", "orders.created", "orders", &delays);
        assert_eq!(subscription.queue, "events.invoices.orders.created");
        assert_eq!(subscription.dead, "events.invoices.orders.created.dead");
        assert_eq!(
            subscription.retry_queue(1),
            Some("events.invoices.orders.created.retry.100ms")
        );
        assert_eq!(
            subscription.retry_queue(2),
            Some("events.invoices.orders.created.retry.2000ms")
        );
        assert_eq!(
            subscription.retry_queue(3),
            None,
            "two delays allow three attempts"
        );
        assert_eq!(subscription.retry_queue(0), None);
    }

    #[test]
    fn a_missing_or_odd_attempt_header_counts_as_the_first_attempt() {
        assert_eq!(attempt_of(&BasicProperties::default()), 1);
        let mut headers = FieldTable::default();
        headers.insert(ATTEMPT.into(), AMQPValue::LongInt(-4));
        assert_eq!(
            attempt_of(&BasicProperties::default().with_headers(headers.clone())),
            1
        );
        headers.insert(ATTEMPT.into(), AMQPValue::LongInt(3));
        assert_eq!(
            attempt_of(&BasicProperties::default().with_headers(headers)),
            3
        );
    }

    #[test]
    fn the_publisher_is_the_checked_user_or_what_the_consumers_own_copy_says() {
        let by = |user: Option<&str>, header: Option<AMQPValue>| {
            let mut properties = BasicProperties::default();
            if let Some(user) = user {
                properties = properties.with_user_id(user.into());
            }
            if let Some(header) = header {
                let mut headers = FieldTable::default();
                headers.insert(PUBLISHED_BY.into(), header);
                properties = properties.with_headers(headers);
            }
            published_by(&properties, "invoices")
        };
        let long = |text: &str| Some(AMQPValue::LongString(text.into()));
        assert_eq!(by(None, None), None, "no user named");
        assert_eq!(
            by(None, long("orders")),
            None,
            "a header alone is not believed"
        );
        assert_eq!(by(Some("orders"), None).as_deref(), Some("orders"));
        assert_eq!(
            by(Some("intruder"), long("orders")).as_deref(),
            Some("intruder"),
            "another user's header is not believed"
        );
        assert_eq!(
            by(Some("invoices"), long("orders")).as_deref(),
            Some("orders"),
            "the consumer's own copy names the original's publisher"
        );
        assert_eq!(
            by(Some("invoices"), None).as_deref(),
            Some("invoices"),
            "the consumer's own event, not a copy"
        );
        assert_eq!(
            by(Some("invoices"), long("")),
            None,
            "a copy of an event naming nobody"
        );
        assert_eq!(by(Some("invoices"), long(&"o".repeat(256))), None);
        let name = "orders".to_owned() + &"x".repeat(200);
        assert_eq!(
            by(Some("invoices"), long(&name)).as_deref(),
            Some(name.as_str()),
            "compared whole, never cut"
        );
    }
}
