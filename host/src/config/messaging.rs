//! The `[messaging]` section: the broker every component of the host shares, and topic names.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use super::{AmqpUrl, Environment, check_positive};

/// RabbitMQ: the settings every component of the host shares. Each component logs in as a user
/// of its own (its `amqp_url`, see [`resolve_broker_logins`]).
#[derive(Debug, Clone)]
pub struct MessagingConfig {
    /// The broker URL of components that give none of their own (`AMQP_URL`, `messaging.url`).
    pub url: Option<AmqpUrl>,
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
    /// Messages a subscription's dead-letter queue holds at most; past that, RabbitMQ refuses
    /// new ones and a poison message stays in its queue, tried again every second.
    pub dead_letter_max: u32,
    /// Whether a delivered event with no AMQP `user_id` is taken as its publisher's: only while
    /// events queued by hosts that did not stamp users are drained after an upgrade.
    pub accept_events_without_user: bool,
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
    #[serde(default = "default_dead_letter_max")]
    dead_letter_max: u32,
    #[serde(default)]
    accept_events_without_user: bool,
    /// Topic → the component that publishes it, for topics no component of this host publishes.
    #[serde(default)]
    publishers: BTreeMap<String, String>,
}

/// Topics are dot-separated words (`orders.created`), so they work as AMQP routing keys.
pub fn check_topic(topic: &str) -> anyhow::Result<()> {
    let word_ok = |word: &str| {
        !word.is_empty()
            && word
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if topic.len() > 200 || !topic.split('.').all(word_ok) {
        bail!(
            "must be dot-separated words of letters, digits, '-' or '_', such as \"orders.created\""
        );
    }
    Ok(())
}

pub(super) fn check_messaging(
    raw: ManifestMessaging,
    env: &impl Environment,
) -> anyhow::Result<MessagingConfig> {
    let url = match env.var("AMQP_URL").or(raw.url) {
        Some(url) => Some(AmqpUrl::parse(&url).context("messaging.url (or AMQP_URL)")?),
        None => None,
    };
    check_topic(&raw.exchange).context("messaging.exchange")?;
    check_positive("messaging.prefetch", u64::from(raw.prefetch))?;
    check_positive("messaging.relay_interval_ms", raw.relay_interval_ms)?;
    check_positive("messaging.retention_hours", raw.retention_hours)?;
    check_positive("messaging.dead_letter_max", u64::from(raw.dead_letter_max))?;
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
        retry_delays: raw
            .retry_delays_ms
            .into_iter()
            .map(Duration::from_millis)
            .collect(),
        relay_interval: Duration::from_millis(raw.relay_interval_ms),
        retention: Duration::from_secs(raw.retention_hours * 3600),
        dead_letter_max: raw.dead_letter_max,
        accept_events_without_user: raw.accept_events_without_user,
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
        dead_letter_max: default_dead_letter_max(),
        accept_events_without_user: false,
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
fn default_dead_letter_max() -> u32 {
    10_000
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
                    "messaging.publishers: {topic:?} is published by `{}` here, not `{other}`; a \
                     topic has one publisher",
                    component.name
                ),
                _ => {
                    messaging
                        .publishers
                        .insert(topic.clone(), component.name.clone());
                }
            }
        }
    }
    for component in components {
        for topic in &component.subscriptions {
            if !messaging.publishers.contains_key(topic) {
                bail!(
                    "component `{}` subscribes to {topic:?}, which no component here publishes; \
                     name its publisher in [messaging] publishers = \
                     {{ \"{topic}\" = \"<component>\" }}",
                    component.name
                );
            }
        }
    }
    Ok(())
}

/// Gives each component that publishes or subscribes its broker login: `<NAME>_AMQP_URL`, else its
/// own `amqp_url`, else the host's (`AMQP_URL`, `messaging.url`). The login's user must be named
/// after the component: the relay stamps it on every event (AMQP `user_id`, which RabbitMQ checks
/// against the login) and consumers accept an event only from its topic's publisher's user.
pub(super) fn resolve_broker_logins(
    messaging: &MessagingConfig,
    components: &mut [super::ComponentConfig],
) -> anyhow::Result<()> {
    for component in components
        .iter_mut()
        .filter(|component| component.uses_messaging())
    {
        let variable = format!(
            "{}_AMQP_URL",
            component.name.to_ascii_uppercase().replace('-', "_")
        );
        let url = match component.amqp_url.take() {
            Some(own) => own,
            None => match &messaging.url {
                Some(url) => url.clone(),
                None => bail!(
                    "component `{}` publishes or subscribes but has no broker URL: set {variable} \
                     (or its amqp_url), AMQP_URL, or messaging.url",
                    component.name
                ),
            },
        };
        if url.user() != component.name {
            bail!(
                "component `{}` would log in to the broker as `{}`; each component needs a broker \
                 user named after it (its events carry that user, and consumers trust no other): \
                 create user `{}` (see the README's Messaging section) and put it in {variable}",
                component.name,
                url.user(),
                component.name
            );
        }
        component.amqp_url = Some(url);
    }
    Ok(())
}
