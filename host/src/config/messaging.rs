//! The `[messaging]` section: the broker every component of the host shares, and topic names.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use super::{AmqpUrl, Environment, check_positive};

/// RabbitMQ, shared by every component of the host.
#[derive(Debug, Clone)]
pub struct MessagingConfig {
    pub url: AmqpUrl,
    /// The durable topic exchange events are published to; queues and their retry and dead-letter
    /// queues are named after it.
    pub exchange: String,
    /// Deliveries a consumer holds unacknowledged at once.
    pub prefetch: u16,
    /// Delay before each retry of a failed delivery; a message is tried once more than there are
    /// delays, then dead-lettered.
    pub retry_delays: Vec<Duration>,
    /// How often the relay looks for unsent outbox rows besides being woken by a commit.
    pub relay_interval: Duration,
    /// How long sent outbox rows and inbox records are kept; the inbox's memory of handled
    /// event ids, so longer than any redelivery can be late.
    pub retention: Duration,
    /// The one component that publishes each topic: a delivered event whose CloudEvents
    /// `source` is any other is dead-lettered as forged. Built from the components' `publishes`
    /// and `[messaging.publishers]` (for topics published by components other hosts run).
    pub publishers: BTreeMap<String, String>,
}


#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ManifestMessaging {
    url: Option<String>,
    #[serde(default = "default_exchange")]
    exchange: String,
    #[serde(default = "default_prefetch")]
    prefetch: u16,
    #[serde(default = "default_retry_delays_ms")]
    retry_delays_ms: Vec<u64>,
    #[serde(default = "default_relay_interval_ms")]
    relay_interval_ms: u64,
    #[serde(default = "default_retention_hours")]
    retention_hours: u64,
    /// Topic → the component that publishes it, for topics no component of this host publishes.
    #[serde(default)]
    publishers: BTreeMap<String, String>,
}


/// Topics are dot-separated words (`orders.created`), so they work as AMQP routing keys.
pub fn check_topic(topic: &str) -> anyhow::Result<()> {
    let word_ok = |word: &str| {
        !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if topic.len() > 200 || !topic.split('.').all(word_ok) {
        bail!("must be dot-separated words of letters, digits, '-' or '_', such as \"orders.created\"");
    }
    Ok(())
}

pub(super) fn check_messaging(raw: ManifestMessaging, env: &impl Environment) -> anyhow::Result<MessagingConfig> {
    let Some(url) = env.var("AMQP_URL").or(raw.url) else {
        bail!("messaging.url: missing; set it in the manifest or in AMQP_URL");
    };
    let url = AmqpUrl::parse(&url).context("messaging.url (or AMQP_URL)")?;
    check_topic(&raw.exchange).context("messaging.exchange")?;
    check_positive("messaging.prefetch", u64::from(raw.prefetch))?;
    check_positive("messaging.relay_interval_ms", raw.relay_interval_ms)?;
    check_positive("messaging.retention_hours", raw.retention_hours)?;
    for (topic, publisher) in &raw.publishers {
        check_topic(topic).with_context(|| format!("messaging.publishers: {topic:?}"))?;
        super::check_name(publisher).with_context(|| format!("messaging.publishers.{topic:?}"))?;
    }
    if raw.retry_delays_ms.contains(&0) {
        bail!("messaging.retry_delays_ms: every delay must be greater than 0");
    }
    Ok(MessagingConfig {
        url,
        exchange: raw.exchange,
        prefetch: raw.prefetch,
        retry_delays: raw.retry_delays_ms.into_iter().map(Duration::from_millis).collect(),
        relay_interval: Duration::from_millis(raw.relay_interval_ms),
        retention: Duration::from_secs(raw.retention_hours * 3600),
        publishers: raw.publishers,
    })
}

pub(super) fn default_messaging() -> ManifestMessaging {
    ManifestMessaging {
        url: None,
        exchange: default_exchange(),
        prefetch: default_prefetch(),
        retry_delays_ms: default_retry_delays_ms(),
        relay_interval_ms: default_relay_interval_ms(),
        retention_hours: default_retention_hours(),
        publishers: BTreeMap::new(),
    }
}


fn default_exchange() -> String {
    "platform.events".into()
}
fn default_prefetch() -> u16 {
    16
}
fn default_retry_delays_ms() -> Vec<u64> {
    vec![1_000, 5_000, 30_000]
}
fn default_relay_interval_ms() -> u64 {
    1_000
}
fn default_retention_hours() -> u64 {
    7 * 24
}

/// Completes `messaging.publishers` from the components' `publishes`, so that every subscribed
/// topic has exactly one known publisher.
pub(super) fn resolve_publishers(
    messaging: &mut MessagingConfig,
    components: &[super::ComponentConfig],
) -> anyhow::Result<()> {
    for component in components {
        for topic in &component.publishes {
            match messaging.publishers.get(topic) {
                Some(other) if *other != component.name => bail!(
                    "messaging.publishers: {topic:?} is published by `{}` here, not `{other}`; a topic \
                     has one publisher",
                    component.name
                ),
                _ => {
                    messaging.publishers.insert(topic.clone(), component.name.clone());
                }
            }
        }
    }
    for component in components {
        for topic in &component.subscriptions {
            if !messaging.publishers.contains_key(topic) {
                bail!(
                    "component `{}` subscribes to {topic:?}, which no component here publishes; name \
                     its publisher in [messaging] publishers = {{ \"{topic}\" = \"<component>\" }}",
                    component.name
                );
            }
        }
    }
    Ok(())
}
