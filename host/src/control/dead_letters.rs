//! Reading and replaying a subscription's dead-letter queue (`….dead`), for the admin API.
//!
//! Listing takes messages with `basic.get` without acknowledging them and closes the channel,
//! which puts them all back in their places. Replaying copies each chosen message to the
//! subscription's queue as a first attempt (publisher-confirmed, like every copy the consumer
//! makes, within its timeout), then acknowledges it in the dead-letter queue: a crash in between
//! leaves a copy in both, and the consumer's inbox makes the second one harmless (as long as
//! the inbox still remembers the event: `retention_hours`). At most the messages that were
//! there when the replay began are looked at, so one that fails again is not replayed twice.

use lapin::options::{BasicAckOptions, BasicGetOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection};
use serde::Serialize;

use crate::telemetry::truncated;
use crate::triggers::messaging::topology::{self, Stamp, Subscription};

/// Bytes of each message's data shown in a listing.
const PREVIEW_BYTES: usize = 256;

/// Header marking a message the admin API put back in its queue.
pub const REPLAYED: &str = "x-replayed";

/// One dead letter, as the admin API lists it.
#[derive(Debug, Serialize)]
pub struct DeadLetter {
    /// The CloudEvents id, when the message is one.
    pub id: Option<String>,
    /// Its CloudEvents type, or the subscription's topic when the message is not an event.
    pub topic: String,
    /// Why it was dead-lettered, as the consumer wrote it in the `x-reason` header.
    pub reason: Option<String>,
    /// The attempts made before it was dead-lettered.
    pub attempts: u32,
    /// The size of the message body.
    pub bytes: usize,
    /// The first bytes of the message, as text.
    pub preview: String,
}

/// Up to `limit` messages of `subscription`'s dead-letter queue, oldest first, left in place.
pub async fn list(
    connection: &Connection,
    subscription: &Subscription,
    limit: usize,
) -> anyhow::Result<Vec<DeadLetter>> {
    let channel = connection.create_channel().await?;
    let mut listed = Vec::new();
    while listed.len() < limit {
        let Some(message) = take(&channel, subscription).await? else {
            break;
        };
        listed.push(describe(subscription, &message.delivery));
    }
    // Unacknowledged, every message taken goes back to the queue.
    let _ = channel.close(200, "listed".into()).await;
    Ok(listed)
}

/// Puts dead letters back in `subscription`'s queue as first attempts: the one whose id is
/// `only`, or all, published as `own` (the component's broker user) and still naming the user
/// that published the original, so a forged event is refused again. How many were replayed.
pub async fn replay(
    connection: &Connection,
    own: &str,
    subscription: &Subscription,
    only: Option<&str>,
) -> anyhow::Result<usize> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let waiting = channel
        .queue_declare(
            subscription.dead.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?
        .message_count();
    let mut replayed = 0;
    let outcome = async {
        for _ in 0..waiting {
            let Some(message) = take(&channel, subscription).await? else {
                break;
            };
            let delivery = &message.delivery;
            if only.is_some_and(|id| describe(subscription, delivery).id.as_deref() != Some(id)) {
                continue; // not acknowledged: back in its place when the channel closes
            }
            send_back(&channel, own, subscription, delivery).await?;
            delivery.ack(BasicAckOptions::default()).await?;
            replayed += 1;
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let _ = channel.close(200, "replayed".into()).await;
    outcome
        .map(|()| replayed)
        .map_err(|err| err.context(format!("{replayed} replayed before it failed")))
}

async fn take(
    channel: &Channel,
    subscription: &Subscription,
) -> lapin::Result<Option<lapin::message::BasicGetMessage>> {
    channel
        .basic_get(
            subscription.dead.as_str().into(),
            BasicGetOptions { no_ack: false },
        )
        .await
}

/// The message again, in the subscription's queue, as a first attempt (its attempt count and
/// reason are not copied).
async fn send_back(
    channel: &Channel,
    own: &str,
    subscription: &Subscription,
    delivery: &lapin::message::Delivery,
) -> anyhow::Result<()> {
    let replayed = [(REPLAYED, AMQPValue::Boolean(true))];
    let published_by = topology::published_by(&delivery.properties, own);
    let stamp = Stamp {
        own,
        published_by: published_by.as_deref(),
    };
    topology::send_to(
        channel,
        &subscription.queue,
        &delivery.data,
        &delivery.properties,
        &stamp,
        &replayed,
    )
    .await
}

fn describe(subscription: &Subscription, delivery: &lapin::message::Delivery) -> DeadLetter {
    // A dead letter need not be a valid event: whatever `id` and `type` it has are shown.
    let event: Option<serde_json::Value> = serde_json::from_slice(&delivery.data).ok();
    let field = |name: &str| {
        event
            .as_ref()
            .and_then(|event| event.get(name)?.as_str())
            .map(|value| truncated(value, 200).to_owned())
    };
    let header = |name: &str| {
        delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|headers| headers.inner().get(name).cloned())
    };
    let reason = header(topology::REASON).and_then(|value| match value {
        AMQPValue::LongString(text) => Some(
            truncated(
                &String::from_utf8_lossy(text.as_bytes()),
                topology::MAX_REASON,
            )
            .to_owned(),
        ),
        _ => None,
    });
    let preview = String::from_utf8_lossy(&delivery.data[..delivery.data.len().min(PREVIEW_BYTES)])
        .into_owned();
    DeadLetter {
        id: field("id"),
        topic: field("type").unwrap_or_else(|| subscription.topic.clone()),
        reason,
        attempts: topology::attempt_of(&delivery.properties),
        bytes: delivery.data.len(),
        preview,
    }
}
