//! Queues of one subscription (component, topic), declared by every host that consumes it, so
//! replicas share them as competing consumers:
//!
//! - `{exchange}.{component}.{topic}`: durable, bound to the exchange on the topic.
//! - `….retry.{ms}ms`, one per configured delay: a failed delivery waits there (queue TTL), then
//!   dead-letters back to the main queue with its attempt count in `x-attempt`.
//! - `….dead`: deliveries rejected, exhausted, or undecodable, with the reason in
//!   `x-dead-reason`. Nothing consumes it: people look at it.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation};

/// Header carrying the attempt number of a retried delivery (1 on the first delivery).
pub const ATTEMPT: &str = "x-attempt";
/// Header carrying why a delivery was dead-lettered or retried.
pub const REASON: &str = "x-dead-reason";

#[derive(Debug, Clone)]
pub struct Subscription {
    pub topic: String,
    /// The component whose events on `topic` are accepted: the CloudEvents `source` they carry.
    pub publisher: String,
    pub queue: String,
    pub dead: String,
    /// The retry queue for each delay, in order.
    pub retries: Vec<(String, Duration)>,
}

impl Subscription {
    pub fn new(exchange: &str, component: &str, topic: &str, publisher: &str, delays: &[Duration]) -> Self {
        let queue = format!("{exchange}.{component}.{topic}");
        let retries = delays
            .iter()
            .map(|delay| (format!("{queue}.retry.{}ms", delay.as_millis()), *delay))
            .collect();
        Self { topic: topic.to_owned(), publisher: publisher.to_owned(), dead: format!("{queue}.dead"), queue, retries }
    }

    /// Declares the queues and the binding; safe to repeat, and to run on several hosts.
    pub async fn declare(&self, channel: &Channel, exchange: &str) -> lapin::Result<()> {
        let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        channel.queue_declare(self.queue.as_str().into(), durable, FieldTable::default()).await?;
        channel
            .queue_bind(
                self.queue.as_str().into(),
                exchange.into(),
                self.topic.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        channel.queue_declare(self.dead.as_str().into(), durable, FieldTable::default()).await?;
        for (retry, delay) in &self.retries {
            let mut arguments = FieldTable::default();
            let ttl = i32::try_from(delay.as_millis()).unwrap_or(i32::MAX);
            arguments.insert("x-message-ttl".into(), AMQPValue::LongInt(ttl));
            arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
            arguments.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(self.queue.as_str().into()),
            );
            channel.queue_declare(retry.as_str().into(), durable, arguments).await?;
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

/// How long the broker may take to confirm a retry or dead-letter copy.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// Publishes `body` straight to `queue` (through the default exchange) with the given headers
/// set and the `dropped` ones removed, keeping the original properties otherwise. Succeeds only when the broker confirmed it (within
/// [`CONFIRM_TIMEOUT`]) and routed it to the queue, so the caller may then acknowledge the
/// original.
pub async fn send_to(
    channel: &Channel,
    queue: &str,
    body: &[u8],
    original: &BasicProperties,
    headers: &[(&str, AMQPValue)],
    dropped: &[&str],
) -> anyhow::Result<()> {
    let mut table = FieldTable::default();
    for (name, value) in original.headers().clone().unwrap_or_default().inner() {
        if !dropped.contains(&name.as_str()) {
            table.insert(name.clone(), value.clone());
        }
    }
    for (name, value) in headers {
        table.insert((*name).into(), value.clone());
    }
    let properties = original.clone().with_headers(table).with_delivery_mode(2);
    let mandatory = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
    let confirm = channel.basic_publish("".into(), queue.into(), mandatory, body, properties).await?;
    let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
        .await
        .map_err(|_| anyhow::anyhow!("the broker did not confirm the copy to {queue} within {CONFIRM_TIMEOUT:?}"))??;
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => anyhow::bail!("queue {queue} does not exist"),
        Confirmation::Nack(_) => anyhow::bail!("the broker refused the copy to {queue}"),
        Confirmation::NotRequested => anyhow::bail!("publisher confirms are off on this channel"),
    }
}

/// A header value from text.
pub fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_are_named_after_exchange_component_and_topic() {
        let delays = [Duration::from_millis(100), Duration::from_secs(2)];
        let subscription = Subscription::new("events", "invoices", "orders.created", "orders", &delays);
        assert_eq!(subscription.queue, "events.invoices.orders.created");
        assert_eq!(subscription.dead, "events.invoices.orders.created.dead");
        assert_eq!(subscription.retry_queue(1), Some("events.invoices.orders.created.retry.100ms"));
        assert_eq!(subscription.retry_queue(2), Some("events.invoices.orders.created.retry.2000ms"));
        assert_eq!(subscription.retry_queue(3), None, "two delays allow three attempts");
        assert_eq!(subscription.retry_queue(0), None);
    }

    #[test]
    fn a_missing_or_odd_attempt_header_counts_as_the_first_attempt() {
        assert_eq!(attempt_of(&BasicProperties::default()), 1);
        let mut headers = FieldTable::default();
        headers.insert(ATTEMPT.into(), AMQPValue::LongInt(-4));
        assert_eq!(attempt_of(&BasicProperties::default().with_headers(headers.clone())), 1);
        headers.insert(ATTEMPT.into(), AMQPValue::LongInt(3));
        assert_eq!(attempt_of(&BasicProperties::default().with_headers(headers)), 3);
    }
}
